// The library's own thread pool: every parallel region of the CPU kernels runs through parallel_tasks.
//
// Why not OpenMP: an idle OpenMP thread spins (OMP_WAIT_POLICY is read once, when the runtime loads, so a
// library cannot change it), and `schedule(static)` hands each thread a fixed share, so a thread whose core
// another process is using makes the whole region wait for it. Here idle threads block on a condition
// variable, and tasks are claimed one at a time from a shared counter: a thread that runs at half speed
// simply claims fewer tasks. Results never depend on which thread ran which task (the kernels keep
// per-task or order-independent state), so they are the same for every thread count and schedule.
#pragma once

#include <cstdint>
#include <functional>

namespace lamp {

// Threads a call may use: torch.get_num_threads() (at least 1).
int max_workers();

// Runs fn(task, worker) once for every task in [0, tasks), on at most `workers` threads (the calling thread
// included). worker is in [0, min(workers, tasks)): use it to index per-thread scratch. Runs inline on the
// calling thread when workers or tasks is 1, when called from inside a task, or while another thread's
// call holds the pool. An exception thrown by fn stops the remaining tasks and is rethrown here.
void parallel_tasks(int64_t tasks, int workers, const std::function<void(int64_t task, int worker)>& fn);

// How many chunks to cut n elements into: at least `min_chunk` elements each, and about 16 per worker
// (capped at `max_chunks`) so that a slowed-down worker costs about its share of the time.
int64_t chunk_count(int64_t n, int workers, int64_t min_chunk, int64_t max_chunks = 64);

// [begin, end) of chunk c out of `chunks` over n elements.
inline void chunk_range(int64_t n, int64_t chunks, int64_t c, int64_t& begin, int64_t& end) {
  const int64_t per = (n + chunks - 1) / chunks;
  begin = per * c < n ? per * c : n;
  end = begin + per < n ? begin + per : n;
}

}  // namespace lamp
