// Remembers which deployment last served each session, so the session's next request can go
// there while it is healthy. Bounded: the least recently used sessions are forgotten first.
#pragma once

#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"

namespace ailb::router {

// Thread-safe.
class SessionAffinity {
 public:
  explicit SessionAffinity(size_t capacity = 100'000) : capacity_(capacity) {}

  void Remember(const std::string& session, const std::string& deployment_id) {
    std::lock_guard lock(mu_);
    auto it = index_.find(session);
    if (it != index_.end()) {
      it->second->second = deployment_id;
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.emplace_front(session, deployment_id);
    index_[session] = order_.begin();
    if (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }

  std::optional<std::string> Lookup(const std::string& session) const {
    std::lock_guard lock(mu_);
    auto it = index_.find(session);
    if (it == index_.end()) return std::nullopt;
    return it->second->second;
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return order_.size();
  }

 private:
  using Entry = std::pair<std::string, std::string>;  // session, deployment id
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> order_ ABSL_GUARDED_BY(mu_);  // most recent first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ailb::router
