// Model aliases added at run time (the control plane's UpdateRoutes): a public name that is
// served by another model group.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"

namespace ailb::router {

// Thread-safe.
class ModelAliases {
 public:
  std::optional<std::string> Resolve(const std::string& model) const {
    std::lock_guard lock(mu_);
    auto it = aliases_.find(model);
    if (it == aliases_.end()) return std::nullopt;
    return it->second;
  }
  void Set(const std::string& alias, const std::string& target) {
    std::lock_guard lock(mu_);
    aliases_[alias] = target;
  }
  bool Remove(const std::string& alias) {
    std::lock_guard lock(mu_);
    return aliases_.erase(alias) > 0;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    aliases_.clear();
  }
  std::map<std::string, std::string> All() const {
    std::lock_guard lock(mu_);
    return aliases_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> aliases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
