// Stand-in for torch's CUDA header, for a syntax check of csrc/cuda/cuda_bindings.cpp with a CPU-only torch.
#pragma once
#include <c10/core/Device.h>
namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda
