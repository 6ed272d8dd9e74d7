"""The one prepared GPU check (`make gpu-check`): versions, the GPU tests, the GPU benchmarks, a short table.

    python benchmarks/gpu_check.py --out DIR [--quick]      on a GPU machine
    python benchmarks/gpu_check.py --out DIR --dry-run      anywhere: CPU tensors, tiny sizes (part of make test)

On a GPU machine it compiles no CUDA when the library was built beforehand (`make cuda` on any machine with
nvcc) and brought along; if it is absent it builds it with every core and says how long that took. The C++
CPU extension is rebuilt in place when it was built against another torch (about a minute). It installs
nothing. Tests run with a per-test timeout and without stopping at the first failure; the benchmarks verify
every result before timing it. DIR receives the whole log (gpu-check.log), the test summary (tests.txt),
the JUnit report (tests.xml) and the benchmark results JSON; the table is printed last. Budget: 6 minutes on
an H100 (--quick: 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Log:
    def __init__(self, path: Path):
        self.file = path.open("w")

    def __call__(self, *parts):
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()

    def run(self, cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, float]:
        """Runs cmd with its output streamed into the log; returns (exit status, seconds); 124 when it ran past
        `timeout` (killed at the deadline even if it prints nothing: a reader thread carries the output)."""
        self(f"$ {' '.join(cmd)}")
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=lambda: [self(line.rstrip("\n")) for line in proc.stdout], daemon=True)
        reader.start()
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self(f"!! timed out after {timeout:.0f} s")
            status = 124
        reader.join(timeout=10)
        return status, time.perf_counter() - start


def versions(log: Log, gpu: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as exc:
        info["triton"] = f"not importable ({exc})"
    if gpu:
        p = torch.cuda.get_device_properties(0)
        info["device"] = (f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                          f"{p.multi_processor_count} SMs")
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True) if _which("nvcc") else None
    info["nvcc"] = nvcc.stdout.strip().splitlines()[-1] if nvcc and nvcc.returncode == 0 else "not found"
    for k, v in info.items():
        log(f"{k:10s} {v}")
    return info


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def prepare(log: Log, gpu: bool) -> dict:
    """The C++ extension for this torch, and the CUDA library (built only when it was not brought)."""
    done = {}
    probe = subprocess.run([sys.executable, "-c", "import lamp_kernels.ops as o; assert o._C is not None"],
                           cwd=ROOT, capture_output=True, text=True)
    if probe.returncode != 0:
        if not gpu:
            log("C++ extension: not built for this torch (dry run: not rebuilding)")
        else:
            env = dict(os.environ, LAMP_KERNELS_NO_CUDA="1", MAX_JOBS=str(os.cpu_count() or 1))
            status, seconds = log.run([sys.executable, "setup.py", "build_ext", "--inplace"], 600, env)
            done["cpu_extension_build_s"] = round(seconds, 1)
            log(f"C++ extension rebuilt for this torch in {seconds:.0f} s (status {status})")
    else:
        log("C++ extension: loads")
    loads = subprocess.run([sys.executable, "-c", "from lamp_kernels import cuda_library as c; c.load()"], cwd=ROOT,
                           capture_output=True, text=True)
    if gpu and loads.returncode != 0 and not os.environ.get("LAMP_KERNELS_CUDA_LIB"):
        log(f"liblamp_cuda.so missing or not loadable here ({loads.stderr.strip().splitlines()[-1:]}): "
            "building it now with every core")
        status, seconds = log.run([sys.executable, "csrc/cuda/build.py", "--jobs", str(os.cpu_count() or 1)], 900)
        done["cuda_library_build_s"] = round(seconds, 1)
        log(f"liblamp_cuda built in {seconds:.0f} s (status {status})")
    info = subprocess.run([sys.executable, "-c", "import json; from lamp_kernels import cuda_library as c; "
                           "print(json.dumps(c.info()))"], cwd=ROOT, capture_output=True, text=True)
    done["cuda_library"] = json.loads(info.stdout) if info.returncode == 0 else info.stderr.strip().splitlines()[-1:]
    log(f"cuda library: {done['cuda_library']}")
    return done


def run_tests(log: Log, out: Path, quick: bool, per_test: int, budget: int) -> dict:
    env = dict(os.environ, LAMP_TEST_TIMEOUT=str(per_test), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "tests/test_gpu_importance.py", "-v", "-rfE",
           "-p", "no:cacheprovider",
           f"--junitxml={out / 'tests.xml'}"]
    if quick:
        cmd += ["-k", "not more_than_2_31 and not nomask"]
    status, seconds = log.run(cmd, budget, env)
    summary = {"status": status, "seconds": round(seconds, 1)}
    xml = out / "tests.xml"
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        cases = list(suite.iter("testcase"))
        def problem(case):
            found = case.find("failure")
            return found if found is not None else case.find("error")

        failed = [c for c in cases if problem(c) is not None]
        skipped = [c for c in cases if c.find("skipped") is not None]
        summary.update(total=len(cases), failed=len(failed), skipped=len(skipped),
                       passed=len(cases) - len(failed) - len(skipped),
                       failures=[f"{c.get('name')}: {problem(c).get('message', '')[:300]}" for c in failed])
    lines = [f"{k}: {v}" for k, v in summary.items() if k != "failures"] + summary.get("failures", [])
    (out / "tests.txt").write_text("\n".join(lines) + "\n")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: CPU tensors, tiny sizes (the default without one)")
    args = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu-check.log")
    start = time.perf_counter()
    log(f"== lamp_kernels GPU check ({'GPU' if gpu else 'DRY RUN: no GPU, CPU tensors, tiny sizes'}"
        f"{', quick' if args.quick else ''})")
    info = versions(log, gpu)
    info.update(prepare(log, gpu))
    log("== tests")
    tests = run_tests(log, args.out, args.quick, per_test=150 if gpu else 60,
                      budget=(70 if args.quick else 150) if gpu else 300)
    log("== benchmarks")
    mode = ["--dry-run"] if not gpu else ["--quick"] if args.quick else []
    bench_status, bench_s = log.run([sys.executable, "benchmarks/bench_gpu.py", *mode, "--out", str(args.out)],
                                    (60 if args.quick else 180) if gpu else 600)
    rows = []
    for f in sorted(args.out.glob("*.json")):
        rows += json.loads(f.read_text()).get("cases", [])
    (args.out / "versions.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"== summary ({time.perf_counter() - start:.0f} s)")
    log(f"tests: {tests.get('passed', '?')} passed, {tests.get('failed', '?')} failed, "
        f"{tests.get('skipped', '?')} skipped (exit {tests['status']}, {tests['seconds']} s)")
    for f in tests.get("failures", [])[:10]:
        log(f"  FAILED {f}")
    log(f"benchmarks: exit {bench_status}, {bench_s:.0f} s")
    log(f"{'case':26s} {'backend':10s} {'ms':>9s} {'baseline ms':>11s} {'speedup':>7s} {'of bound':>8s} verified")
    for r in rows:
        ms = "-" if r["ours_ms"] is None else f"{r['ours_ms']:.3f}"
        base = "-" if r["baseline_ms"] is None else f"{r['baseline_ms']:.3f}"
        frac = "-" if r["fraction_of_copy_bandwidth"] is None else f"{r['fraction_of_copy_bandwidth']:.2f}"
        log(f"{r['name']:26s} {r['backend'][:10]:10s} {ms:>9s} {base:>11s} {str(r['speedup'] or '-'):>7s} {frac:>8s} "
            f"{'yes' if r['verified'] else 'NO'}")
    ok = tests["status"] == 0 and bench_status == 0
    log("GPU check " + ("passed" if ok else "FAILED") + ("" if gpu else " (dry run)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
