"""The test suite's build of liblamp_cuda (sm_90 only), started in the background when the session starts so
that nvcc overlaps the other tests; test_cuda.py waits for it. Cached by the sources' hash outside the
clone (csrc/cuda/build.py), so a machine that compiled these sources before only copies the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_build: tuple[subprocess.Popen, Path] | None = None


def start() -> None:
    """Starts the build once per process, if nvcc is here."""
    global _build
    if _build is not None or shutil.which("nvcc") is None:
        return
    out = Path(tempfile.mkdtemp(prefix="lamp-cuda-")) / "liblamp_cuda.so"
    cmd = [sys.executable, str(ROOT / "csrc" / "cuda" / "build.py"), "--archs", "90", "--out", str(out),
           "--jobs", str(os.cpu_count() or 1)]
    _build = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)


def result(timeout: float = 1800) -> Path:
    """The built library's path; raises with nvcc's output if the build failed."""
    start()
    if _build is None:
        raise FileNotFoundError("nvcc not installed")
    proc, out = _build
    log, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"building liblamp_cuda failed:\n{log[-6000:]}")
    return out
