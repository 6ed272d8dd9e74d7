// LAMP_VECTOR_CLONES: compile a function twice on x86-64 GCC -- for AVX2 and for the baseline -- with the
// CPU's features choosing at load time (an ifunc). For the short loops the compiler vectorises: AVX2 runs them
// 8 wide (or 16) where the baseline runs 4, and has the unsigned min/max and 32-bit products SSE2 lacks. Both
// clones give the same results: integer ops, and IEEE float ops without contraction (-ffp-contract=off).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LAMP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LAMP_VECTOR_CLONES
#endif
