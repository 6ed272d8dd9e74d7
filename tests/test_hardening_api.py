"""The Python API under adversarial use: tied weights in prune_, embeddings and output heads left out by
default, ERK with empty layers, meta tensors, and sparsity given as NumPy or torch scalars."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import lamp_kernels as lk
from lamp_kernels import allocation

BACKENDS = [b for b in lk.available_backends() if b in ("reference", "cpu")]


def _effective(module: nn.Module) -> torch.Tensor:
    """The weight a module's forward uses (through torch's pruning reparametrisation if any)."""
    return module.weight.detach()


class TwoTied(nn.Module):
    """Two Linear layers sharing one Parameter, plus an untied one."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 12)
        self.b = nn.Linear(12, 12)
        self.b.weight = self.a.weight
        self.c = nn.Linear(12, 6)


class TinyGPT(nn.Module):
    """GPT-2 style: token embedding `wte`, one block, output head tied to the embedding."""

    def __init__(self, vocab=40, dim=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.block = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.block(self.wte(ids))))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---- tied weights: one layer, counted once, pruned consistently --------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reparametrize", [True, False])
@pytest.mark.parametrize("sparsity", [0.01, 0.5, 0.9])
def test_a_shared_parameter_is_one_layer(reparametrize, sparsity, backend):
    torch.manual_seed(0)
    model = TwoTied()
    unique = 144 + 72
    report = lk.prune_(model, sparsity, reparametrize=reparametrize, backend=backend)
    assert report.numel == unique and report.pruned == round(sparsity * unique)
    assert [r.name for r in report.layers] == ["a.weight", "c.weight"] and report.layers[0].shared_with == ("b.weight",)
    assert torch.equal(_effective(model.a), _effective(model.b))
    zeros = int((_effective(model.a) == 0).sum()) + int((_effective(model.c) == 0).sum())
    assert zeros == report.pruned


def test_tied_layers_stay_consistent_over_iterative_pruning():
    torch.manual_seed(1)
    model = TwoTied()
    previous = None
    for s in (0.1, 0.3, 0.77):  # 0.1: an odd count on the two copies split them before the fix
        lk.prune_(model, s)
        assert torch.equal(model.a.weight_mask, model.b.weight_mask)
        if previous is not None:
            assert bool((model.a.weight_mask <= previous).all())
        previous = model.a.weight_mask.clone()
    prune.remove(model.a, "weight")
    prune.remove(model.b, "weight")
    assert model.a.weight is model.b.weight


def test_parameters_over_one_storage_are_one_layer():
    torch.manual_seed(2)
    model = TwoTied()
    model.b.weight = nn.Parameter(model.a.weight.detach())  # a second Parameter over the same memory
    report = lk.prune_(model, 0.5, reparametrize=False)
    assert report.numel == 216 and torch.equal(model.a.weight, model.b.weight)


@pytest.mark.parametrize("reparametrize", [True, False])
def test_head_tied_to_an_embedding_is_never_pruned_alone(reparametrize):
    torch.manual_seed(3)
    model = TinyGPT()
    ids = torch.tensor([[1, 5, 7]])
    report = lk.prune_(model, 0.5, reparametrize=reparametrize)  # default: embeddings and heads left out
    assert [r.name for r in report.layers] == ["block.weight"]
    assert torch.equal(_effective(model.lm_head), model.wte.weight) and int((model.wte.weight == 0).sum()) == 0
    for include in ("lm_head", ["lm_head", "block"]):
        before = _state(model)
        with pytest.raises(ValueError, match="lm_head.weight shares its tensor with wte.weight"):
            lk.prune_(model, 0.5, include=include, reparametrize=reparametrize)
        after = _state(model)
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
        assert not hasattr(model.lm_head, "weight_mask") and not hasattr(model.wte, "weight_orig")
    model(ids)


@pytest.mark.parametrize("reparametrize", [True, False])
def test_head_and_embedding_included_together_are_pruned_as_one(reparametrize):
    torch.manual_seed(4)
    model = TinyGPT()
    report = lk.prune_(model, 0.6, include=["wte", "lm_head"], reparametrize=reparametrize)
    assert [r.name for r in report.layers] == ["wte.weight"] and report.layers[0].shared_with == ("lm_head.weight",)
    assert torch.equal(_effective(model.lm_head), _effective(model.wte))
    assert int((_effective(model.wte) == 0).sum()) == round(0.6 * 320)
    model(torch.tensor([[0, 1, 2]]))


def test_default_selection_skips_embeddings_and_heads_and_include_overrides():
    torch.manual_seed(5)
    model = nn.ModuleDict({"embed_proj": nn.Linear(4, 4), "body": nn.Linear(4, 4), "lm_head": nn.Linear(4, 9)})
    assert [r.name for r in lk.prune_(model, 0.5).layers] == ["body.weight"]
    assert not hasattr(model["lm_head"], "weight_mask")
    assert [r.name for r in lk.prune_(model, 0.5, include="lm_head").layers] == ["lm_head.weight"]


# ---- tied weights on Hugging Face models (tiny random Llama, built offline) --------------------------------

def _llama(tied: bool):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    torch.manual_seed(6)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("reparametrize", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_llama_default_prunes_the_blocks_only(tied, reparametrize):
    model = _llama(tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    head, embed = model.lm_head.weight.detach().clone(), model.model.embed_tokens.weight.detach().clone()
    report = lk.prune_(model, 0.5, reparametrize=reparametrize)
    assert len(report.layers) == 14 and all(".layers." in r.name for r in report.layers)  # 7 Linear per block
    assert torch.equal(_effective(model.lm_head), head) and torch.equal(model.model.embed_tokens.weight, embed)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.parametrize("reparametrize", [True, False])
def test_llama_tied_head_is_never_pruned_while_the_embedding_stays_dense(reparametrize):
    model = _llama(tied=True)
    before = _state(model)
    with pytest.raises(ValueError, match="lm_head.weight shares its tensor with model.embed_tokens.weight"):
        lk.prune_(model, 0.5, include=r"lm_head|q_proj", reparametrize=reparametrize)
    after = _state(model)
    assert all(torch.equal(after[k], before[k]) for k in before) and not hasattr(model.lm_head, "weight_mask")
    report = lk.prune_(model, 0.5, include=r"lm_head|embed_tokens", reparametrize=reparametrize)
    assert [r.name for r in report.layers] == ["model.embed_tokens.weight"]
    assert report.layers[0].shared_with == ("lm_head.weight",)
    assert torch.equal(_effective(model.lm_head), _effective(model.model.embed_tokens))
    assert int((_effective(model.lm_head) == 0).sum()) == report.pruned == round(0.5 * 64 * 16)


def test_llama_untied_head_can_be_included():
    model = _llama(tied=False)
    embed = model.model.embed_tokens.weight.detach().clone()
    report = lk.prune_(model, 0.5, include="lm_head")
    assert [r.name for r in report.layers] == ["lm_head.weight"]
    assert int((_effective(model.lm_head) == 0).sum()) == 512 and torch.equal(model.model.embed_tokens.weight, embed)


# ---- ERK with empty layers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_erk_gives_empty_layers_no_budget(backend):
    layers = [torch.empty(0, 100), torch.randn(10, 10)]
    assert lk.layer_sparsities(layers, 0.5, "erk", backend=backend) == [0.0, 0.5]
    masks = lk.prune_masks(layers + [torch.empty(3, 0), torch.randn(20, 5)], 0.7, "erk", backend=backend)
    assert sum(int((~m).sum()) for m in masks) == round(0.7 * 200)


def test_erk_counts_never_negative_and_sum_to_the_target():
    shapes = [(0, 100), (5, 0, 3, 3), (10, 10), (40, 20), (0,)]
    for s in (0.1, 0.5, 0.9, 1.0):
        counts = allocation.erk_counts(shapes, s)
        sizes = [int(np.prod(x)) for x in shapes]
        assert all(0 <= c <= n for c, n in zip(counts, sizes)) and counts[0] == counts[1] == counts[4] == 0
        assert abs(sum(counts) - round(s * sum(sizes))) <= 2
    assert allocation.erk_counts([(0, 4)], 0.5) == [0]


# ---- meta tensors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_meta_tensors_get_a_clear_error(backend):
    layers = [torch.randn(4, 4), torch.empty(8, 8, device="meta")]
    for call in (lambda: lk.prune_masks(layers, 0.5, backend=backend),
                 lambda: lk.layer_sparsities(layers, 0.5, backend=backend),
                 lambda: lk.lamp_scores(layers, backend=backend)):
        with pytest.raises(ValueError, match="layer 1 is a meta tensor"):
            call()
    masks = [torch.ones(4, 4, dtype=torch.bool), torch.ones(8, 8, dtype=torch.bool, device="meta")]
    with pytest.raises(ValueError, match="meta"):
        lk.prune_masks([torch.randn(4, 4), torch.randn(8, 8)], 0.5, masks=masks, backend=backend)


def test_meta_model_gets_a_clear_error():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="0.weight is a meta tensor"):
        lk.prune_(model, 0.5)


# ---- sparsity as a NumPy or torch scalar -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparsity", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor([0.5]),
                                      torch.tensor(0.5, dtype=torch.float64)], ids=repr)
def test_real_scalars_are_accepted(backend, sparsity):
    layers = [torch.randn(10, 10), torch.randn(7)]
    want = lk.prune_masks(layers, 0.5, backend=backend)
    got = lk.prune_masks(layers, sparsity, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert lk.layer_sparsities(layers, sparsity, "uniform", backend=backend) == \
        lk.layer_sparsities(layers, 0.5, "uniform", backend=backend)


@pytest.mark.parametrize("sparsity", [np.bool_(True), torch.tensor(True), torch.tensor([0.5, 0.5]),
                                      torch.tensor(0.5 + 0j), np.array([0.5]), "0.5"], ids=repr)
def test_other_sparsity_types_say_what_is_accepted(sparsity):
    with pytest.raises(ValueError, match="real number in \\[0, 1\\] \\(a Python, NumPy or one-element torch"):
        lk.prune_masks([torch.randn(10)], sparsity)


def test_flush_to_zero_on_the_calling_thread_changes_nothing():
    """The compiled kernels compute with subnormals kept (float_mode.h), whatever the caller's thread set: with
    torch.set_flush_denormal(True) after the pool's helpers started, the masks and scores are those of the
    default mode (before the mode was pinned, row balance read out of range and crashed, and the streamed row
    selection and global magnitude's ties depended on which thread computed a key). In a child process: the
    setting is per thread and would outlive the test."""
    code = """
import torch
import lamp_kernels as lk
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
def layers():
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        w = torch.randn(384, 1024, generator=g).to(dtype)
        w.view(-1)[::3] = torch.tensor(3e-39).to(dtype)
        w.view(-1)[1::3] = torch.tensor(5e-39).to(dtype)
        out[name] = w
    return out
ws = layers()
scale = {n: lk.ColumnScaled(torch.rand(1024, generator=g) * 1e-5) for n in ws}
calls = {
    "balanced": lambda: lk.prune_masks(ws, 0.5, "uniform", granularity="row", row_balance=0.8, importance=scale),
    "lamp rows": lambda: lk.prune_masks(ws, 0.5, "lamp", granularity="row"),
    "global": lambda: lk.prune_masks(ws, 0.5, "global"),
    "lamp scaled": lambda: lk.prune_masks(ws, 0.5, "lamp", importance=scale),
    "owl 2:4": lambda: lk.prune_masks(ws, 0.6, "owl", granularity="row", nm=(2, 4), importance=scale),
    "scores": lambda: lk.lamp_scores(ws, dtype=torch.float64),
}
if "cpu" not in lk.available_backends():
    print("ok")
    raise SystemExit
before = {k: f() for k, f in calls.items()}
torch.set_flush_denormal(True)
for _ in range(3):
    for k, f in calls.items():
        after = f()
        assert all(torch.equal(after[n], before[k][n]) for n in ws), k
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-3000:])
