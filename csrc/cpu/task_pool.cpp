// The library's thread pool (see task_pool.h).
//
// One job at a time: the caller publishes a Job, wakes the helper threads, and claims tasks itself. A helper
// registers (in_flight + 1) before it claims a task and deregisters after its last one, so once the caller
// has seen every task claimed it only waits for in_flight to drop to 0; a helper that wakes late finds no
// task left and touches nothing but its own reference to the Job. Helpers sleep on a condition variable
// between jobs: nothing spins.
//
// Fork: a child process has none of the parent's helper threads. The child handler drops the pool (leaked:
// its mutexes may have been held by threads that no longer exist); the first call in the child makes a new one.
#include "task_pool.h"

#include "float_mode.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace lamp {

namespace {

thread_local bool t_inside_task = false;

struct Job {
  const std::function<void(int64_t, int)>* fn = nullptr;
  int64_t tasks = 0;
  int workers = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int> next_worker{1};  // worker ids handed to helpers; the caller is worker 0
  std::atomic<int> in_flight{0};
  std::mutex mutex;  // guards error and the done notification
  std::condition_variable done;
  std::exception_ptr error;

  void work(int worker) {
    const DefaultFloatMode mode;  // a helper computes as the caller's binding does (float_mode.h)
    t_inside_task = true;
    in_flight.fetch_add(1);
    for (int64_t t; (t = next.fetch_add(1)) < tasks;) {
      try {
        (*fn)(t, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        next.store(tasks);
      }
    }
    t_inside_task = false;
    if (in_flight.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(mutex);
      done.notify_all();
    }
  }
};

class Pool {
 public:
  void run(int64_t tasks, int workers, const std::function<void(int64_t, int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another thread's job is running: do this one inline
      for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->tasks = tasks;
    job->workers = workers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (started_ < workers - 1) {
        std::thread(&Pool::helper, this).detach();
        ++started_;
      }
      job_ = job;
      ++generation_;
    }
    wake_.notify_all();
    job->work(0);
    {
      std::unique_lock<std::mutex> lock(job->mutex);
      job->done.wait(lock, [&] { return job->in_flight.load() == 0; });
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_.reset();  // a helper that wakes after this finds no job
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void helper() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (!job) continue;
      const int id = job->next_worker.fetch_add(1);
      if (id < job->workers) job->work(id);
    }
  }

  std::mutex busy_;   // held for the whole of a job
  std::mutex mutex_;  // guards job_, generation_, started_
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  int started_ = 0;
};

std::mutex g_create;
Pool* g_pool = nullptr;

void before_fork() { g_create.lock(); }
void after_fork_parent() { g_create.unlock(); }
void after_fork_child() {
  g_pool = nullptr;  // the parent's helpers do not exist here
  g_create.unlock();
}

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_create);
  static const bool registered = (pthread_atfork(before_fork, after_fork_parent, after_fork_child), true);
  (void)registered;
  if (!g_pool) g_pool = new Pool();  // never destroyed: helpers may outlive static destruction
  return *g_pool;
}

}  // namespace

int max_workers() { return std::max(1, at::get_num_threads()); }

void parallel_tasks(int64_t tasks, int workers, const std::function<void(int64_t task, int worker)>& fn) {
  if (tasks <= 0) return;
  workers = static_cast<int>(std::min<int64_t>(std::max(1, workers), tasks));
  if (workers == 1 || t_inside_task) {
    for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  pool().run(tasks, workers, fn);
}

int64_t chunk_count(int64_t n, int workers, int64_t min_chunk, int64_t max_chunks) {
  if (workers <= 1) return 1;
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  return std::max<int64_t>(1, std::min({by_size, int64_t{16} * workers, max_chunks}));
}

}  // namespace lamp
