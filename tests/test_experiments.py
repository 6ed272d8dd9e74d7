"""The evidence scripts: the quick iterative-pruning variant (sklearn digits) and the sentence set."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
pytest.importorskip("sklearn")

import lamp_kernels as lk  # noqa: E402


def test_quick_iterative_pruning(tmp_path):
    import iterative

    r = iterative.main(["--quick", "--out", str(tmp_path / "q.json")])
    assert set(r["runs"]) == set(lk.METHODS)
    for method, runs in r["runs"].items():
        assert len(runs) == 2
        for run in runs:
            assert len(run["accuracy"]) == r["rounds"] + 1
            final = run["layer_density"][-1]
            if method == "uniform_plus":
                assert final["0.weight"] == 1.0  # the first conv layer stays dense
                assert final["9.weight"] >= 0.2 - 1e-9  # the last layer keeps at least 20%
            if method in ("lamp", "global"):  # exact totals: round i leaves 0.8^i of the weights
                sizes = {"0.weight": 144, "3.weight": 4608, "7.weight": 16384, "9.weight": 1280}
                kept = sum(final[n] * sizes[n] for n in sizes)
                assert abs(kept - round(0.8 ** r["rounds"] * sum(sizes.values()))) < 1e-6
    lamp_final = [run["accuracy"][-1] for run in r["runs"]["lamp"]]
    assert min(lamp_final) > 0.8  # 17% of the weights left still classify digits well


def test_sentences_are_200_distinct():
    from sentences import SENTENCES

    assert len(set(SENTENCES)) == 200
