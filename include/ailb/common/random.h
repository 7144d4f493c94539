// Injectable randomness: weighted routing and jitter use it, tests seed it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "absl/base/thread_annotations.h"

namespace ailb {

// Thread-safe: implementations must be callable from any thread.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual uint64_t NextU64() = 0;
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }
};

// A seeded Mersenne twister behind a mutex. Thread-safe.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : engine_(seed) {}
  // Seeded from std::random_device.
  static std::unique_ptr<SeededRandom> FromEntropy();
  uint64_t NextU64() override {
    std::lock_guard lock(mu_);
    return engine_();
  }

 private:
  std::mutex mu_;
  std::mt19937_64 engine_ ABSL_GUARDED_BY(mu_);
};

// `length` characters from [A-Za-z0-9], for request and completion ids.
std::string RandomToken(RandomSource& random, size_t length);

}  // namespace ailb
