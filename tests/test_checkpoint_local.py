"""lamp-prune's layer-local selections (checkpoint_local.py): the per-row rule, row balance, N:M and OWL stream a
checkpoint one tensor at a time and prune exactly what prune_masks prunes on the model held in memory."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_checkpoint import make_checkpoint, selected_in_order, tree_digest

import lamp_kernels as lk
from lamp_kernels import allocation
from lamp_kernels.checkpoint import PruneJob, prune_checkpoint
from lamp_kernels.cli import main
from lamp_kernels.layers import pruned_count

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="needs the compiled backend")

CASES = [  # (method, sparsity, flags, prune_masks keywords)
    ("uniform", 0.5, ["--granularity", "row"], {"granularity": "row"}),
    ("erk", 0.6, ["--granularity", "row"], {"granularity": "row"}),
    ("uniform_plus", 0.6, ["--granularity", "row"], {"granularity": "row"}),
    ("uniform", 0.5, ["--granularity", "row", "--row-balance", "0.5"], {"granularity": "row", "row_balance": 0.5}),
    ("erk", 0.6, ["--granularity", "row", "--row-balance", "0"], {"granularity": "row", "row_balance": 0.0}),
    ("uniform", 0.6, ["--nm", "2:4"], {"nm": (2, 4)}),
    ("uniform", 0.3, ["--nm", "2:4"], {"nm": (2, 4)}),
    ("erk", 0.7, ["--nm", "1:4"], {"nm": (1, 4)}),
    ("erk", 0.6, ["--granularity", "row", "--nm", "2:4"], {"granularity": "row", "nm": (2, 4)}),
    ("owl", 0.6, [], {}),
    ("owl", 0.6, ["--granularity", "row", "--owl-m", "2", "--owl-lambda", "0.2"],
     {"granularity": "row", "owl_m": 2.0, "owl_lambda": 0.2}),
    ("owl", 0.7, ["--granularity", "row", "--nm", "2:4", "--row-balance", "0.8", "--owl-m", "1.5"],
     {"granularity": "row", "nm": (2, 4), "row_balance": 0.8, "owl_m": 1.5}),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("local") / "src")


def _pruned_tensors(root):
    return {k: v for shard in root.glob("*.safetensors") for k, v in load_file(str(shard)).items()}


@pytest.mark.parametrize("method, sparsity, flags, kwargs", CASES)
def test_prunes_like_prune_masks(ckpt, tmp_path, method, sparsity, flags, kwargs):
    before = tree_digest(ckpt)
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    rc = main([str(ckpt), "--sparsity", str(sparsity), "--out", str(out), "--method", method, "--report",
               str(report_path), "--quiet", *flags])
    assert rc == 0
    assert tree_digest(ckpt) == before
    weights = selected_in_order(ckpt)
    masks = lk.prune_masks(weights, sparsity, method, **kwargs)
    pruned = _pruned_tensors(out)
    for name, w in weights.items():
        assert torch.equal(pruned[name], w * masks[name]), name
    others = load_file(str(ckpt / "model-00001-of-00003.safetensors"))
    assert torch.equal(pruned["model.embed_tokens.weight"], others["model.embed_tokens.weight"])
    report = json.loads(report_path.read_text())
    assert [x["pruned"] for x in report["layers"]] == [int((~masks[n]).sum()) for n in weights]
    assert report["granularity"] == kwargs.get("granularity", "layer") and report["threshold"] is None
    assert report["nm"] == (list(kwargs["nm"]) if "nm" in kwargs else None)
    assert report["row_balance"] == kwargs.get("row_balance", 1.0)
    assert (report["owl"] is None) == (method != "owl")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert f"method={method}" in index["metadata"]["pruned_by"]
    # the dry run counts the same without writing
    assert main([str(ckpt), "--sparsity", str(sparsity), "--dry-run", "--method", method, "--report",
                 str(tmp_path / "d.json"), "--quiet", *flags]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["layers"] == report["layers"]


def test_options_change_the_masks(ckpt, tmp_path):
    """The cases above are not all one selection: each option moves the masks it is meant to move."""
    weights = selected_in_order(ckpt)
    outs = {}
    for key, flags in {"uniform": [], "row": ["--granularity", "row"],
                       "balanced": ["--granularity", "row", "--row-balance", "0.3"],
                       "nm": ["--nm", "2:4"], "owl": ["--method", "owl", "--owl-m", "1.5"]}.items():
        out = tmp_path / key
        method = [] if "--method" in flags else ["--method", "uniform"]
        assert main([str(ckpt), "--sparsity", "0.6", "--out", str(out), "--quiet", *method, *flags]) == 0
        outs[key] = _pruned_tensors(out)
    for a in outs:
        for b in outs:
            if a < b:
                assert any(not torch.equal(outs[a][n], outs[b][n]) for n in weights), (a, b)
    mlp = outs["row"]["model.layers.1.mlp.weight"]  # every row of the row rule prunes round(0.6 * 16)
    assert ((mlp == 0).sum(1) == pruned_count(0.6, 16)).all()


def test_column_scaled_importance_like_prune_masks(ckpt, tmp_path):
    """Wanda's rule (--importance wanda without the calibration run): ColumnScaled importances per tensor."""
    weights = selected_in_order(ckpt)
    g = torch.Generator().manual_seed(3)
    norms = {n: torch.rand(w.shape[-1], generator=g) * 4 for n, w in weights.items()}
    for method, kwargs in (("uniform", {"granularity": "row"}), ("owl", {"granularity": "row", "nm": (2, 4)}),
                           ("erk", {"granularity": "row", "row_balance": 0.7})):
        out = tmp_path / method
        job = PruneJob(ckpt, out, 0.6, method, progress=False, **kwargs)
        job.importance = lambda name, t: lk.ColumnScaled(norms[name])
        job.importance_name = "wanda"
        prune_checkpoint(job)
        masks = lk.prune_masks(weights, 0.6, method, importance={n: lk.ColumnScaled(s) for n, s in norms.items()},
                               **kwargs)
        plain = lk.prune_masks(weights, 0.6, method, **kwargs)
        pruned = _pruned_tensors(out)
        assert any(not torch.equal(masks[n], plain[n]) for n in weights)  # the importance matters here
        for name, w in weights.items():
            assert torch.equal(pruned[name], w * masks[name]), (method, name)


def test_layer_counts_round_trip_through_ratios():
    """At layer granularity a tensor's sparsity is its count over its size: it must round back to the count."""
    g = torch.Generator().manual_seed(5)
    for _ in range(300):
        shapes = [tuple(int(x) for x in torch.randint(1, 3000, (2,), generator=g)) for _ in range(6)]
        sparsity = float(torch.rand((), generator=g))
        for method in ("uniform", "uniform_plus", "erk"):
            try:
                counts = allocation.layer_counts(method, shapes, sparsity)
            except ValueError:
                continue
            for c, s in zip(counts, shapes):
                assert pruned_count(c / math.prod(s), math.prod(s)) == c


@pytest.mark.parametrize("flags, needle", [
    (["--granularity", "row"], "--granularity row with --method lamp"),
    (["--nm", "2:4"], "--nm with --method lamp"),
    (["--method", "global", "--nm", "2:4"], "--nm with --method global"),
    (["--method", "uniform", "--row-balance", "0.5"], "at --granularity row; got method 'uniform', --granularity "
                                                      "'layer'"),
    (["--method", "uniform", "--granularity", "row", "--row-balance", "1.5"], "--row-balance must be in [0, 1]"),
    (["--method", "lamp", "--owl-m", "3"], "are parameters of --method owl"),
    (["--method", "owl", "--owl-lambda", "-1"], "--owl-lambda must be a finite number"),
    (["--method", "uniform", "--nm", "5:4"], "needs 0 <= N <= M"),
    (["--method", "uniform", "--nm", "2:3"], "do not split into groups of 3"),
    (["--method", "erk", "--min-density", "0.1"], "--min-density/--max-density constrain the global"),
])
def test_bad_options_fail_before_writing(ckpt, tmp_path, capsys, flags, needle):
    bad = tmp_path / "bad"
    rc = main([str(ckpt), "--sparsity", "0.6", "--out", str(bad), "--quiet", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and not bad.exists() and needle in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob(".*lamp-prune*"))


@pytest.mark.parametrize("text", ["2/4", "2:", "\u00b2:4", "a:b"])
def test_nm_flag_format(ckpt, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as exc:
        main([str(ckpt), "--sparsity", "0.6", "--out", str(tmp_path / "x"), "--nm", text])
    assert exc.value.code == 2 and "expected N:M" in capsys.readouterr().err


def test_a_mask_that_disagrees_with_pass_1_stops_the_run(ckpt, tmp_path, monkeypatch, capsys):
    """Pass 2 recomputes each mask; one that prunes another count than pass 1 reported (a file changed during
    the run, say) stops the run with nothing written, instead of a wrong report."""
    from lamp_kernels import checkpoint_local

    real = checkpoint_local.keep_mask

    def one_more_pruned(*args):
        keep = real(*args)
        keep.view(-1)[keep.view(-1).nonzero()[0]] = False
        return keep

    monkeypatch.setattr(checkpoint_local, "keep_mask", one_more_pruned)
    out = tmp_path / "out"
    rc = main([str(ckpt), "--sparsity", "0.5", "--out", str(out), "--quiet", "--method", "uniform", "--granularity",
               "row"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and "pass 1 counted" in err, err
    assert not list(tmp_path.glob(".*lamp-prune*"))


def test_non_finite_weight_fails_before_anything_is_in_place(tmp_path, capsys):
    root = make_checkpoint(tmp_path / "src")
    name = "model-00003-of-00003.safetensors"
    tensors = load_file(str(root / name))
    tensors["model.layers.2.mlp.weight"][3, 4] = float("nan")
    from safetensors.torch import save_file

    save_file(tensors, str(root / name), metadata={"format": "pt"})
    out = tmp_path / "out"
    rc = main([str(root), "--sparsity", "0.5", "--out", str(out), "--quiet", "--method", "uniform",
               "--granularity", "row"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and name in err and "NaN" in err, err


def test_torchrun_two_ranks_byte_identical(ckpt, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = ["--sparsity", "0.6", "--method", "erk", "--granularity", "row", "--nm", "2:4", "--row-balance", "0.6",
             "--quiet"]
    assert main([str(ckpt), "--out", str(tmp_path / "one"), *flags]) == 0
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lamp_kernels", str(ckpt), "--out", str(tmp_path / "two"), *flags],
                         env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lamp_kernels", str(ckpt), "--out", str(tmp_path / "owl"), "--sparsity", "0.6",
                          "--method", "owl", "--quiet"], env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode != 0 and "--method owl runs in a single process" in run.stderr
    assert not (tmp_path / "owl").exists()
