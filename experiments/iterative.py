"""Iterative magnitude pruning with retraining (the paper's protocol, §4): train a dense model, then repeatedly
prune 20% of the surviving weights and retrain, with each layerwise-sparsity method. Uses the public API only
(lamp_kernels.prune_, whose sparsity is the total target, so round i asks for 1 - 0.8^i).

    python experiments/iterative.py                 # Fashion-MNIST, 3 seeds, 20 rounds (~1.2% of weights left)
    python experiments/iterative.py --quick         # sklearn digits, seconds (used by the tests)

Writes a JSON of per-round test accuracy and per-layer density for every method and seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from data import digits, fashion_mnist  # noqa: E402
from models import small_cnn  # noqa: E402

import lamp_kernels as lk  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def train(model, data, samples: int, seed: int, batch: int = 128, lr: float = 1e-3) -> None:
    (x, y), _ = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    done = 0
    while done < samples:
        for idx in torch.randperm(len(y), generator=g).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            done += len(idx)
            if done >= samples:
                break


@torch.no_grad()
def accuracy(model, data) -> float:
    _, (x, y) = data
    model.eval()
    return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(2000), y.split(2000))) / len(y)


def run(data, in_size: int, seeds, rounds: int, dense_samples: int, retrain_samples: int, methods, log=print):
    out = {"rounds": rounds, "density": [0.8**i for i in range(rounds + 1)], "runs": {}}
    for seed in seeds:
        torch.manual_seed(seed)
        dense = small_cnn(in_size)
        train(dense, data, dense_samples, seed)
        base = accuracy(dense, data)
        log(f"seed {seed}: dense accuracy {base:.4f}")
        for method in methods:
            model = copy.deepcopy(dense)
            accs, layers, t = [base], [], time.perf_counter()
            for i in range(1, rounds + 1):
                report = lk.prune_(model, 1 - 0.8**i, method)
                train(model, data, retrain_samples, seed * 1000 + i)
                accs.append(accuracy(model, data))
                layers.append({r.name: r.density for r in report.layers})
            out["runs"].setdefault(method, []).append({"seed": seed, "accuracy": accs, "layer_density": layers})
            log(f"  {method:>12}: final density {0.8**rounds:.4f}, accuracy {accs[-1]:.4f} "
                f"({time.perf_counter() - t:.0f} s)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="sklearn digits, 2 seeds, 8 rounds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    if args.quick:
        data, in_size, seeds, rounds = digits(), 8, range(2), 8
        dense_samples, retrain_samples = 1500 * 15, 1500 * 3
    else:
        data, in_size, seeds, rounds = fashion_mnist(), 28, range(args.seeds), args.rounds
        dense_samples, retrain_samples = 60000 * 3, 15000
    result = run(data, in_size, seeds, rounds, dense_samples, retrain_samples, lk.METHODS)
    result.update({"dataset": "digits" if args.quick else "fashion-mnist", "dense_samples": dense_samples,
                   "retrain_samples": retrain_samples, "seconds": round(time.perf_counter() - t, 1),
                   "torch": torch.__version__, "threads": torch.get_num_threads()})
    path = args.out or RESULTS / f"iterative-{result['dataset']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['seconds']:.0f} s; written to {path}")
    return result


if __name__ == "__main__":
    main()
