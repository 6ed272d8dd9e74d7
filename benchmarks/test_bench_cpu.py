"""pytest-benchmark suite: `python -m pytest benchmarks/test_bench_cpu.py` (not part of `make test`).

Each case times lamp_kernels and its baseline on the same real layer shapes; compare the groups' medians."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import shapes as S  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.official import official_lamp_masks, official_layer_scores  # noqa: E402

MODELS = {"vgg16": S.vgg16_cifar, "resnet18": S.resnet18_cifar}


@pytest.fixture(scope="module", params=sorted(MODELS))
def weights(request):
    return request.param, S.make_weights(MODELS[request.param](), torch.float32)


def test_masks_ours(benchmark, weights):
    name, ws = weights
    benchmark.group = f"{name}-fp32-masks"
    masks = benchmark(lk.prune_masks, ws, 0.9)
    assert sum(int((~m).sum()) for m in masks) == round(0.9 * S.numel(MODELS[name]()))


def test_masks_official(benchmark, weights):
    name, ws = weights
    benchmark.group = f"{name}-fp32-masks"
    benchmark.pedantic(official_lamp_masks, (ws, 0.9), rounds=3)


def test_scores_ours(benchmark, weights):
    name, ws = weights
    benchmark.group = f"{name}-fp32-scores"
    benchmark(lk.lamp_scores, ws)


def test_scores_official(benchmark, weights):
    name, ws = weights
    benchmark.group = f"{name}-fp32-scores"
    benchmark.pedantic(lambda: [official_layer_scores(w) for w in ws], rounds=3)
