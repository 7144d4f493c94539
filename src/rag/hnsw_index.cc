// VectorIndex over hnswlib 0.6.2. This is the only translation unit that includes hnswlib: the
// library defines non-inline globals in its headers, so a second includer fails to link.
//
// hnswlib throws std::runtime_error (and std::bad_alloc); every call into it is wrapped here so
// no exception leaves this file. Its structures are not safe to search while they change, so a
// reader/writer lock orders them: searches (and saves, which only read) share it, Add and Remove
// take it exclusively, ahead of readers that arrive after them.
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/rag/vector_index.h"

// hnswlib 0.6.2's SSE path prefetches through the id one past the end of a full link list,
// reading up to 3 bytes beyond a block it malloc'd at 4k+1 bytes. glibc's 8-byte rounding keeps
// that inside the allocation, but AddressSanitizer rightly flags it; sanitized builds use the
// scalar path, which has no such read.
#if defined(__SANITIZE_ADDRESS__)
#define NO_MANUAL_VECTORIZATION
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_MANUAL_VECTORIZATION
#endif
#endif
#include <hnswlib/hnswlib.h>

namespace ailb::rag {
namespace {

using Hnsw = hnswlib::HierarchicalNSW<float>;

static_assert(sizeof(hnswlib::labeltype) == sizeof(uint64_t), "labels are 64-bit rowids");
static_assert(sizeof(size_t) == 8 && sizeof(int) == 4 && sizeof(double) == 8 &&
                  sizeof(hnswlib::tableint) == 4 && sizeof(hnswlib::linklistsizeint) == 4,
              "the file layout below assumes LP64");

// hnswlib stores internal ids as 32-bit unsigned (with -1 as "no entry point") and casts some to
// int while searching, so an index stays below 2^31 elements.
constexpr size_t kMaxElements = size_t{1} << 31;
// hnswlib caps M here (and warns on stderr); 2*M link slots must fit its 16-bit list counts.
constexpr size_t kMaxM = 10000;
// Levels are drawn with P(level >= L) = M^-L; 64 is beyond reach for any M >= 2 and any size,
// so a larger value can only come from a damaged file.
constexpr int kMaxLevel = 64;
constexpr size_t kMaxEfConstruction = size_t{1} << 20;
constexpr int kMaxDimensions = 1 << 16;

// The header saveIndex writes, in order: offsetLevel0_, max_elements_, cur_element_count,
// size_data_per_element_, label_offset_, offsetData_ (size_t each), maxlevel_ (int),
// enterpoint_node_ (tableint), maxM_, maxM0_, M_ (size_t), mult_ (double), ef_construction_.
constexpr size_t kHeaderBytes = 6 * 8 + 4 + 4 + 3 * 8 + 8 + 8;

struct FileHeader {
  size_t offset_level0;
  size_t max_elements;
  size_t element_count;
  size_t size_data_per_element;
  size_t label_offset;
  size_t offset_data;
  int max_level;
  uint32_t entry_point;
  size_t max_m;
  size_t max_m0;
  size_t m;
  double mult;
  size_t ef_construction;
};

FileHeader ParseHeader(const unsigned char* bytes) {
  FileHeader h;
  size_t at = 0;
  const auto take = [&](auto& field) {
    std::memcpy(&field, bytes + at, sizeof(field));
    at += sizeof(field);
  };
  take(h.offset_level0);
  take(h.max_elements);
  take(h.element_count);
  take(h.size_data_per_element);
  take(h.label_offset);
  take(h.offset_data);
  take(h.max_level);
  take(h.entry_point);
  take(h.max_m);
  take(h.max_m0);
  take(h.m);
  take(h.mult);
  take(h.ef_construction);
  return h;
}

// Checks everything loadIndex would otherwise trust before it allocates or reads: a layout that
// matches `dimensions` and a file long enough for the element count it claims.
absl::Status ValidateHeader(const FileHeader& h, size_t file_size, int dimensions,
                            const std::string& path) {
  const auto corrupt = [&path](std::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "vector index ", path, " is corrupt: ", absl::string_view(why.data(), why.size())));
  };
  if (h.m < 2 || h.m > kMaxM || h.max_m != h.m || h.max_m0 != 2 * h.m) {
    return corrupt(absl::StrCat("bad M (M=", h.m, ", maxM=", h.max_m, ", maxM0=", h.max_m0, ")"));
  }
  const double expected_mult = 1.0 / std::log(static_cast<double>(h.m));
  if (!std::isfinite(h.mult) || std::fabs(h.mult - expected_mult) > 1e-9 * expected_mult) {
    return corrupt("bad level multiplier");
  }
  if (h.ef_construction < h.m || h.ef_construction > kMaxEfConstruction) {
    return corrupt(absl::StrCat("bad ef_construction ", h.ef_construction));
  }
  const size_t links_level0 =
      h.max_m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  if (h.offset_level0 != 0 || h.offset_data != links_level0 || h.label_offset < h.offset_data ||
      h.size_data_per_element != h.label_offset + sizeof(hnswlib::labeltype)) {
    return corrupt("inconsistent element layout");
  }
  const size_t vector_bytes = h.label_offset - h.offset_data;
  if (vector_bytes != static_cast<size_t>(dimensions) * sizeof(float)) {
    if (vector_bytes % sizeof(float) != 0) return corrupt("inconsistent element layout");
    return absl::DataLossError(absl::StrCat("vector index ", path, " holds ",
                                            vector_bytes / sizeof(float),
                                            "-dimensional vectors, expected ", dimensions));
  }
  // Every element takes its level-0 block plus a 4-byte upper-level size in the file; dividing
  // (rather than multiplying the claimed count) cannot overflow.
  const size_t per_element_min = h.size_data_per_element + sizeof(uint32_t);
  if (h.element_count > (file_size - kHeaderBytes) / per_element_min) {
    return corrupt(absl::StrCat("truncated: ", h.element_count, " elements claimed, file has ",
                                file_size, " bytes"));
  }
  if (h.element_count >= kMaxElements) return corrupt("too many elements");
  if (h.element_count == 0) {
    if (h.max_level != -1 || h.entry_point != std::numeric_limits<uint32_t>::max()) {
      return corrupt("empty index with an entry point");
    }
  } else if (h.max_level < 0 || h.max_level > kMaxLevel || h.entry_point >= h.element_count) {
    return corrupt("bad entry point or level");
  }
  return absl::OkStatus();
}

// What saveIndex writes for `index`, to detect a short write: it uses an unchecked ofstream.
size_t SerializedSize(const Hnsw& index) {
  size_t size = kHeaderBytes + index.cur_element_count * index.size_data_per_element_;
  for (size_t i = 0; i < index.cur_element_count; ++i) {
    size += sizeof(uint32_t);
    const int level = index.element_levels_[i];
    if (level > 0) size += index.size_links_per_element_ * static_cast<size_t>(level);
  }
  return size;
}

// Checks the loaded graph so that no search or insert can follow a link out of bounds: list
// sizes within M, neighbour ids within the element count, upper-level neighbours that exist on
// that level, unique labels, and an entry point on the top level. Runs on memory, after load.
absl::Status ValidateGraph(const Hnsw& index, const FileHeader& h, size_t file_size,
                           const std::string& path) {
  const auto corrupt = [&path](std::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "vector index ", path, " is corrupt: ", absl::string_view(why.data(), why.size())));
  };
  // The file may not have been the one validated if it was replaced in between (only without
  // /proc); the header must still match.
  if (index.cur_element_count != h.element_count ||
      index.size_data_per_element_ != h.size_data_per_element ||
      index.label_offset_ != h.label_offset || index.offsetData_ != h.offset_data ||
      index.maxM_ != h.max_m || index.maxM0_ != h.max_m0 || index.maxlevel_ != h.max_level ||
      index.enterpoint_node_ != h.entry_point) {
    return corrupt("changed while loading");
  }
  const size_t count = index.cur_element_count;
  if (index.label_lookup_.size() != count) return corrupt("duplicate labels");
  for (size_t i = 0; i < count; ++i) {
    const auto id = static_cast<hnswlib::tableint>(i);
    const int level = index.element_levels_[i];
    if (level < 0 || level > index.maxlevel_) return corrupt("element above the top level");
    for (int l = 0; l <= level; ++l) {
      hnswlib::linklistsizeint* list = index.get_linklist_at_level(id, l);
      const size_t size = index.getListCount(list);
      if (size > (l == 0 ? index.maxM0_ : index.maxM_)) return corrupt("oversized link list");
      const auto* neighbours = reinterpret_cast<const hnswlib::tableint*>(list + 1);
      for (size_t j = 0; j < size; ++j) {
        if (neighbours[j] >= count) return corrupt("link to a missing element");
        if (index.element_levels_[neighbours[j]] < l) return corrupt("link to a missing level");
      }
    }
  }
  if (count > 0 && index.element_levels_[index.enterpoint_node_] != index.maxlevel_) {
    return corrupt("entry point is not on the top level");
  }
  // loadIndex rounds each upper-level block down to whole levels; a file whose size differs
  // from what the loaded graph serialises to had blocks of odd sizes.
  if (SerializedSize(index) != file_size) return corrupt("odd-sized link blocks");
  return absl::OkStatus();
}

absl::Status ErrnoError(int error, std::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(error,
                             absl::StrCat(absl::string_view(what.data(), what.size()), " ", path));
}

// Owns a file descriptor.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting what close(2) says (it can carry a deferred write error).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Removes a temporary file unless the save got as far as renaming it.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

absl::Status ReadFully(int fd, void* buffer, size_t size, size_t offset, const std::string& path) {
  auto* out = static_cast<unsigned char*>(buffer);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat("vector index ", path, " is truncated"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

absl::StatusOr<std::string> ChecksumFd(int fd, const std::string& path) {
  std::vector<unsigned char> buffer(size_t{1} << 20);
  uint64_t hash = kFnvOffsetBasis;
  off_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", path);
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      hash ^= buffer[static_cast<size_t>(i)];
      hash *= kFnvPrime;
    }
    offset += n;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i) {
    hex[static_cast<size_t>(i)] = kHex[hash & 0xf];
    hash >>= 4;
  }
  return hex;
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A name no other saver (thread or process) is using: pid, time and a counter, with O_EXCL
// catching the rest.
std::string TempSuffix(int attempt) {
  static std::atomic<uint64_t> counter{0};
  uint64_t x = static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ULL ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
               (counter.fetch_add(1, std::memory_order_relaxed) << 32) ^
               static_cast<uint64_t>(attempt);
  // splitmix64 finaliser: spreads the bits so names do not look sequential.
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i) {
    hex[static_cast<size_t>(i)] = kHex[x & 0xf];
    x >>= 4;
  }
  return hex;
}

absl::Status ValidateOptions(int dimensions, const HnswOptions& options) {
  if (dimensions <= 0 || dimensions > kMaxDimensions) {
    return absl::InvalidArgumentError(absl::StrCat("bad vector dimensions ", dimensions));
  }
  if (options.m < 2 || options.m > kMaxM) {
    return absl::InvalidArgumentError(absl::StrCat("HNSW M must be in [2, ", kMaxM, "]"));
  }
  if (options.ef_construction == 0 || options.ef_construction > kMaxEfConstruction ||
      options.ef_search == 0) {
    return absl::InvalidArgumentError("HNSW ef_construction and ef_search must be positive");
  }
  if (options.max_elements >= kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("HNSW max_elements must be below ", kMaxElements));
  }
  return absl::OkStatus();
}

// A reader/writer lock that lets a waiting writer in ahead of new readers. std::shared_mutex
// (glibc's default rwlock) prefers readers: with searches arriving back to back, an Add waited
// forever in the concurrency test. Not recursive: a thread holding it shared must not take it
// shared again (that deadlocks once a writer waits); nothing here does. A pthread rwlock rather
// than absl::Mutex because ThreadSanitizer understands it without an instrumented Abseil.
class ABSL_LOCKABLE WriterPriorityMutex {
 public:
  WriterPriorityMutex() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
  }
  WriterPriorityMutex(const WriterPriorityMutex&) = delete;
  WriterPriorityMutex& operator=(const WriterPriorityMutex&) = delete;
  ~WriterPriorityMutex() { pthread_rwlock_destroy(&lock_); }

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_rwlock_wrlock(&lock_); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { pthread_rwlock_rdlock(&lock_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

class ABSL_SCOPED_LOCKABLE WriterLock {
 public:
  explicit WriterLock(WriterPriorityMutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_.Lock();
  }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;
  ~WriterLock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }

 private:
  WriterPriorityMutex& mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderLock {
 public:
  explicit ReaderLock(WriterPriorityMutex& mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_.ReaderLock();
  }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;
  ~ReaderLock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }

 private:
  WriterPriorityMutex& mu_;
};

class HnswIndex final : public VectorIndex {
 public:
  HnswIndex(int dimensions, std::unique_ptr<hnswlib::InnerProductSpace> space,
            std::unique_ptr<Hnsw> index, size_t deleted, size_t ef_search)
      : dimensions_(dimensions),
        space_(std::move(space)),
        index_(std::move(index)),
        deleted_(deleted) {
    // setEf is index-wide and searchKnn reads it unsynchronised, so it is set once, here, before
    // any other thread can see the index; searchKnn itself widens it to k when k is larger.
    index_->setEf(ef_search);
    // Neither hnswlib constructor initialises its statistics counters, which searches increment.
    index_->metric_distance_computations = 0;
    index_->metric_hops = 0;
  }

  int dimensions() const override { return dimensions_; }

  absl::Status Add(uint64_t label, std::span<const float> vector) override {
    if (vector.size() != static_cast<size_t>(dimensions_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("vector has ", vector.size(), " dimensions, the index has ", dimensions_));
    }
    for (const float v : vector) {
      // One NaN would poison every distance comparison that touches it.
      if (!std::isfinite(v)) return absl::InvalidArgumentError("vector has a non-finite value");
    }
    WriterLock lock(mu_);
    if (poisoned_) return PoisonedError();
    const auto existing = index_->label_lookup_.find(label);
    const bool revived =
        existing != index_->label_lookup_.end() && index_->isMarkedDeleted(existing->second);
    if (existing == index_->label_lookup_.end() &&
        index_->cur_element_count >= index_->max_elements_) {
      const size_t capacity = index_->max_elements_;
      if (capacity >= kMaxElements - 1) {
        return absl::ResourceExhaustedError("vector index is at its maximum size");
      }
      const size_t grown = std::min(std::max<size_t>(2 * capacity, 16), kMaxElements - 1);
      try {
        index_->resizeIndex(grown);
      } catch (const std::exception& e) {
        // resizeIndex deletes its visited-list pool before allocating the new one, so a failure
        // can leave a dangling pointer that the next search would use.
        poisoned_ = true;
        return absl::ResourceExhaustedError(absl::StrCat("growing the vector index to ", grown,
                                                         " elements: ", e.what(),
                                                         "; the index must be rebuilt"));
      }
    }
    try {
      // With a known label hnswlib 0.6.2 clears its tombstone and updates the vector and its
      // links in place (HierarchicalNSW::addPoint -> updatePoint).
      index_->addPoint(vector.data(), label);
    } catch (const std::exception& e) {
      // The graph may be half-linked now; searching it could read out of bounds.
      poisoned_ = true;
      return absl::InternalError(
          absl::StrCat("adding to the vector index: ", e.what(), "; the index must be rebuilt"));
    }
    if (revived) --deleted_;
    return absl::OkStatus();
  }

  void Remove(uint64_t label) override {
    WriterLock lock(mu_);
    if (poisoned_) return;
    const auto it = index_->label_lookup_.find(label);
    if (it == index_->label_lookup_.end() || index_->isMarkedDeleted(it->second)) return;
    // Cannot throw: the element exists and is live, the only two conditions hnswlib checks.
    index_->markDeletedInternal(it->second);
    ++deleted_;
  }

  std::vector<SearchHit> Search(std::span<const float> query, size_t k) const override {
    std::vector<SearchHit> hits;
    if (query.size() != static_cast<size_t>(dimensions_) || k == 0) return hits;
    ReaderLock lock(mu_);
    if (poisoned_) return hits;
    // hnswlib returns fewer than k when k exceeds the live elements; asking for more only
    // widens the search.
    k = std::min(k, index_->cur_element_count - deleted_);
    if (k == 0) return hits;
    std::priority_queue<std::pair<float, hnswlib::labeltype>> found;
    try {
      found = index_->searchKnn(query.data(), k);
    } catch (const std::exception&) {
      // Only a corrupt graph makes searchKnn throw; Load validates against that, so treat it as
      // "nothing found" rather than failing the caller's request.
      return hits;
    }
    hits.reserve(found.size());
    while (!found.empty()) {
      const auto [distance, label] = found.top();
      found.pop();
      const auto it = index_->label_lookup_.find(label);
      if (it == index_->label_lookup_.end() || index_->isMarkedDeleted(it->second)) continue;
      // InnerProductSpace's distance is 1 - dot.
      hits.push_back(SearchHit{label, 1.0f - distance});
    }
    std::sort(hits.begin(), hits.end(), [](const SearchHit& a, const SearchHit& b) {
      return a.score != b.score ? a.score > b.score : a.label < b.label;
    });
    return hits;
  }

  bool Contains(uint64_t label) const override {
    ReaderLock lock(mu_);
    const auto it = index_->label_lookup_.find(label);
    return it != index_->label_lookup_.end() && !index_->isMarkedDeleted(it->second);
  }

  size_t live_count() const override {
    ReaderLock lock(mu_);
    return index_->cur_element_count - deleted_;
  }

  size_t deleted_count() const override {
    ReaderLock lock(mu_);
    return deleted_;
  }

  absl::StatusOr<std::string> Save(const std::string& path) const override {
    // One save at a time per index, so two saves to the same path cannot interleave their
    // renames and return a checksum of the file that lost.
    std::lock_guard save_lock(save_mu_);

    std::string temp;
    int fd = -1;
    for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
      temp = absl::StrCat(path, ".tmp.", TempSuffix(attempt));
      fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0 && errno != EEXIST) return ErrnoError(errno, "create", temp);
    }
    if (fd < 0) return absl::InternalError(absl::StrCat("no free temporary name for ", path));
    ScopedFd file(fd);
    TempFileGuard cleanup(temp);

    size_t expected_size = 0;
    {
      // Shared is enough: saveIndex only reads the graph (it is non-const only by omission), and
      // searches, the other shared holders, only read it too. Writers wait.
      ReaderLock lock(mu_);
      if (poisoned_) return PoisonedError();
      expected_size = SerializedSize(*index_);
      try {
        index_->saveIndex(temp);
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("writing vector index ", temp, ": ", e.what()));
      }
    }
    struct stat st;
    if (::fstat(file.get(), &st) != 0) return ErrnoError(errno, "stat", temp);
    if (static_cast<size_t>(st.st_size) != expected_size) {
      // saveIndex ignores write errors; a short file is the only sign of a full disk.
      return absl::ResourceExhaustedError(absl::StrCat("writing vector index ", temp, ": wrote ",
                                                       st.st_size, " of ", expected_size,
                                                       " bytes (disk full?)"));
    }
    // fsync is per file, so this descriptor covers what saveIndex's own stream wrote.
    if (::fsync(file.get()) != 0) return ErrnoError(errno, "fsync", temp);
    AILB_ASSIGN_OR_RETURN(std::string checksum, ChecksumFd(file.get(), temp));
    if (file.Close() != 0) return ErrnoError(errno, "close", temp);

    if (::rename(temp.c_str(), path.c_str()) != 0) return ErrnoError(errno, "rename to", path);
    cleanup.Release();
    // The rename is durable only once the directory entry is.
    const std::string dir = ParentDirectory(path);
    ScopedFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() < 0) return ErrnoError(errno, "open directory", dir);
    if (::fsync(dir_fd.get()) != 0) return ErrnoError(errno, "fsync directory", dir);
    return checksum;
  }

 private:
  static absl::Status PoisonedError() {
    return absl::FailedPreconditionError(
        "vector index is unusable after an earlier failure; rebuild it");
  }

  const int dimensions_;
  // Declared before index_ so it is destroyed after it: the graph keeps pointers to the space's
  // distance function parameters.
  const std::unique_ptr<hnswlib::InnerProductSpace> space_;
  mutable WriterPriorityMutex mu_;
  const std::unique_ptr<Hnsw> index_ ABSL_PT_GUARDED_BY(mu_);
  // Our own count: hnswlib's num_deleted_ is garbage after loadIndex until recounted.
  size_t deleted_ ABSL_GUARDED_BY(mu_) = 0;
  // Set when an insert or a resize failed half-way; from then on nothing but the destructor
  // touches the graph.
  bool poisoned_ ABSL_GUARDED_BY(mu_) = false;
  mutable std::mutex save_mu_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Create(int dimensions,
                                                                 HnswOptions options) {
  AILB_RETURN_IF_ERROR(ValidateOptions(dimensions, options));
  auto space = std::make_unique<hnswlib::InnerProductSpace>(static_cast<size_t>(dimensions));
  std::unique_ptr<Hnsw> index;
  try {
    index = std::make_unique<Hnsw>(space.get(), std::max<size_t>(options.max_elements, 1),
                                   options.m, options.ef_construction);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("creating vector index: ", e.what()));
  }
  return std::make_unique<HnswIndex>(dimensions, std::move(space), std::move(index), 0,
                                     options.ef_search);
}

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Load(const std::string& path,
                                                               int dimensions,
                                                               HnswOptions options) {
  AILB_RETURN_IF_ERROR(ValidateOptions(dimensions, options));
  ScopedFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) return ErrnoError(errno, "open vector index", path);
  struct stat st;
  if (::fstat(file.get(), &st) != 0) return ErrnoError(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("vector index ", path, " is not a file"));
  }
  const auto file_size = static_cast<size_t>(st.st_size);
  if (file_size < kHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("vector index ", path, " is truncated (", file_size, " bytes)"));
  }
  unsigned char header_bytes[kHeaderBytes];
  AILB_RETURN_IF_ERROR(ReadFully(file.get(), header_bytes, kHeaderBytes, 0, path));
  const FileHeader header = ParseHeader(header_bytes);
  AILB_RETURN_IF_ERROR(ValidateHeader(header, file_size, dimensions, path));

  // loadIndex opens by name. Through /proc it reopens the very file validated above even if
  // `path` is replaced meanwhile; the header is compared again after loading either way.
  std::string source = absl::StrCat("/proc/self/fd/", file.get());
  if (ScopedFd probe(::open(source.c_str(), O_RDONLY | O_CLOEXEC)); probe.get() < 0) {
    source = path;
  }
  auto space = std::make_unique<hnswlib::InnerProductSpace>(static_cast<size_t>(dimensions));
  // At least the validated count, so loadIndex never sizes its arrays from the file's own
  // (unchecked) max_elements field.
  const size_t capacity = std::max({header.element_count, options.max_elements, size_t{1}});
  std::unique_ptr<Hnsw> index;
  try {
    index = std::make_unique<Hnsw>(space.get(), source, false, capacity);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("loading vector index ", path, ": out of memory"));
  } catch (const std::exception& e) {
    // hnswlib reports a failed malloc as a runtime_error with this prefix.
    if (std::strncmp(e.what(), "Not enough memory", 17) == 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("loading vector index ", path, ": ", e.what()));
    }
    return absl::DataLossError(absl::StrCat("vector index ", path, " is corrupt: ", e.what()));
  }
  // A block smaller than one level loads as level 0 with its buffer allocated, which the
  // destructor would never free.
  for (size_t i = 0; i < index->cur_element_count; ++i) {
    if (index->element_levels_[i] == 0 && index->linkLists_[i] != nullptr) {
      std::free(index->linkLists_[i]);
      index->linkLists_[i] = nullptr;
    }
  }
  AILB_RETURN_IF_ERROR(ValidateGraph(*index, header, file_size, path));
  size_t deleted = 0;
  for (size_t i = 0; i < index->cur_element_count; ++i) {
    if (index->isMarkedDeleted(static_cast<hnswlib::tableint>(i))) ++deleted;
  }
  // loadIndex adds to num_deleted_ without initialising it; searchKnn skips tombstones only
  // when it is non-zero.
  index->num_deleted_ = deleted;
  return std::make_unique<HnswIndex>(dimensions, std::move(space), std::move(index), deleted,
                                     options.ef_search);
}

absl::StatusOr<std::string> FileChecksum(const std::string& path) {
  ScopedFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) return ErrnoError(errno, "open", path);
  return ChecksumFd(file.get(), path);
}

std::vector<SearchHit> ExactSearch(std::span<const float> vectors, std::span<const uint64_t> labels,
                                   int dimensions, std::span<const float> query, size_t k) {
  std::vector<SearchHit> hits;
  if (dimensions <= 0 || query.size() != static_cast<size_t>(dimensions) || k == 0) return hits;
  const auto dim = static_cast<size_t>(dimensions);
  const size_t count = std::min(labels.size(), vectors.size() / dim);
  k = std::min(k, count);
  if (k == 0) return hits;
  // Better first: higher score, then lower label so equal scores come out in a stable order.
  const auto better = [](const SearchHit& a, const SearchHit& b) {
    return a.score != b.score ? a.score > b.score : a.label < b.label;
  };
  // A heap of the best k seen so far with the worst on top: O(n log k), k << n typically.
  hits.reserve(k);
  for (size_t i = 0; i < count; ++i) {
    const float* v = vectors.data() + i * dim;
    float dot = 0;
    for (size_t d = 0; d < dim; ++d) dot += v[d] * query[d];
    const SearchHit hit{labels[i], dot};
    if (hits.size() < k) {
      hits.push_back(hit);
      std::push_heap(hits.begin(), hits.end(), better);
    } else if (better(hit, hits.front())) {
      std::pop_heap(hits.begin(), hits.end(), better);
      hits.back() = hit;
      std::push_heap(hits.begin(), hits.end(), better);
    }
  }
  std::sort_heap(hits.begin(), hits.end(), better);
  return hits;
}

}  // namespace ailb::rag
