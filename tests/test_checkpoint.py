"""lamp-prune: streaming pruning of safetensors checkpoints, its safety rules, and torchrun."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lamp_kernels as lk
from lamp_kernels.cli import main
from lamp_kernels.safetensors_io import Checkpoint

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="needs the compiled backend")


def make_checkpoint(root: Path) -> Path:
    """Three shards: bf16/fp16/fp32 weights, embeddings, lm_head, 1-D norms, an int buffer, extra files."""
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor([0.0, 0.5, -0.5, 1.0, 0.25])
    shards = {
        "model-00001-of-00003.safetensors": {
            "model.embed_tokens.weight": torch.randn(50, 16, generator=g).bfloat16(),
            "model.layers.0.q_proj.weight": torch.randn(16, 16, generator=g).bfloat16(),
            "model.layers.0.mlp.weight": vals[torch.randint(0, 5, (64, 16), generator=g)].bfloat16(),
            "model.layers.0.norm.weight": torch.ones(16).bfloat16(),
        },
        "model-00002-of-00003.safetensors": {
            "model.layers.1.q_proj.weight": torch.randn(16, 16, generator=g).half(),
            "model.layers.1.mlp.weight": torch.randn(300, 16, generator=g),
            "model.layers.1.position_ids": torch.arange(32),
        },
        "model-00003-of-00003.safetensors": {
            "model.layers.2.mlp.weight": torch.randn(64, 16, generator=g).bfloat16(),
            "lm_head.weight": torch.randn(50, 16, generator=g).bfloat16(),
        },
    }
    root.mkdir()
    weight_map = {}
    for fname, tensors in shards.items():
        save_file(tensors, str(root / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
    total = sum(t.numel() * t.element_size() for s in shards.values() for t in s.values())
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text('{"model_type": "toy"}')
    (root / "extra").mkdir()
    (root / "extra" / "notes.txt").write_text("kept as is")
    return root


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def selected_in_order(root: Path) -> dict:
    """The default selection, in checkpoint order (shard by shard, by offset)."""
    out = {}
    for e in Checkpoint.open(root).entries():
        if e.dtype in ("BF16", "F16", "F32") and len(e.shape) >= 2 and "embed" not in e.name \
                and "lm_head" not in e.name:
            out[e.name] = load_file(str(e.file))[e.name]
    return out


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "src")


@pytest.mark.parametrize("method", ["lamp", "global", "erk"])
def test_prunes_like_prune_masks_and_copies_the_rest(ckpt, tmp_path, method):
    before = tree_digest(ckpt)
    out = tmp_path / "out"
    rc = main([str(ckpt), "--sparsity", "0.6", "--out", str(out), "--method", method, "--report",
               str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png"), "--quiet"])
    assert rc == 0
    assert tree_digest(ckpt) == before  # the source is untouched
    weights = selected_in_order(ckpt)
    masks = lk.prune_masks(weights, 0.6, method)
    src, dst = Checkpoint.open(ckpt), Checkpoint.open(out)
    for a, b in zip(src.shards, dst.shards):
        assert a.path.name == b.path.name and a.header == b.header  # same layout, same header bytes
        for ea, eb in zip(a.entries, b.entries):
            ta, tb = load_file(str(a.path))[ea.name], load_file(str(b.path))[eb.name]
            if ea.name in weights:
                assert torch.equal(tb, ta * masks[ea.name]), ea.name
            else:
                with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
                    fa.seek(ea.begin)
                    fb.seek(eb.begin)
                    assert fa.read(ea.nbytes) == fb.read(eb.nbytes), ea.name
    assert (out / "config.json").read_text() == '{"model_type": "toy"}'
    assert (out / "extra" / "notes.txt").read_text() == "kept as is"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    assert method in index["metadata"]["pruned_by"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [x["name"] for x in report["layers"]] == list(weights)
    assert [x["pruned"] for x in report["layers"]] == [int((~masks[n]).sum()) for n in weights]
    if method == "lamp":
        assert report["pruned"] == round(0.6 * report["elements"]) and report["threshold"] > 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*lamp-prune*"))


@pytest.mark.parametrize("method", ["lamp", "global"])
def test_density_bounds_like_prune_masks(ckpt, tmp_path, method, capsys):
    """--min-density/--max-density stream like the plain selection (summaries of one tensor at a time) and prune
    what prune_masks prunes with the same bounds; infeasible or misplaced bounds fail with status 2 and a
    one-line error, nothing written."""
    out = tmp_path / "out"
    rc = main([str(ckpt), "--sparsity", "0.6", "--out", str(out), "--method", method, "--min-density", "0.3",
               "--max-density", "0.5", "--report", str(tmp_path / "r.json"), "--quiet"])
    assert rc == 0
    weights = selected_in_order(ckpt)
    masks = lk.prune_masks(weights, 0.6, method, min_density=0.3, max_density=0.5)
    free = lk.prune_masks(weights, 0.6, method)
    assert any(not torch.equal(masks[n], free[n]) for n in weights)  # the bounds bind here
    pruned = {k: v for shard in out.glob("*.safetensors") for k, v in load_file(str(shard)).items()}
    for name, w in weights.items():
        assert torch.equal(pruned[name], w * masks[name]), name
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["min_density"], report["max_density"]) == (0.3, 0.5)
    assert [x["pruned"] for x in report["layers"]] == [int((~masks[n]).sum()) for n in weights]
    capsys.readouterr()
    for args, message in [(["--min-density", "0.5"], "min_density lets at most"),
                          (["--max-density", "0.3"], "max_density forces at least"),
                          (["--min-density", "0.7", "--max-density", "0.6"], "is larger than"),
                          (["--min-density", "1.5"], "must be in [0, 1]"),
                          (["--method", "erk", "--max-density", "0.5"], "constrain the global selections")]:
        bad = tmp_path / "bad"
        rc = main([str(ckpt), "--sparsity", "0.6", "--out", str(bad), "--quiet", *args])
        err = capsys.readouterr().err
        assert rc == 2 and not bad.exists() and message in err and err.count("\n") == 1, (args, err)


def test_single_file_and_include_exclude(tmp_path):
    g = torch.Generator().manual_seed(1)
    src = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.randn(30, 4, generator=g), "b.bias": torch.randn(30, generator=g),
               "c.weight": torch.randn(20, 4, generator=g)}, str(src))
    out = tmp_path / "pruned.safetensors"
    assert main([str(src), "--sparsity", "0.5", "--out", str(out), "--include", r"\.weight$|\.bias$",
                 "--exclude", "^c", "--quiet"]) == 0
    a, b = load_file(str(src)), load_file(str(out))
    masks = lk.prune_masks({"a.weight": a["a.weight"], "b.bias": a["b.bias"]}, 0.5)
    assert torch.equal(b["a.weight"], a["a.weight"] * masks["a.weight"])
    assert torch.equal(b["b.bias"], a["b.bias"] * masks["b.bias"])
    assert torch.equal(b["c.weight"], a["c.weight"])


def _fails(args, capsys, *needles):
    rc = main([str(a) for a in args] + ["--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lamp-prune: error:"), err
    for n in needles:
        assert n in err[0], err[0]


def test_safety(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails([ckpt, "--sparsity", "0.5", "--out", out], capsys, "exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    assert main([str(ckpt), "--sparsity", "0.5", "--out", str(out), "--force", "--quiet"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    _fails([ckpt, "--sparsity", "0.5", "--out", ckpt / "inner"], capsys, "inside")
    _fails([ckpt, "--sparsity", "1.5", "--out", tmp_path / "x"], capsys, "sparsity")
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "x", "--include", "position_ids"], capsys,
           "position_ids", "I64", "model-00002-of-00003.safetensors")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*lamp-prune*"))


def test_bad_checkpoints(ckpt, tmp_path, capsys):
    nan = tmp_path / "nan"
    nan.mkdir()
    for f in ckpt.iterdir():
        if f.is_file():
            (nan / f.name).write_bytes(f.read_bytes())
    shard = nan / "model-00002-of-00003.safetensors"
    tensors = load_file(str(shard))
    tensors["model.layers.1.mlp.weight"][3, 3] = float("nan")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    _fails([nan, "--sparsity", "0.5", "--out", tmp_path / "o1"], capsys, "model.layers.1.mlp.weight", "NaN",
           "model-00002-of-00003.safetensors")
    missing = tmp_path / "missing"
    missing.mkdir()
    for f in ckpt.iterdir():
        if f.is_file() and not f.name.startswith("model-00003"):
            (missing / f.name).write_bytes(f.read_bytes())
    _fails([missing, "--sparsity", "0.5", "--out", tmp_path / "o2"], capsys, "model-00003-of-00003", "missing")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes((ckpt / "model-00001-of-00003.safetensors").read_bytes()[:-100])
    _fails([corrupt, "--sparsity", "0.5", "--out", tmp_path / "o3.safetensors"], capsys, "corrupt.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _fails([garbage, "--sparsity", "0.5", "--out", tmp_path / "o4.safetensors"], capsys, "corrupt")
    for name in ("o1", "o2", "o3.safetensors", "o4.safetensors"):
        assert not (tmp_path / name).exists()
    assert not list(tmp_path.glob(".*lamp-prune*"))


def test_dry_run_writes_only_the_report(ckpt, tmp_path):
    assert main([str(ckpt), "--sparsity", "0.7", "--dry-run", "--report", str(tmp_path / "r.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["output"] is None and report["pruned"] == round(0.7 * report["elements"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "src"]


def test_python_m_and_torchrun_two_ranks_byte_identical(ckpt, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "lamp_kernels", str(ckpt), "--sparsity", "0.6", "--out", str(one),
                    "--quiet"], check=True, env=env, timeout=300)
    two = tmp_path / "two"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lamp_kernels", str(ckpt), "--sparsity", "0.6",
                          "--out", str(two), "--quiet", "--report", str(tmp_path / "r2.json")],
                         env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert tree_digest(one) == tree_digest(two)
    assert json.loads((tmp_path / "r2.json").read_text())["world_size"] == 2
    # density bounds: the same clamped selection on the summed summaries of both ranks
    bounds = ["--min-density", "0.3", "--max-density", "0.5"]
    rc = main([str(ckpt), "--sparsity", "0.6", "--out", str(tmp_path / "one_b"), "--quiet", *bounds])
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lamp_kernels", str(ckpt), "--sparsity", "0.6", "--out", str(tmp_path / "two_b"),
                          "--quiet", *bounds], env=env, timeout=300, capture_output=True, text=True)
    assert rc == 0 and run.returncode == 0, run.stderr[-3000:]
    assert tree_digest(tmp_path / "one_b") == tree_digest(tmp_path / "two_b") != tree_digest(one)


def test_command_detection(monkeypatch):
    """Only the command (not library users) gets the OpenMP passive-wait setting."""
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "lamp_kernels", "src"])
    assert lk._running_as_command()
    monkeypatch.setattr(sys, "orig_argv", ["python", "train.py"])
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert not lk._running_as_command()
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/lamp-prune", "src"])
    assert lk._running_as_command()
