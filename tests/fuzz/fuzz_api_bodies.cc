// The bodies of the memory, RAG, embeddings and key-administration endpoints, through the same
// BlockingApi handlers the HTTP server runs, over real stores in a temporary directory. The first
// byte picks the endpoint; the rest is the body.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "ailb/auth/key_store.h"
#include "ailb/common/clock.h"
#include "ailb/config/config.h"
#include "ailb/memory/session_memory.h"
#include "ailb/rag/embedder.h"
#include "ailb/rag/rag_store.h"
#include "ailb/server/admin_api.h"
#include "ailb/server/knowledge_api.h"

namespace {

struct Fixture {
  Fixture() {
    dir = std::filesystem::temp_directory_path() / ("ailb-fuzz-api-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    config = std::make_unique<ailb::config::ConfigStore>(std::make_shared<ailb::config::Config>());
    auto opened = ailb::rag::RagStore::Open(
        dir.string(),
        [](const ailb::rag::EmbeddingSpec& spec) {
          return ailb::rag::NewLocalEmbedder(spec.dimensions > 0 ? spec.dimensions : 64);
        },
        ailb::SystemClock::Instance());
    if (!opened.ok()) std::abort();
    rag = *std::move(opened);
    auto embedder = ailb::rag::NewLocalEmbedder(64);
    if (!embedder.ok()) std::abort();
    auto memory_opened = ailb::memory::SessionMemory::Open(dir.string(), *std::move(embedder),
                                                           ailb::SystemClock::Instance());
    if (!memory_opened.ok()) std::abort();
    memory = *std::move(memory_opened);
    knowledge = ailb::server::NewKnowledgeApi({rag.get(), memory.get(), config.get(), nullptr});
    auto keys_opened = ailb::auth::KeyStore::Open("", ailb::SystemClock::Instance());
    if (!keys_opened.ok()) std::abort();
    keys = *std::move(keys_opened);
    admin = ailb::server::NewAdminApi(keys.get());
    (void)knowledge->Handle("POST", "/v1/rag/collections",
                            R"({"name":"fuzz","embedding":{"provider":"local","dimensions":64}})");
    (void)knowledge->Handle(
        "POST", "/v1/rag/collections/fuzz/documents",
        R"({"documents":[{"id":"seed","text":"a seed document about wings and lift"}]})");
  }
  ~Fixture() {
    knowledge.reset();
    memory.reset();
    rag.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::filesystem::path dir;
  std::unique_ptr<ailb::config::ConfigStore> config;
  std::unique_ptr<ailb::rag::RagStore> rag;
  std::unique_ptr<ailb::memory::SessionMemory> memory;
  std::unique_ptr<ailb::server::BlockingApi> knowledge;
  std::unique_ptr<ailb::auth::KeyStore> keys;
  std::unique_ptr<ailb::server::BlockingApi> admin;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fixture = new Fixture();  // lives for the process, like the server's stores
  if (size < 1) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 7) {
    case 0:
      (void)fixture->knowledge->Handle("POST", "/v1/rag/collections", body);
      break;
    case 1:
      (void)fixture->knowledge->Handle("POST", "/v1/rag/collections/fuzz/documents", body);
      break;
    case 2:
      (void)fixture->knowledge->Handle("POST", "/v1/rag/collections/fuzz/query", body);
      break;
    case 3:
      (void)fixture->knowledge->Handle("POST", "/v1/embeddings", body);
      break;
    case 4:
      (void)fixture->admin->Handle("POST", "/v1/admin/keys", body);
      break;
    case 5: {
      // The body as a path: percent-decoding and routing of names and ids.
      const std::string path = "/v1/rag/collections/" + std::string(body);
      (void)fixture->knowledge->Handle("GET", path, "");
      (void)fixture->knowledge->Handle("GET", "/v1/sessions/" + std::string(body), "");
      break;
    }
    default:
      (void)fixture->knowledge->Handle("POST", "/v1/rag/collections/fuzz/query", body);
      break;
  }
  return 0;
}
