"""Selection options beyond (sparsity, method): granularity, per-layer density bounds, N:M, OWL's parameters,
row balance.

Validated once here, so every backend sees the same checks. See README "Importance, rows, bounds, N:M, OWL".

    granularity   "layer": LAMP's suffix sums run over a whole layer (the paper); "row": over each output row
                  (dim 0 of a tensor with >= 2 dims; a tensor with fewer dims is one row), with one exact
                  global selection over all rows of all layers. Budget methods (uniform, uniform_plus, erk,
                  owl) then prune round(layer sparsity * row length) in every row (Wanda's per-row rule).
    min_density / max_density
                  every layer keeps at least ceil(min_density * n) and at most floor(max_density * n) of its
                  n weights (exact rational arithmetic on the given floats); only for the global selections
                  (lamp, global). Infeasible bounds raise ValueError.
    nm            (N, M): in every group of M consecutive weights along a row, the M - N least important are
                  pruned first (masked ones count as least important); the method then prunes further if the
                  sparsity asks for more than the N:M pattern gives.
    owl_m, owl_lambda
                  OWL's outlier threshold M (a score is an outlier above M times its block's mean) and
                  lambda (block densities spread over [target - lambda, target + lambda]); Yin et al. 2024
                  use M = 5, lambda = 0.08 for LLaMA-7B, the defaults here.
    row_balance   beta in [0, 1], for the budget methods at granularity="row": how far each row keeps its own
                  share. 1 (the default) is Wanda's per-row rule exactly. Below 1, a layer prunes the same
                  total as the row rule, but as one selection over the balanced keys key_ij * t_i^-beta, t_i
                  row i's cut under the row rule (reference.balanced_masks has the exact definition): row
                  i's threshold is proportional to t_i^beta, so beta = 0 is one threshold for the layer and
                  rows whose keys run high keep more of their weights as beta falls. With ties at the cuts
                  (bf16/fp16 keys), beta just below 1 already differs from 1: a row's weights equal to its
                  cut all get the balanced key t_r^(1 - beta), so which of them go is decided across rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GRANULARITIES = ("layer", "row")
OWL_M = 5.0
OWL_LAMBDA = 0.08
GLOBAL_METHODS = ("lamp", "global")


@dataclass(frozen=True)
class Options:
    granularity: str = "layer"
    min_density: float | None = None
    max_density: float | None = None
    nm: tuple[int, int] | None = None
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA
    blocks: Any = None  # OWL's block of each layer: a list (or dict by name) of ids; None derives them from names
    row_balance: float = 1.0

    @property
    def bounded(self) -> bool:
        return self.min_density is not None or self.max_density is not None

    def is_plain(self) -> bool:
        """True when nothing here changes what the original pipeline does."""
        return self.granularity == "layer" and not self.bounded and self.nm is None


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_options(method: str, granularity: str = "layer", min_density: Any = None, max_density: Any = None,
                  nm: Any = None, owl_m: Any = OWL_M, owl_lambda: Any = OWL_LAMBDA, blocks: Any = None,
                  row_balance: Any = 1.0) -> Options:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    lo = None if min_density is None else _fraction("min_density", min_density)
    hi = None if max_density is None else _fraction("max_density", max_density)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_density {lo} is larger than max_density {hi}")
    if (lo is not None or hi is not None) and method not in GLOBAL_METHODS:
        raise ValueError(f"min_density/max_density constrain the global selections {GLOBAL_METHODS}; method "
                         f"{method!r} fixes every layer's density itself")
    if nm is not None:
        if (not isinstance(nm, (tuple, list)) or len(nm) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in nm)):
            raise ValueError(f"nm must be a pair of integers (N, M), got {nm!r}")
        if not 0 <= nm[0] <= nm[1] or nm[1] < 1:
            raise ValueError(f"nm=(N, M) needs 0 <= N <= M and M >= 1, got {tuple(nm)}")
        nm = (int(nm[0]), int(nm[1]))
    for name, value in (("owl_m", owl_m), ("owl_lambda", owl_lambda)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    balance = _fraction("row_balance", row_balance)
    if balance < 1 and (granularity != "row" or method in GLOBAL_METHODS):
        raise ValueError(f"row_balance < 1 rebalances the per-row rule of a budget method (uniform, uniform_plus, "
                         f"erk, owl) at granularity='row'; got method {method!r}, granularity {granularity!r}")
    return Options(granularity, lo, hi, nm, float(owl_m), float(owl_lambda), blocks, balance)


def rows_of(shape: tuple[int, ...]) -> int:
    """Output rows of a weight: dim 0 of a tensor with >= 2 dims; a vector or scalar is one row."""
    return shape[0] if len(shape) >= 2 else 1
