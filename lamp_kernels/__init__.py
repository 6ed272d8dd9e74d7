"""lamp_kernels: fast, exact LAMP pruning (Lee et al., "Layer-adaptive sparsity for the magnitude-based
pruning", ICLR 2021) and its baselines for PyTorch."""

__version__ = "0.1.0"

from .api import BACKENDS, METHODS, available_backends, lamp_scores, layer_sparsities, prune_masks
from .modules import LayerReport, PruneReport, prune_

__all__ = [
    "BACKENDS",
    "METHODS",
    "LayerReport",
    "PruneReport",
    "available_backends",
    "lamp_scores",
    "layer_sparsities",
    "prune_",
    "prune_masks",
]
