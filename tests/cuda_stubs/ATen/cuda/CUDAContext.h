// Stand-in for torch's CUDA header, for a syntax check of csrc/cuda/cuda_bindings.cpp with a CPU-only torch.
#pragma once
#include <c10/core/Stream.h>
#include <cuda_runtime.h>
namespace at::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
  operator c10::Stream() const { return c10::Stream(c10::Stream::DEFAULT, c10::Device(c10::DeviceType::CUDA, 0)); }
};
CUDAStream getCurrentCUDAStream();
}  // namespace at::cuda
