#include "ailb/common/clock.h"
#include "ailb/common/random.h"

namespace ailb {

const Clock& SystemClock::Instance() {
  static const SystemClock* const kClock = new SystemClock();
  return *kClock;
}

std::unique_ptr<SeededRandom> SeededRandom::FromEntropy() {
  std::random_device device;
  uint64_t seed = (static_cast<uint64_t>(device()) << 32) ^ device();
  return std::make_unique<SeededRandom>(seed);
}

std::string RandomToken(RandomSource& random, size_t length) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string token(length, '0');
  for (char& c : token) c = kAlphabet[random.NextU64() % (sizeof(kAlphabet) - 1)];
  return token;
}

}  // namespace ailb
