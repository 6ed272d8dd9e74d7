"""lamp-prune --importance wanda --calibration FILE.txt on a tiny transformers Llama (built offline, with a
character-level tokenizer): the output equals prune_masks over Wanda's importance from the same calibration,
and magnitude mode never imports transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lamp_kernels as lk
from lamp_kernels import checkpoint, importance, selection
from lamp_kernels.calibration import input_norms, wanda_importance
from lamp_kernels.cli import main as lamp_prune

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="needs the compiled backend")

TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat by the door. " * 12)
ROOT = Path(__file__).resolve().parent.parent


def _checkpoint(tmp_path: Path) -> Path:
    chars = sorted(set(TEXT))
    vocab = {c: i + 1 for i, c in enumerate(chars)}
    vocab["[UNK]"] = 0
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="60KB")
    fast.save_pretrained(src)
    return src


def test_wanda_checkpoint_equals_prune_masks(tmp_path, monkeypatch):
    """The output equals prune_masks over the materialised Wanda importance, and lamp-prune never makes that
    importance: the kernels compute it as they read each tensor."""
    def refuse(*_):
        raise AssertionError("a full-size importance tensor was made")

    for where in (importance, checkpoint, selection):
        monkeypatch.setattr(where, "scaled_importance", refuse)
    src = _checkpoint(tmp_path)
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    dst, report = tmp_path / "dst", tmp_path / "report.json"
    assert lamp_prune([str(src), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda", "--calibration",
                       str(text), "--calibration-tokens", "300", "--calibration-window", "64", "--quiet",
                       "--report", str(report)]) == 0
    monkeypatch.undo()
    model = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"][:256]).view(4, 1, 64)
    order = list(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"])
    names = [n for n in order if "layers" in n and n.endswith("proj.weight")]
    modules = {n[:-7]: model.get_submodule(n[:-7]) for n in names}
    norms = input_norms(model, [{"input_ids": x, "use_cache": False} for x in ids], modules, progress=False)
    weights = {n: model.get_submodule(n[:-7]).weight.detach().clone() for n in names}
    imp = {n: wanda_importance(weights[n], norms[n[:-7]]) for n in names}
    want = lk.prune_masks(weights, 0.5, "lamp", importance=imp)
    pruned = transformers.AutoModelForCausalLM.from_pretrained(dst).eval()
    for n in names:
        got = pruned.get_submodule(n[:-7]).weight.detach()
        assert torch.equal(got != 0, want[n] & (weights[n] != 0)), n
        assert torch.equal(got[want[n]], weights[n][want[n]])
    r = json.loads(report.read_text())
    assert r["importance"] == "wanda" and r["pruned"] == sum(int((~m).sum()) for m in want.values())
    assert torch.equal(pruned.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_wanda_errors(tmp_path, capsys):
    src = _checkpoint(tmp_path)
    dst = tmp_path / "dst"
    assert lamp_prune([str(src), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda"]) == 2
    assert "needs --calibration" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("short")
    assert lamp_prune([str(src), "--sparsity", "0.5", "--out", str(dst), "--calibration", str(text)]) == 2
    assert "--calibration is used with --importance wanda" in capsys.readouterr().err
    assert lamp_prune([str(src), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda", "--calibration",
                       str(text)]) == 2
    assert "fewer than one calibration window" in capsys.readouterr().err
    assert lamp_prune([str(src), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda", "--calibration",
                       str(text), "--include", "embed_tokens", "--calibration-window", "2"]) == 2
    assert "not the weight of a Linear module" in capsys.readouterr().err
    shard = next(src.glob("*.safetensors"))
    assert lamp_prune([str(shard), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda", "--calibration",
                       str(text)]) == 2
    assert "needs a transformers checkpoint directory" in capsys.readouterr().err
    assert not dst.exists()


def test_magnitude_mode_never_imports_transformers(tmp_path):
    src = _checkpoint(tmp_path)
    code = ("import sys; from lamp_kernels.cli import main; "
            f"rc = main([{str(src)!r}, '--sparsity', '0.5', '--dry-run', '--quiet']); "
            "print(rc, 'transformers' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"]


@pytest.mark.parametrize("problem", ["existing output", "bad regex"])
def test_wanda_refuses_bad_arguments_before_calibrating(tmp_path, monkeypatch, capsys, problem):
    """Arguments and the destination are checked before the (long) calibration run starts."""
    from lamp_kernels import checkpoint_calibration

    def must_not_run(*args, **kwargs):
        raise AssertionError("calibration ran before the arguments were checked")

    monkeypatch.setattr(checkpoint_calibration, "wanda_norms", must_not_run)
    src = tmp_path / "src"
    src.mkdir()  # never opened: the checks come first
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    dst = tmp_path / "dst"
    dst.mkdir()
    args = [str(src), "--sparsity", "0.5", "--out", str(dst), "--importance", "wanda", "--calibration", str(text),
            "--quiet"]
    if problem == "bad regex":
        args += ["--include", "(unclosed", "--force"]
    assert lamp_prune(args) == 2
    err = capsys.readouterr().err
    assert ("exists; pass --force" if problem == "existing output" else "invalid regular expression") in err


def test_importance_does_not_run_distributed(tmp_path):
    """PruneJob (the API under lamp-prune) refuses an importance with a process group before reading anything:
    its distributed layer table carries the tensors' dtypes, not the importance's."""
    job = checkpoint.PruneJob(tmp_path / "missing", None, 0.5, dry_run=True, importance=lambda n, t: t, group=object())
    with pytest.raises(checkpoint.CheckpointError, match="single process"):
        job.check()
