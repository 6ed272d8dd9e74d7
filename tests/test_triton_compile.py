"""Every Triton kernel variant the launchers use compiles for sm_90 with the installed Triton, without a GPU,
and the machine code does what the kernels are written for: 16-byte loads on aligned full tiles, relaxed
atomics in the histogram and gather passes (no fences), release/acquire only in cut_mask's look-back.
Runs in a subprocess: the tests' process has TRITON_INTERPRET=1, which replaces kernels by interpreted ones.
(`make triton-versions` runs this file against the oldest supported Triton as well.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # the kernels have no floating-point math; silences a 3.9 notice
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "lamp_kernels.triton_kernels.variants", "90"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_variant_compiles(compiled):
    from lamp_kernels.triton_kernels import variants

    assert set(compiled["variants"]) == {v.name for v in variants.variants()}


def test_aligned_variants_load_16_bytes(compiled):
    for name, facts in compiled["variants"].items():
        if name.endswith("-aligned"):
            assert facts["vector_loads"] > 0, name
        if name.startswith("cut_mask-mask") and name.endswith("-aligned"):
            assert facts["vector_stores"] > 0, name


def test_histogram_and_gather_atomics_are_relaxed(compiled):
    for name, facts in compiled["variants"].items():
        if name.startswith(("histogram", "gather_keys")):
            assert facts["relaxed_atomics"] > 0 and facts["other_atomics"] == 0, (name, facts)
            assert facts["fences"] == 0 and facts["acquire_loads"] == 0, (name, facts)


def test_cut_mask_orders_only_its_look_back(compiled):
    for name, facts in compiled["variants"].items():
        if name.startswith("cut_mask"):
            assert facts["relaxed_atomics"] >= 1, (name, facts)  # the ticket
            assert facts["acquire_loads"] >= 1, (name, facts)  # reading earlier tiles' counts
            assert facts["fences"] == 0, (name, facts)
