#!/usr/bin/env python3
"""Build liblamp_cuda.so with nvcc alone: no torch, no GPU needed (it runs on a CPU machine).

    python csrc/cuda/build.py --out lamp_kernels/liblamp_cuda.so [--archs 80,90] [--jobs N] [--no-cache]

Each translation unit compiles in its own nvcc process (the fp64 scan, the largest, apart from the rest),
all in parallel, then one link with the CUDA runtime linked statically, so the library loads under any
torch built for the same CUDA major version. The result is cached under ``$LAMP_KERNELS_CACHE``
(default ``~/.cache/lamp_kernels``), keyed by the sources, the architectures, the flags and nvcc's version:
building the same sources again costs a copy. Architectures: ``--archs``, else ``$LAMP_CUDA_ARCHS``, else
80,90; the library carries SASS for each and PTX of the newest, which newer GPUs compile at load.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNITS = ["keys_sort.cu", "scan_narrow.cu", "scan_fp64.cu", "global_cut.cu", "histogram16.cu", "c_api.cu"]
FLAGS = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-ffp-contract=off", "--fmad=false"]
DEFAULT_ARCHS = "80,90"


def nvcc_path() -> str:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    if candidate.exists():
        return str(candidate)
    raise SystemExit("nvcc not found: install the CUDA toolkit (nvcc 12 or 13) or set CUDA_HOME")


def arch_list(archs: str | None) -> list[int]:
    text = archs or os.environ.get("LAMP_CUDA_ARCHS") or DEFAULT_ARCHS
    return sorted({int(a.strip().removeprefix("sm_")) for a in text.replace(";", ",").split(",") if a.strip()})


def gencode(archs: list[int]) -> list[str]:
    flags = [f"--generate-code=arch=compute_{a},code=sm_{a}" for a in archs]
    return flags + [f"--generate-code=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def cache_key(nvcc: str, archs: list[int]) -> str:
    h = hashlib.sha256()
    for f in sorted(HERE.glob("*")):
        if f.suffix in (".cu", ".cuh", ".h"):
            h.update(f.name.encode() + f.read_bytes())
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    h.update(" ".join(FLAGS + gencode(archs)).encode() + version.encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    return Path(os.environ.get("LAMP_KERNELS_CACHE", Path.home() / ".cache" / "lamp_kernels")) / "cuda"


def compile_unit(nvcc: str, unit: str, archs: list[int], out: Path) -> tuple[str, float, str]:
    start = time.perf_counter()
    define = [f'-DLAMP_CUDA_ARCHS="{";".join(str(a) for a in archs)}"'] if unit == "c_api.cu" else []
    cmd = [nvcc, *FLAGS, *gencode(archs), *define, "-c", str(HERE / unit), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return unit, time.perf_counter() - start, proc.stderr


def build(out: Path, archs: list[int], jobs: int, use_cache: bool = True, quiet: bool = False) -> Path:
    """Build (or take from the cache) the library for `archs` and copy it to `out`."""
    nvcc = nvcc_path()
    key = cache_key(nvcc, archs)
    cached = cache_dir() / key / "liblamp_cuda.so"
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if use_cache and cached.exists():
        say(f"liblamp_cuda: cached build {key} for sm_{',sm_'.join(map(str, archs))}")
    else:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            objs = {u: Path(tmp) / (Path(u).stem + ".o") for u in UNITS}
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                for unit, seconds, _ in pool.map(lambda u: compile_unit(nvcc, u, archs, objs[u]), UNITS):
                    say(f"  nvcc {unit}: {seconds:.1f} s")
            lib = Path(tmp) / "liblamp_cuda.so"
            cmd = [nvcc, "-shared", "-cudart", "static", *gencode(archs), *map(str, objs.values()), "-o", str(lib)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_suffix(f".part{os.getpid()}")
            shutil.copyfile(lib, part)
            os.replace(part, cached)  # atomic: a concurrent build never sees half a library
        say(f"liblamp_cuda: built for sm_{',sm_'.join(map(str, archs))} in {time.perf_counter() - start:.1f} s "
            f"with {jobs} parallel nvcc processes ({cached.stat().st_size / 2**20:.1f} MiB)")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + f".part{os.getpid()}")
    shutil.copyfile(cached, part)
    os.replace(part, out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE.parent.parent / "lamp_kernels" / "liblamp_cuda.so")
    ap.add_argument("--archs", help="comma-separated compute capabilities, e.g. 80,90 (default: $LAMP_CUDA_ARCHS "
                                    f"or {DEFAULT_ARCHS})")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    try:
        build(args.out, arch_list(args.archs), args.jobs, not args.no_cache)
    except RuntimeError as exc:
        print(f"liblamp_cuda: build failed:\n{exc}", file=sys.stderr)
        return 1
    print(f"liblamp_cuda: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
