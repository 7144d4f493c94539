// A fixed pool of threads for blocking work (SQLite, index builds, embedding calls) so that
// Pistache reactors and the upstream event thread never wait on disk.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace ailb {

// Thread-safe: Submit may be called from any thread. The destructor runs queued tasks to the end
// and joins.
class WorkerPool {
 public:
  explicit WorkerPool(int threads, size_t max_queue = 10'000);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; false (and the task is not run) when the queue is full or the pool stopping.
  bool Submit(std::function<void()> task);
  size_t queued() const;

 private:
  void Run();
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const size_t max_queue_;
  std::vector<std::thread> threads_;
};

}  // namespace ailb
