"""Wanda importance for `lamp-prune --importance wanda --calibration FILE.txt` (transformers checkpoints only).

The model is loaded with ``transformers`` (only in this mode: magnitude pruning never imports it) from the
checkpoint directory, in the checkpoint's dtype, on the chosen device; the text file is tokenized with the
checkpoint's tokenizer (no special tokens), its first ``tokens`` tokens cut into windows of ``window``, and
calibration.input_norms collects ||X_j|| for the Linear module of every selected tensor. The model is then
released: pruning streams the checkpoint as in magnitude mode, ranking each tensor by its importance
|W_ij| * ||X_j|| (float32, lamp_kernels.ColumnScaled): on the CPU the kernels compute it as they read the
tensor, so no importance tensor is made; on --device cuda the float32 importance of the one tensor being
read is made on the GPU.

Memory: during calibration the whole model (as transformers loads it) plus one window's activations and one
float32 vector per Linear; during pruning, as in magnitude mode plus a bool mask of the tensor being written
(and on CUDA its float32 importance).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .calibration import input_norms
from .importance import ColumnScaled
from .safetensors_io import CheckpointError

SUFFIX = ".weight"


def _load(src: Path, device: str):
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise CheckpointError(f"--importance wanda loads the model with transformers, which cannot be imported "
                              f"({exc}); install it with `pip install transformers`") from None
    if not src.is_dir() or not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: --importance wanda needs a transformers checkpoint directory (config.json, "
                              "tokenizer files and the safetensors shards)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype="auto").to(device).eval()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{src}: transformers could not load the model or its tokenizer: {exc}") from None
    return model, tokenizer


def calibration_batches(tokenizer, text_file: Path, tokens: int, window: int) -> list[torch.Tensor]:
    """The first `tokens` tokens of the file in windows of `window` (a trailing partial window is dropped)."""
    try:
        text = text_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{text_file}: cannot read the calibration text ({exc})") from None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    if len(ids) < window:
        raise CheckpointError(f"{text_file}: {len(ids)} tokens, fewer than one calibration window of {window}")
    ids = torch.tensor(ids[: len(ids) // window * window], dtype=torch.long)
    return list(ids.view(-1, window)[:, None, :].unbind(0))


def wanda_norms(src: Path, text_file: Path, names: list[str], *, tokens: int = 8192, window: int = 512,
                device: str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    """tensor name -> ||X_j|| (float32, CPU) of the Linear whose weight it is."""
    model, tokenizer = _load(src, device)
    modules = {}
    for name in names:
        module = None
        if name.endswith(SUFFIX):
            try:
                module = model.get_submodule(name[: -len(SUFFIX)])
            except AttributeError:
                module = None
        if not isinstance(module, torch.nn.Linear):
            raise CheckpointError(f"{name}: not the weight of a Linear module of the model; --importance wanda "
                                  "prunes Linear weights only (leave others out with --exclude)")
        modules[name[: -len(SUFFIX)]] = module
    batches = [b.to(device) for b in calibration_batches(tokenizer, text_file, tokens, window)]
    norms = input_norms(model, [{"input_ids": b, "use_cache": False} for b in batches], modules, progress=progress)
    out = {name: norms[name[: -len(SUFFIX)]].float().cpu() for name in names}
    del model
    return out


def wanda_importance_of(norms: dict[str, torch.Tensor]):
    """The PruneJob.importance callable: Wanda's importance of a tensor read from the checkpoint, as a
    ColumnScaled (the kernels compute |W_ij| * ||X_j|| as they read the tensor)."""
    def importance(name: str, weight: torch.Tensor) -> ColumnScaled:
        if weight.dim() != 2 or norms[name].shape != (weight.shape[1],):
            raise CheckpointError(f"{name}: Wanda importance needs a weight [out, in] and norms [in]; got "
                                  f"{tuple(weight.shape)} and {tuple(norms[name].shape)}")
        return ColumnScaled(norms[name].to(weight.device))

    return importance
