"""liblamp_cuda (csrc/cuda): the CUDA kernels as a torch-free shared library, loaded with ctypes.

The library is built once with nvcc alone (``make cuda``, or setup.py where torch has CUDA and nvcc is
found) and loads under any torch built for the same CUDA major version: it links the CUDA runtime
statically and contains no torch symbols. It never allocates device memory; cuda_backend.py hands it
buffers from torch's caching allocator and the current stream.

Where it is looked for, in order: ``$LAMP_KERNELS_CUDA_LIB``; ``liblamp_cuda.so`` beside this file (what
``make cuda`` and setup.py produce). A missing library, a library of another ABI, or one without code for the
GPU at hand gives an error that says how to build the right one.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

ABI = 2
LIB_NAME = "liblamp_cuda.so"
BUILD_HINT = ("build it with `make cuda` (nvcc only, no GPU needed; LAMP_CUDA_ARCHS=80,90 chooses the "
              "architectures) or point LAMP_KERNELS_CUDA_LIB at a built liblamp_cuda.so")

# ctypes signatures of the C ABI (lamp_cuda.h).
_i, _p, _i64, _sz = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
SIGNATURES = {
    "lamp_cuda_abi_version": ([], _i),
    "lamp_cuda_runtime_version": ([], _i),
    "lamp_cuda_architectures": ([], ctypes.c_char_p),
    "lamp_cuda_last_error": ([], ctypes.c_char_p),
    "lamp_cuda_check_device": ([_i], _i),
    "lamp_cuda_pending_error": ([], _i),
    "lamp_cuda_make_keys": ([_i, _p, _p, _i64, _p, _p, _p, _p], _i),
    "lamp_cuda_sort_temp_bytes": ([_i, _i64, _i, ctypes.POINTER(_sz)], _i),
    "lamp_cuda_sort_pairs": ([_i, _p, _sz, _p, _p, _p, _p, _i64, _i, _p, ctypes.POINTER(_i), _p], _i),
    "lamp_cuda_scan_temp_bytes": ([_i, _i64, ctypes.POINTER(_sz)], _i),
    "lamp_cuda_scan": ([_i, _p, _p, _p, _i, _i64, _i, _p, _p], _i),
    "lamp_cuda_key_order_values": ([_i, _p, _p, _i64, _p, _p, _p], _i),
    "lamp_cuda_global_cut_workspace_bytes": ([_i, ctypes.POINTER(_sz)], _i),
    "lamp_cuda_global_cut": ([_p, _p, _i, _i64, _p, _p, _p, _p], _i),
    "lamp_cuda_histogram16": ([_p, _p, _p, _p, _i64, _i64, _p, _p], _i),
    "lamp_cuda_mask_from_cut": ([_p, _i64, _p, _p, _p], _i),
}


class CudaLibraryError(RuntimeError):
    """A call into liblamp_cuda failed; the message names the kernel or CUB call and the CUDA error."""


def candidates() -> list[Path]:
    env = os.environ.get("LAMP_KERNELS_CUDA_LIB")
    return [Path(env)] if env else [Path(__file__).resolve().parent / LIB_NAME]


class Library:
    """The loaded library: ``lib.call("lamp_cuda_scan", ...)`` raises CudaLibraryError on a nonzero status."""

    def __init__(self, path: Path):
        self.path = path
        self.dll = ctypes.CDLL(str(path))
        for name, (args, res) in SIGNATURES.items():
            fn = getattr(self.dll, name)
            fn.argtypes, fn.restype = args, res
        abi = self.dll.lamp_cuda_abi_version()
        if abi != ABI:
            raise RuntimeError(f"{path} has C ABI {abi}, this package needs {ABI}; rebuild it: {BUILD_HINT}")

    def call(self, name: str, *args) -> None:
        if name not in SIGNATURES:  # without argtypes ctypes would pass pointers as 32-bit ints
            raise KeyError(f"{name} has no declared signature in cuda_library.SIGNATURES")
        if getattr(self.dll, name)(*args) != 0:
            raise CudaLibraryError(self.dll.lamp_cuda_last_error().decode())

    def size(self, name: str, *args) -> int:
        """Calls a *_bytes function and returns the size it writes."""
        out = ctypes.c_size_t(0)
        self.call(name, *args, ctypes.byref(out))
        return out.value

    @property
    def architectures(self) -> list[int]:
        return [int(a) for a in self.dll.lamp_cuda_architectures().decode().split(";") if a.isdigit()]

    @property
    def cuda_runtime(self) -> str:
        v = self.dll.lamp_cuda_runtime_version()
        return f"{v // 1000}.{v % 1000 // 10}"

    def check_device(self, index: int) -> None:
        self.call("lamp_cuda_check_device", index)

    def pending_error(self) -> int:
        return self.dll.lamp_cuda_pending_error()


@lru_cache(maxsize=1)
def _load() -> Library | str:
    tried = []
    for path in candidates():
        if not path.exists():
            tried.append(f"{path} (missing)")
            continue
        try:
            return Library(path)
        except (OSError, RuntimeError) as exc:  # not loadable here, or another ABI
            tried.append(f"{path} ({exc})")
    return f"liblamp_cuda is not available: {'; '.join(tried)}; {BUILD_HINT}"


def load() -> Library:
    """The library, or RuntimeError saying why not and how to build it."""
    lib = _load()
    if isinstance(lib, str):
        raise RuntimeError(lib)
    return lib


def unavailable_reason() -> str | None:
    lib = _load()
    return lib if isinstance(lib, str) else None


def info() -> dict:
    """What the library is and was built for (no GPU needed)."""
    lib = load()
    return {"path": str(lib.path), "abi": ABI, "cuda_runtime": lib.cuda_runtime, "architectures": lib.architectures}
