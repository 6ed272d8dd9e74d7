"""make demo: prune the all-MiniLM-L6-v2 sentence encoder (ships offline) with LAMP and the paper's baselines,
one-shot (no retraining), and show how close the pruned embeddings stay to the dense model's, plus the
layerwise survival each method chooses."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import minilm  # noqa: E402

import lamp_kernels as lk  # noqa: E402

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "The new movie is awesome.", "The cat sits outside.", "The stock market fell sharply today.",
    "Interest rates were left unchanged by the central bank.", "How do I reset my password?",
    "Preheat the oven to 200 degrees before baking the bread.", "The match ended in a draw after extra time.",
    "Quantum computers use qubits instead of bits.", "She booked a flight to Lisbon for next week.",
    "Photosynthesis converts light into chemical energy.", "The server returned a 500 error.",
    "Please water the plants while I am away.", "The museum is closed on Mondays.",
    "He finished the marathon in under three hours.", "Add salt and pepper to taste.",
    "The train to Berlin is delayed by twenty minutes.", "Volcanoes can change the climate for years.",
    "My laptop battery drains too quickly.", "The children built a sandcastle on the beach.",
    "Neural networks can be pruned without losing much accuracy.", "The orchestra tuned their instruments.",
    "A storm is expected to hit the coast tonight.", "Read the contract carefully before signing.",
    "The library has a large collection of rare maps.",
]
SPARSITIES = [0.2, 0.4, 0.6, 0.8, 0.9]
KINDS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense"]


def encoder_weights(model):
    """The 36 Linear weights of the encoder (embeddings are not pruned)."""
    return {name: w for name, w in model.named_parameters() if name.startswith("encoder.") and w.dim() == 2}


def main():
    torch.manual_seed(0)
    model, encode = minilm.load()
    batch = encode(SENTENCES)
    with torch.no_grad():
        dense = model(*batch)
    weights = encoder_weights(model)
    n = sum(w.numel() for w in weights.values())
    print(f"all-MiniLM-L6-v2: {len(weights)} encoder Linear layers, {n / 1e6:.2f}M prunable weights; "
          f"backends available: {', '.join(lk.available_backends())}; {len(SENTENCES)} sentences\n")

    print("Mean cosine similarity of pruned to dense embeddings (one-shot magnitude pruning, no retraining)")
    print(f"| method | {' | '.join(f'{s:.0%}' for s in SPARSITIES)} | prune time |")
    print("|---|" + "---:|" * (len(SPARSITIES) + 1))
    for method in lk.METHODS:
        cells, times = [], []
        for s in SPARSITIES:
            pruned = copy.deepcopy(model)
            t = time.perf_counter()
            try:
                lk.prune_(pruned, s, method, include=r"^encoder\.", reparametrize=False)
            except ValueError as err:
                cells.append("n/a")
                print(f"  ({method} at {s:.0%}: {err})", file=sys.stderr)
                continue
            times.append(time.perf_counter() - t)
            with torch.no_grad():
                cells.append(f"{(pruned(*batch) * dense).sum(-1).mean().item():.4f}")
        print(f"| {method} | {' | '.join(cells)} | {1e3 * sum(times) / max(1, len(times)):.0f} ms |")

    s = 0.8
    print(f"\nLayerwise survival (fraction of weights kept) at {s:.0%} sparsity")
    rows = {m: lk.layer_sparsities(weights, s, m) for m in ("lamp", "global", "erk", "uniform_plus")}
    print(f"| layer | {' | '.join(rows)} |")
    print("|---|" + "---:|" * len(rows))
    for block in range(6):
        for kind in KINDS:
            name = f"encoder.layer.{block}.{kind}.weight"
            print(f"| {block}.{kind} | " + " | ".join(f"{1 - rows[m][name]:.3f}" for m in rows) + " |")


if __name__ == "__main__":
    main()
