// A small fixed pool of worker threads for data-parallel loops over independent ranges.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pyseqrl {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means run everything inline. 0 picks hardware_concurrency().
  // Throws std::runtime_error (after joining the threads it did start) when the threads cannot all be started.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(lo, hi) on disjoint chunks covering [0, n), in parallel; returns when all chunks are done.
  // Exceptions thrown by fn are rethrown in the caller (the first one). Not reentrant.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

 private:
  void worker_loop(int id);
  void shutdown();  // stops and joins every started worker

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 0;
  int num_chunks_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace pyseqrl
