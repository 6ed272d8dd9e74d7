"""Offline data: Fashion-MNIST from Debian's dataset-fashion-mnist (idx .gz files), and sklearn's bundled
8x8 digits for quick runs. Both as float tensors (N, 1, H, W) normalised to mean 0, std 1, and int64 labels."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> torch.Tensor:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def fashion_mnist(root: Path = FASHION_DIR):
    """((x_train, y_train), (x_test, y_test)): 60k / 10k 28x28 images."""
    if not (root / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"Fashion-MNIST not found under {root}: apt-get install dataset-fashion-mnist")
    xs = [_idx(root / f"{s}-images-idx3-ubyte.gz").float().div_(255) for s in ("train", "t10k")]
    ys = [_idx(root / f"{s}-labels-idx1-ubyte.gz").long() for s in ("train", "t10k")]
    mean, std = xs[0].mean(), xs[0].std()
    return tuple((((x - mean) / std).unsqueeze(1), y) for x, y in zip(xs, ys))


def digits(seed: int = 0):
    """sklearn's 1797 8x8 digits, split 1500 / 297."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = (x - x.mean()) / x.std(), y
    tr, te = perm[:1500], perm[1500:]
    return (x[tr], y[tr]), (x[te], y[te])
