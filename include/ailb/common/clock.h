// Injectable time sources, so that deadlines, cooldowns and rates are testable without sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace ailb {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// Thread-safe: implementations must be callable from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time for deadlines and durations.
  virtual SteadyTime Now() const = 0;
  // Wall-clock time for timestamps shown to people.
  virtual WallTime WallNow() const = 0;
};

// The real clocks. Thread-safe, stateless.
class SystemClock final : public Clock {
 public:
  SteadyTime Now() const override { return std::chrono::steady_clock::now(); }
  WallTime WallNow() const override { return std::chrono::system_clock::now(); }
  // A process-wide instance for code paths that have nothing to inject.
  static const Clock& Instance();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  SteadyTime Now() const override {
    std::lock_guard lock(mu_);
    return steady_;
  }
  WallTime WallNow() const override {
    std::lock_guard lock(mu_);
    return wall_;
  }
  void Advance(std::chrono::nanoseconds delta) {
    std::lock_guard lock(mu_);
    steady_ += delta;
    wall_ += std::chrono::duration_cast<WallTime::duration>(delta);
  }

 private:
  mutable std::mutex mu_;
  SteadyTime steady_ ABSL_GUARDED_BY(mu_) = SteadyTime(std::chrono::hours(1));
  WallTime wall_ ABSL_GUARDED_BY(mu_) = WallTime(std::chrono::seconds(1'700'000'000));
};

}  // namespace ailb
