import os
import signal
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run through Triton's interpreter, on CPU tensors (set before anything
# imports triton: the interpreter is chosen when kernels are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # `import tests.cases` under plain `pytest` too

def pytest_collection_finish(session):
    """nvcc for the CUDA library test overlaps the rest of the suite (see cuda_build.py)."""
    if any(item.nodeid.startswith("tests/test_cuda.py") for item in session.items):
        import cuda_build

        cuda_build.start()


# LAMP_TEST_TIMEOUT=<seconds>: each test fails with a TimeoutError after that long instead of hanging the
# run (the GPU check sets it; the machines it runs on cannot install pytest-timeout).
_TIMEOUT = int(os.environ.get("LAMP_TEST_TIMEOUT", "0"))


@pytest.fixture(autouse=True)
def _per_test_timeout(request):
    if not _TIMEOUT or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{request.node.nodeid} ran over LAMP_TEST_TIMEOUT={_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
