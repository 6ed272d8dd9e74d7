import os
import sys
from pathlib import Path

import torch

# Without a GPU the Triton kernels run through Triton's interpreter, on CPU tensors (set before anything
# imports triton: the interpreter is chosen when kernels are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))
