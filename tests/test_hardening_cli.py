"""lamp-prune under adversarial use: concurrent runs, paths that overlap the source, links, malformed headers
and indexes, unusual dtypes, signals, interrupted replaces, bad --report/--plot, permissions."""

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_checkpoint import make_checkpoint, tree_digest

import lamp_kernels as lk
from lamp_kernels.cli import main

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="needs the compiled backend")

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _run(args, capsys) -> tuple[int, list[str]]:
    rc = main([str(a) for a in args] + ["--quiet"])
    return rc, capsys.readouterr().err.strip().splitlines()


def _fails(args, capsys, *needles) -> str:
    """The command exits 2 with exactly one line on stderr (no traceback) containing every needle."""
    rc, err = _run(args, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("lamp-prune: error:"), (rc, err)
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def _temp_dirs(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".lamp-prune-" in p.name)


def _raw_safetensors(path: Path, header, data: bytes = b"") -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _library_refuses(path: Path) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            list(f.keys())
    except Exception:
        return True
    return False


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "src")


# A subprocess that runs the command and stops after its first shard is written until `gate` exists; it touches
# `gate.reached` when it gets there. Optionally (LAMP_TEST_KILL_AFTER_RENAME_OF) it kills itself with SIGKILL
# right after the first rename or replace of that path, and disables renameat2 so the two-rename replace runs.
PAUSED_RUN = r"""
import os, signal, sys, time
from pathlib import Path
import lamp_kernels.checkpoint as checkpoint
gate = Path(sys.argv[1])
original = checkpoint.write_shard
def paused(*args, **kwargs):
    original(*args, **kwargs)
    if not gate.exists():
        Path(str(gate) + ".reached").touch()
        while not gate.exists():
            time.sleep(0.02)
checkpoint.write_shard = paused
victim = os.environ.get("LAMP_TEST_KILL_AFTER_RENAME_OF")
if victim:
    try:
        import lamp_kernels.staging as staging
        staging._renameat2 = lambda *args: False
    except ImportError:
        pass
    def killing(fn):
        def wrapped(a, b, *args, **kwargs):
            fn(a, b, *args, **kwargs)
            if os.path.abspath(a) == victim:
                os.kill(os.getpid(), signal.SIGKILL)
        return wrapped
    os.rename, os.replace = killing(os.rename), killing(os.replace)
from lamp_kernels.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _start_paused(gate: Path, args, env=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(gate)] + [str(a) for a in args] + ["--quiet"],
                            env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = Path(str(gate) + ".reached")
    deadline = time.monotonic() + 120
    while not reached.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before pausing: {proc.communicate()}")
        assert time.monotonic() < deadline, "run did not reach the pause"
        time.sleep(0.05)
    return proc


# ---- 1. concurrent runs ------------------------------------------------------------------------------------

def test_concurrent_runs_never_mix_and_the_later_one_refuses(ckpt, tmp_path, capsys):
    out, gate = tmp_path / "C", tmp_path / "gate"
    first = _start_paused(gate, [ckpt, "--sparsity", "0.3", "--out", out])
    rc, err = _run([ckpt, "--sparsity", "0.9", "--out", out, "--force"], capsys)
    assert rc == 0, err
    assert any("another lamp-prune run is writing" in line for line in err), err
    gate.touch()
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, (stdout, stderr)
    assert "was created while this run was writing" in stderr
    alone = tmp_path / "alone"
    assert main([str(ckpt), "--sparsity", "0.9", "--out", str(alone), "--quiet"]) == 0
    assert tree_digest(out) == tree_digest(alone)  # exactly the second run's output, every shard
    assert _temp_dirs(tmp_path) == []


def test_a_killed_runs_directory_is_reported_and_kept(ckpt, tmp_path, capsys):
    out, gate = tmp_path / "C", tmp_path / "gate"
    killed = _start_paused(gate, [ckpt, "--sparsity", "0.3", "--out", out])
    killed.kill()
    killed.wait(timeout=60)
    left = _temp_dirs(tmp_path)
    assert len(left) == 1
    legacy = tmp_path / ".C.lamp-prune-tmp"  # the fixed name older versions used, silently deleted by them
    legacy.mkdir()
    (legacy / "partial").write_text("someone's partial output")
    rc, err = _run([ckpt, "--sparsity", "0.5", "--out", out], capsys)
    assert rc == 0, err
    warnings = [line for line in err if line.startswith("lamp-prune: warning:")]
    assert any(left[0] in w and "interrupted" in w for w in warnings), err
    assert any(".C.lamp-prune-tmp" in w for w in warnings), err
    assert _temp_dirs(tmp_path) == sorted(left + [legacy.name])
    assert (legacy / "partial").read_text() == "someone's partial output"


# ---- 2. --force never deletes the source; --report/--plot never overwrite it ------------------------------

def test_force_refuses_a_destination_that_contains_the_source(ckpt, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    before = tree_digest(ckpt)
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path, "--force"], capsys, "must not be the source")
    single = tmp_path / "single"
    single.mkdir()
    save_file({"a.weight": torch.randn(8, 8)}, str(single / "m.safetensors"))
    _fails([single / "m.safetensors", "--sparsity", "0.5", "--out", single, "--force"], capsys, "must not")
    _fails([single / "m.safetensors", "--sparsity", "0.5", "--out", single / "m.safetensors", "--force"], capsys,
           "must not")
    link = tmp_path / "alias"
    link.symlink_to(ckpt)
    _fails([ckpt, "--sparsity", "0.5", "--out", link, "--force"], capsys, "must not")
    _fails([link, "--sparsity", "0.5", "--out", ckpt / "sub", "--force"], capsys, "must not")
    assert tree_digest(ckpt) == before and (tmp_path / "notes.txt").read_text() == "mine"
    assert (single / "m.safetensors").exists() and _temp_dirs(tmp_path) == []


def test_report_and_plot_never_overwrite_the_source(ckpt, tmp_path, capsys):
    src = tmp_path / "r.safetensors"
    save_file({"a.weight": torch.randn(8, 8)}, str(src))
    data = src.read_bytes()
    _fails([src, "--sparsity", "0.5", "--out", tmp_path / "o.safetensors", "--report", src], capsys, "source")
    _fails([src, "--sparsity", "0.5", "--dry-run", "--report", src], capsys, "source")
    assert src.read_bytes() == data
    before = tree_digest(ckpt)
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o", "--report", ckpt / "config.json"], capsys, "source")
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o", "--plot", ckpt / "extra" / "p.png"], capsys, "source")
    out = tmp_path / "existing"
    out.mkdir()
    _fails([ckpt, "--sparsity", "0.5", "--out", out, "--force", "--report", out / "r.json"], capsys,
           "inside the output")
    hidden = tmp_path / ".existing.lamp-prune-abcd1234"
    hidden.mkdir()
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o", "--report", hidden / "r.json"], capsys, "temporary")
    assert tree_digest(ckpt) == before and not (tmp_path / "o").exists()


# ---- 3. links in SRC ---------------------------------------------------------------------------------------

def test_links_are_copied_as_links_never_followed(ckpt, tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "secret_dir").mkdir(parents=True)
    (outside / "secret_dir" / "key.txt").write_text("TOP SECRET")
    (outside / "secret.txt").write_text("TOP SECRET")
    (ckpt / "tokenizer_dir").symlink_to(outside / "secret_dir")
    (ckpt / "extra" / "secret.txt").symlink_to("../../outside/secret.txt")
    (ckpt / "loop").symlink_to(".")
    (ckpt / "extra" / "up").symlink_to("..")
    out = tmp_path / "out"
    rc, err = _run([ckpt, "--sparsity", "0.5", "--out", out], capsys)
    assert rc == 0, err
    for rel in ("tokenizer_dir", "extra/secret.txt", "loop", "extra/up"):
        assert (out / rel).is_symlink() and os.readlink(out / rel) == os.readlink(ckpt / rel), rel
    for dirpath, _, files in os.walk(out):  # os.walk does not follow links
        for f in files:
            p = Path(dirpath) / f
            assert p.is_symlink() or b"TOP SECRET" not in p.read_bytes(), p


def test_shards_and_index_never_read_through_links_out_of_the_source(ckpt, tmp_path, capsys):
    outside = tmp_path / "elsewhere.safetensors"
    shard = ckpt / "model-00003-of-00003.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys, "model-00003-of-00003",
           "out of the checkpoint")
    shard.unlink()
    outside.rename(shard)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = "../elsewhere.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys, "lm_head.weight", "not a file name")


def test_special_files_are_refused_not_read(ckpt, tmp_path, capsys):
    os.mkfifo(ckpt / "extra" / "pipe")  # reading it would block for ever
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys, "pipe", "not a regular file")
    assert not (tmp_path / "o").exists() and _temp_dirs(tmp_path) == []


# ---- 4/7/8. headers and indexes: strict, one line, bounded memory ------------------------------------------

W = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}  # a valid, selected weight: 16 bytes


def _t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


BAD_HEADERS = {
    "nested": (b"[" * 100_000, b""),
    "shape Infinity": (b'{"a.weight": {"dtype": "F32", "shape": [Infinity, 1], "data_offsets": [0, 16]}}', b"\0" * 16),
    "offsets 1e999": (b'{"a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1e999]}}', b"\0" * 16),
    "offsets NaN": (b'{"a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [NaN, 16]}}', b"\0" * 16),
    "negative shape": ({"a.weight": _t("F32", [-2, -2], 0, 16)}, b"\0" * 16),
    "shape 2^70": ({"a.weight": W, "b.weight": _t("F32", [2**70, 0], 16, 16)}, b"\0" * 16),
    "dtype list": ({"a.weight": W, "b": _t(["F32"], [1], 16, 20)}, b"\0" * 20),
    "overlap": ({"a.weight": W, "b.weight": _t("F32", [2, 2], 8, 24)}, b"\0" * 24),
    "gap": ({"a.weight": W, "b.weight": _t("F32", [1], 20, 24)}, b"\0" * 24),
    "duplicate": (b'{"a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
                  b'"a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]}}', b"\0" * 32),
    "float shape": ({"a.weight": _t("F32", [2.0, 2], 0, 16)}, b"\0" * 16),
    "string shape": ({"a.weight": _t("F32", ["2", 2], 0, 16)}, b"\0" * 16),
    "string offsets": ({"a.weight": _t("F32", [2, 2], "0", "16")}, b"\0" * 16),
    "bool shape": ({"a.weight": _t("F32", [True, 4], 0, 16)}, b"\0" * 16),
    "metadata not strings": ({"__metadata__": {"n": 1}, "a.weight": W}, b"\0" * 16),
    "trailing bytes": ({"a.weight": W}, b"\0" * 20),
    "past the end": ({"a.weight": _t("F32", [4, 4], 0, 64)}, b"\0" * 16),
    "huge integer": (b'{"a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1' + b"0" * 5000 + b']}}',
                     b"\0" * 16),
    "sub-byte tail": ({"a.weight": W, "f": _t("F4", [3], 16, 18)}, b"\0" * 18),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_malformed_headers_are_refused_as_the_library_does(case, tmp_path, capsys):
    header, data = BAD_HEADERS[case]
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, data)
    assert _library_refuses(path), case  # the safetensors library refuses it too: we are at least as strict
    _fails([path, "--sparsity", "0.5", "--out", tmp_path / "o.safetensors", "--include", "."], capsys,
           "bad.safetensors")
    assert not (tmp_path / "o.safetensors").exists() and _temp_dirs(tmp_path) == []


def test_header_length_beyond_the_file_is_refused_before_reading(tmp_path, capsys):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    _fails([path, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys, "big.safetensors", "does not fit")


BAD_INDEXES = {
    "nested": lambda wm: "[" * 100_000,
    "weight_map value int": lambda wm: json.dumps({"weight_map": dict(wm, **{"lm_head.weight": 3})}),
    "weight_map value null": lambda wm: json.dumps({"weight_map": dict(wm, **{"lm_head.weight": None})}),
    "metadata list": lambda wm: json.dumps({"metadata": [1, 2], "weight_map": wm}),
    "weight_map list": lambda wm: json.dumps({"weight_map": list(wm)}),
    "absolute path": lambda wm: json.dumps({"weight_map": dict(wm, **{"lm_head.weight": "/etc/passwd"})}),
}


@pytest.mark.parametrize("case", BAD_INDEXES)
def test_malformed_indexes_name_the_file_before_anything_is_written(case, ckpt, tmp_path, capsys):
    index_path = ckpt / "model.safetensors.index.json"
    weight_map = json.loads(index_path.read_text())["weight_map"]
    index_path.write_text(BAD_INDEXES[case](weight_map))
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys, "model.safetensors.index.json")
    assert not (tmp_path / "o").exists() and _temp_dirs(tmp_path) == []


def test_index_paths_with_dot_slash_and_duplicate_tensors(ckpt, tmp_path, capsys):
    index_path = ckpt / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: f"./{v}" for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    rc, err = _run([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o"], capsys)
    assert rc == 0, err
    written = json.loads((tmp_path / "o" / "model.safetensors.index.json").read_text())
    assert written["weight_map"] == index["weight_map"]
    shard = ckpt / "model-00003-of-00003.safetensors"
    tensors = load_file(str(shard))
    tensors["model.layers.1.q_proj.weight"] = torch.zeros(16, 16).half()  # also in shard 2
    save_file(tensors, str(shard))
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o2"], capsys, "model.layers.1.q_proj.weight", "also in")


def test_invalid_regex_is_one_line(ckpt, tmp_path, capsys):
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o", "--include", "("], capsys, "regular expression")
    _fails([ckpt, "--sparsity", "0.5", "--out", tmp_path / "o", "--exclude", "[z-a]"], capsys, "regular expression")


# ---- 9. any dtype is copied when not selected --------------------------------------------------------------

def test_unselected_tensors_of_every_dtype_are_copied_byte_for_byte(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 6, generator=g)
    others = [("u16", "U16", [3], 6), ("u32", "U32", [2], 8), ("u64", "U64", [1], 8), ("c64", "C64", [2], 16),
              ("e8m0", "F8_E8M0", [5], 5), ("f4", "F4", [4], 2), ("f6", "F6_E2M3", [4], 3),
              ("fnuz", "F8_E5M2FNUZ", [3], 3)]
    header, data = {"layer.weight": _t("F32", [6, 6], 0, 144)}, bytearray(weight.numpy().tobytes())
    for name, dtype, shape, nbytes in others:
        header[name] = _t(dtype, shape, len(data), len(data) + nbytes)
        data += bytes(range(1, nbytes + 1))
    src = _raw_safetensors(tmp_path / "m.safetensors", header, bytes(data))
    assert not _library_refuses(src)
    out = tmp_path / "o.safetensors"
    rc, err = _run([src, "--sparsity", "0.5", "--out", out], capsys)
    assert rc == 0, err
    a, b = src.read_bytes(), out.read_bytes()
    start = len(a) - len(data)  # where the data section begins; the pruned weight is its first 144 bytes
    assert len(a) == len(b) and a[:start] == b[:start] and a[start + 144:] == b[start + 144:]
    want = weight * lk.prune_masks(weight, 0.5)
    with safe_open(str(out), "pt") as f:
        assert torch.equal(f.get_tensor("layer.weight"), want)


# ---- 10. signals and interrupted replaces ------------------------------------------------------------------

def test_sigterm_removes_the_temporary_output(ckpt, tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    proc = _start_paused(gate, [ckpt, "--sparsity", "0.5", "--out", out])
    assert len(_temp_dirs(tmp_path)) == 1
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], stderr
    assert not out.exists() and _temp_dirs(tmp_path) == []


def test_a_replace_killed_between_its_renames_is_recovered_by_the_next_run(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(ckpt), "--sparsity", "0.3", "--out", str(out), "--quiet"]) == 0
    old = tree_digest(out)
    env = dict(_env(), LAMP_TEST_KILL_AFTER_RENAME_OF=str(out))
    (tmp_path / "gate").touch()  # no pause
    proc = subprocess.run([sys.executable, "-c", PAUSED_RUN, str(tmp_path / "gate"), str(ckpt), "--sparsity", "0.8",
                           "--out", str(out), "--force", "--quiet"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()  # the window the next run must repair
    rc, err = _run([ckpt, "--sparsity", "0.8", "--out", out], capsys)
    assert any("put back" in line for line in err), err
    assert rc == 2 and "exists" in err[-1]  # restored, so without --force it is not replaced
    assert tree_digest(out) == old


def test_force_replace_through_the_two_rename_fallback(ckpt, tmp_path, monkeypatch):
    from lamp_kernels import staging

    out = tmp_path / "out"
    assert main([str(ckpt), "--sparsity", "0.3", "--out", str(out), "--quiet"]) == 0
    monkeypatch.setattr(staging, "_renameat2", lambda *args: False)
    assert main([str(ckpt), "--sparsity", "0.8", "--out", str(out), "--force", "--quiet"]) == 0
    alone = tmp_path / "alone"
    assert main([str(ckpt), "--sparsity", "0.8", "--out", str(alone), "--quiet"]) == 0
    assert tree_digest(out) == tree_digest(alone) and _temp_dirs(tmp_path) == []


# ---- 11. --report/--plot checked before anything is written ------------------------------------------------

def test_bad_report_or_plot_paths_fail_before_writing(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    _fails([ckpt, "--sparsity", "0.5", "--out", out, "--plot", tmp_path / "p.xyz"], capsys, "--plot", ".xyz")
    _fails([ckpt, "--sparsity", "0.5", "--out", out, "--plot", tmp_path / "plot"], capsys, "--plot")
    _fails([ckpt, "--sparsity", "0.5", "--out", out, "--report", tmp_path / "no" / "r.json"], capsys, "--report")
    _fails([ckpt, "--sparsity", "0.5", "--out", out, "--report", tmp_path], capsys, "--report", "directory")
    assert not out.exists() and _temp_dirs(tmp_path) == []
    rc, err = _run([ckpt, "--sparsity", "0.5", "--out", out, "--plot", tmp_path / "p.svg", "--report",
                    tmp_path / "r.json"], capsys)
    assert rc == 0, err
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.svg", "r.json", "src"]


# ---- 12. permissions ---------------------------------------------------------------------------------------

def test_output_keeps_the_sources_permission_bits(ckpt, tmp_path, capsys):
    modes = {"model-00001-of-00003.safetensors": 0o600, "model-00002-of-00003.safetensors": 0o640,
             "model-00003-of-00003.safetensors": 0o400, "model.safetensors.index.json": 0o600,
             "config.json": 0o640, "extra": 0o750, "extra/notes.txt": 0o600}
    for rel, mode in modes.items():
        os.chmod(ckpt / rel, mode)
    os.chmod(ckpt, 0o750)
    out = tmp_path / "out"
    rc, err = _run([ckpt, "--sparsity", "0.5", "--out", out], capsys)
    assert rc == 0, err
    for rel, mode in modes.items():
        assert stat.S_IMODE(os.stat(out / rel).st_mode) == mode, rel
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o750
    single = tmp_path / "one.safetensors"
    save_file({"a.weight": torch.randn(8, 8)}, str(single))
    os.chmod(single, 0o600)
    rc, err = _run([single, "--sparsity", "0.5", "--out", tmp_path / "one-out.safetensors"], capsys)
    assert rc == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "one-out.safetensors").st_mode) == 0o600




def test_a_selected_tensor_of_2_31_elements_is_refused():
    """Decided from the header alone: one error naming the file and the tensor (the contract's per-layer limit)."""
    from lamp_kernels.checkpoint import CheckpointError, select
    from lamp_kernels.safetensors_io import TensorEntry

    big = TensorEntry("model.layers.0.mlp.weight", Path("s.safetensors"), "BF16", (2**16, 2**15), 0, 2**32)
    small = TensorEntry("model.layers.1.mlp.weight", Path("s.safetensors"), "BF16", (2**16, 2**15 - 1), 0, 2**32)
    assert select([small]) == [small]
    with pytest.raises(CheckpointError, match="s.safetensors: tensor model.layers.0.mlp.weight has 2147483648"):
        select([small, big])
