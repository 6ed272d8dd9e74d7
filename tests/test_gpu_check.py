"""The GPU check's dry run: the same script `make gpu-check` runs on a GPU machine, here with CPU tensors and
tiny sizes, so that the script itself (versions, test run and summary, verified benchmarks, results JSON,
table) is never what fails on a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("triton")


def test_gpu_check_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = (tmp_path / "gpu-check.log").read_text()
    assert "DRY RUN" in log and log.rstrip().endswith("GPU check passed (dry run)")
    assert "tests/test_gpu.py" in log and "skipped" in (tmp_path / "tests.txt").read_text()
    (result,) = tmp_path.glob("dry-run-*.json")
    record = json.loads(result.read_text())
    assert record["mode"] == "dry-run" and record["commit"]
    names = {(c["name"], c["backend"]) for c in record["cases"]}
    assert {("resnet18-fp32-masks", "default"), ("resnet18-fp32-masks", "triton"), ("tiny-bf16-masks", "default"),
            ("tiny-fp32-masks", "default"), ("tiny-bf16-scores", "cpu")} <= names
    assert all(c["verified"] and c["ours_ms"] > 0 and c["verified_against"] for c in record["cases"])
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert {"python", "torch", "triton"} <= set(versions)
