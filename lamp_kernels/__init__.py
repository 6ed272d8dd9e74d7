"""lamp_kernels: fast, exact LAMP pruning (Lee et al., "Layer-adaptive sparsity for the magnitude-based
pruning", ICLR 2021) and its baselines for PyTorch."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _running_as_command() -> bool:
    """True under `lamp-prune` or `python -m lamp_kernels` (also as launched by torchrun)."""
    argv = list(getattr(_sys, "orig_argv", _sys.argv))
    as_module = any(a == "-m" and b == "lamp_kernels" for a, b in zip(argv, argv[1:]))
    return as_module or _os.path.basename(_sys.argv[0]) == "lamp-prune"


if _running_as_command():
    # The command alternates short parallel kernels with file I/O. The library's kernels run on its own pool of
    # blocking threads, but torch's own ops use OpenMP, whose idle threads spin by default and take the cores
    # that page-cache writeback needs (measured: 4.7 s -> 3.1 s on 2 cores); BLAS is never used. Both settings
    # are read when the libraries load, so they are set here, before torch is imported; only for the command.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .api import ALL_METHODS, BACKENDS, METHODS, available_backends, lamp_scores, layer_sparsities, prune_masks  # noqa: E402
from .importance import ColumnScaled  # noqa: E402
from .modules import LayerReport, PruneReport, prune_  # noqa: E402

__all__ = [
    "ALL_METHODS",
    "BACKENDS",
    "ColumnScaled",
    "METHODS",
    "LayerReport",
    "PruneReport",
    "available_backends",
    "lamp_scores",
    "layer_sparsities",
    "prune_",
    "prune_masks",
]
