// The floating-point mode every kernel computes in: IEEE rounding to nearest, subnormals neither flushed to zero
// nor read as zero (torch's default). A caller may have set flush-to-zero on its own thread
// (torch.set_flush_denormal(True), or a library built with -ffast-math), and the pool's helper threads keep the
// mode they were created with: kernels that recompute keys pass after pass would then see one key two ways,
// depending on which thread computed it. DefaultFloatMode sets the mode for its scope and restores the thread's
// own at the end; every binding (bindings.cpp) and every pool task list (task_pool.cpp) runs inside one.
#pragma once

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace lamp {

class DefaultFloatMode {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  // MXCSR: flush-to-zero is bit 15, denormals-are-zero bit 6, the rounding mode bits 13-14 (0: to nearest)
  DefaultFloatMode() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~(1u << 15 | 1u << 6 | 3u << 13)); }
  ~DefaultFloatMode() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#elif defined(__aarch64__)
  // FPCR: flush-to-zero is bit 24, the rounding mode bits 22-23 (0: to nearest)
  DefaultFloatMode() {
    __asm__ volatile("mrs %0, fpcr" : "=r"(saved_));
    const unsigned long mode = saved_ & ~(1ul << 24 | 3ul << 22);
    __asm__ volatile("msr fpcr, %0" : : "r"(mode));
  }
  ~DefaultFloatMode() { __asm__ volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  unsigned long saved_;
#endif
  DefaultFloatMode(const DefaultFloatMode&) = delete;
  DefaultFloatMode& operator=(const DefaultFloatMode&) = delete;
};

}  // namespace lamp
