// Adds conversation memory and retrieved documents to a chat request before it is routed, and
// stores completed exchanges for their session. Every failure here is soft: the request goes on
// without the missing context, and the failure is logged, counted and reported in a header.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ailb/llm/chat.h"
#include "ailb/memory/session_memory.h"
#include "ailb/metrics/registry.h"
#include "ailb/rag/rag_store.h"
#include "nlohmann/json.hpp"

namespace ailb::gateway {

struct Enrichment {
  // The chunks injected, as "<document_id>#<chunk_id>", best first (header x-ailb-rag-sources).
  std::vector<std::string> rag_sources;
  int memory_chars = 0;  // size of the injected memory text (0: none)
  // Soft failures, for the x-ailb-warning header and the log.
  std::vector<std::string> warnings;
};

// Thread-safe. Blocking (SQLite, embedders): call from worker threads only.
class Enricher {
 public:
  virtual ~Enricher() = default;
  // Inserts a memory system message (when `use_memory` and the request has a session_id) and a
  // retrieved-context system message (when `use_rag` and the request names a rag_collection)
  // after the request's leading system messages. Never fails.
  virtual Enrichment Enrich(llm::ChatRequest& request, bool use_memory, bool use_rag) = 0;
  // Stores one completed exchange for `session_id` (soft failure: logged and counted).
  virtual void Remember(const std::string& session_id, const nlohmann::json& request_messages,
                        const std::string& assistant_reply) = 0;
};

// Either store may be null (disabled or failed to open): its part is then skipped with a warning
// when a request asks for it.
std::unique_ptr<Enricher> NewEnricher(memory::SessionMemory* memory, rag::RagStore* rag,
                                      metrics::Registry& registry);

// The text of the last user message of an OpenAI messages array ("" when none); content parts
// of type text are joined with newlines.
std::string LastUserText(const nlohmann::json& messages);

}  // namespace ailb::gateway
