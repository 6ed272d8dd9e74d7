"""Which weights are pruned by default: everything prunable but embeddings and output heads, by name.

Shared by `lamp-prune` (tensor names in a checkpoint) and `prune_` (``<module>.weight`` names in a model).
"""

# Not pruned unless asked for (re.search on the name): token/position embeddings and the output head.
DEFAULT_EXCLUDE = r"embed|(^|\.)(wte|wpe)\.|lm_head"
