#include "ailb/common/worker_pool.h"

#include <atomic>
#include <future>

#include "gtest/gtest.h"

namespace ailb {
namespace {

TEST(WorkerPoolTest, RunsEveryTaskOnPoolThreads) {
  std::atomic<int> done{0};
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> ran_on_caller{false};
  {
    WorkerPool pool(2);
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(pool.Submit([&] {
        if (std::this_thread::get_id() == caller) ran_on_caller = true;
        ++done;
      }));
    }
  }  // the destructor drains the queue
  EXPECT_EQ(done.load(), 100);
  EXPECT_FALSE(ran_on_caller.load());
}

TEST(WorkerPoolTest, RefusesWhenTheQueueIsFull) {
  WorkerPool pool(1, /*max_queue=*/1);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> started;
  ASSERT_TRUE(pool.Submit([&] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait();  // the worker holds the first task; the queue is empty
  EXPECT_TRUE(pool.Submit([] {}));
  EXPECT_FALSE(pool.Submit([] {}));
  EXPECT_EQ(pool.queued(), 1u);
  release.set_value();
}

}  // namespace
}  // namespace ailb
