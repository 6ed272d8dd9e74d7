// Host replay of the CUDA scores scan, for tests on machines without a GPU (cuda_scan_emulation.cpp).
#pragma once

#include <ATen/ATen.h>

namespace lamp {

at::Tensor cuda_scan_emulation(const at::Tensor& w, const c10::optional<at::Tensor>& mask, bool float64);

}  // namespace lamp
