"""Adversarial layer sets shared by the tests: each is (name, list of tensors, list of masks or None)."""

import torch

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def heavy_ties(dtype, seed=0):
    """Few distinct magnitudes (bf16-style ties) across layers of different sizes, plus exact zeros."""
    g = _gen(seed)
    vals = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, -1.0, -0.5])
    return [vals[torch.randint(0, len(vals), (n,), generator=g)].reshape(shape).to(dtype)
            for n, shape in [(600, (20, 30)), (150, (150,)), (27, (1, 3, 3, 3)), (1, (1,))]]


def huge_and_tiny(dtype, seed=1):
    """One large layer and many tiny ones, including size-1 layers."""
    g = _gen(seed)
    layers = [torch.randn(128, 160, generator=g).to(dtype)]
    layers += [torch.randn(int(n), generator=g).to(dtype) * 0.1 for n in torch.randint(1, 6, (40,), generator=g)]
    return layers


def scaled_copies(dtype, seed=2):
    """Identical layers and power-of-two scalings of them: exactly equal scores across layers."""
    g = _gen(seed)
    base = torch.randn(300, generator=g).to(dtype)
    return [base.clone(), base * 2, base.reshape(10, 30) * 0.25, base.flip(0)]


def zeros_and_tiny(dtype, seed=3):
    g = _gen(seed)
    a = torch.randn(400, generator=g)
    a[::3] = 0
    b = torch.zeros(50)
    c = torch.randn(200, generator=g) * 1e-3
    return [a.to(dtype), b.to(dtype), c.to(dtype)]


def random_masks(layers, p=0.3, seed=4):
    g = _gen(seed)
    return [torch.rand(w.shape, generator=g) > p for w in layers]


CASES = {
    "heavy_ties": heavy_ties,
    "huge_and_tiny": huge_and_tiny,
    "scaled_copies": scaled_copies,
    "zeros_and_tiny": zeros_and_tiny,
}


def thread_counts(*counts):
    """Yields each count with torch's thread count (the library's pool size) set to it; the caller's count is
    restored when the loop ends, however it ends."""
    before = torch.get_num_threads()
    try:
        for t in counts:
            torch.set_num_threads(t)
            yield t
    finally:
        torch.set_num_threads(before)
