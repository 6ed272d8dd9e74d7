"""lamp-prune output of a Hugging Face checkpoint loads back with transformers and generates; the zeros survive
save_pretrained round trips; and nothing in the output (config, index, shard headers) would make transformers
or vLLM reject it. A tiny randomly initialised Llama, built offline, with a tied and an untied head."""

import json
import struct
from pathlib import Path

import pytest
import torch

import lamp_kernels as lk
from lamp_kernels.cli import main as lamp_prune

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="needs the compiled backend")

BLOCK_WEIGHT = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_llama(tied: bool):
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tied)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(params=[True, False], ids=["tied-head", "untied-head"])
def pruned(request, tmp_path):
    tied = request.param
    model = tiny_llama(tied)
    src, dst = tmp_path / "src", tmp_path / "dst"
    model.save_pretrained(src, max_shard_size="40KB")  # several shards + model.safetensors.index.json
    assert (src / "model.safetensors.index.json").is_file()
    assert lamp_prune([str(src), "--sparsity", "0.6", "--out", str(dst), "--quiet"]) == 0
    return tied, model, src, dst


def test_loads_back_pruned_exactly_and_generates(pruned):
    tied, dense, src, dst = pruned
    loaded = transformers.AutoModelForCausalLM.from_pretrained(dst).eval()
    before, after = state(dense), state(loaded)
    assert before.keys() == after.keys()
    # Exactly what prune_masks picks over the default selection (the block Linear weights, in checkpoint order).
    weights = {k: v for k, v in before.items() if k.endswith(".weight") and k.split(".")[-2] in BLOCK_WEIGHT}
    order = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    weights = {k: weights[k] for k in order if k in weights}
    masks = lk.prune_masks(weights, 0.6, "lamp")
    for name, w in after.items():
        if name in weights:
            assert torch.equal(w, weights[name] * masks[name]), name
        else:  # embeddings, norms and the head are untouched
            assert torch.equal(w, before[name]), name
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.6 * sum(w.numel() for w in weights.values()))
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    prompt = torch.tensor([[1, 5, 7, 9]])
    with torch.inference_mode():
        out = loaded.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
        logits = loaded(out).logits
    assert out.shape == (1, 9) and torch.equal(out[:, :4], prompt)
    assert torch.isfinite(logits).all()


def test_zeros_survive_save_pretrained(pruned, tmp_path):
    _, _, _, dst = pruned
    first = transformers.AutoModelForCausalLM.from_pretrained(dst)
    again = tmp_path / "again"
    first.save_pretrained(again, max_shard_size="40KB")
    second = transformers.AutoModelForCausalLM.from_pretrained(again)
    a, b = state(first), state(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    zeros = sum(int((v == 0).sum()) for k, v in b.items() if k.split(".")[-2] in BLOCK_WEIGHT)
    assert zeros >= round(0.6 * sum(v.numel() for k, v in b.items() if k.split(".")[-2] in BLOCK_WEIGHT))


def test_output_metadata_is_plain(pruned):
    """transformers and vLLM read config.json (a quantization or sparsity entry there changes or refuses the
    load), the index's weight_map, and each shard header's {"format": "pt"}. The output keeps all three as
    the source has them; the index only gains a free-text `pruned_by` entry under metadata."""
    _, _, src, dst = pruned
    assert (dst / "config.json").read_bytes() == (src / "config.json").read_bytes()
    config = json.loads((dst / "config.json").read_text())
    assert not {k for k in config if "quant" in k or "sparsit" in k}
    src_index = json.loads((src / "model.safetensors.index.json").read_text())
    dst_index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert dst_index["weight_map"] == src_index["weight_map"]
    extra = set(dst_index["metadata"]) - set(src_index["metadata"])
    assert extra <= {"pruned_by"} and all(isinstance(dst_index["metadata"][k], str) for k in extra)
    for shard in sorted(set(dst_index["weight_map"].values())):
        assert header(dst / shard)["__metadata__"] == header(src / shard)["__metadata__"] == {"format": "pt"}
