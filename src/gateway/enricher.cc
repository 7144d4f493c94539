#include "ailb/gateway/enricher.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ailb/common/strings.h"
#include "spdlog/spdlog.h"

namespace ailb::gateway {
namespace {

using nlohmann::json;

// The message's role, "" when absent or not a string (never throws, unlike json::value).
std::string RoleOf(const json& message) {
  if (!message.is_object()) return "";
  auto role = message.find("role");
  return role != message.end() && role->is_string() ? role->get<std::string>() : "";
}

std::string ContentText(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (!content.is_array()) return text;
  for (const json& part : content) {
    if (!part.is_object()) continue;
    auto type = part.find("type");
    auto value = part.find("text");
    if (type != part.end() && *type == "text" && value != part.end() && value->is_string()) {
      if (!text.empty()) text += "\n";
      text += value->get<std::string>();
    }
  }
  return text;
}

const json& MessagesOf(const json& body) {
  static const json kNone = json::array();
  auto messages = body.find("messages");
  return messages != body.end() && messages->is_array() ? *messages : kNone;
}

// Inserts `message` after the leading system (or developer) messages, so the client's own
// instructions stay first.
void InsertSystemMessage(json& body, std::string text) {
  if (!body.is_object()) return;
  json& messages = body["messages"];
  if (!messages.is_array()) messages = json::array();
  size_t at = 0;
  while (at < messages.size() &&
         (RoleOf(messages[at]) == "system" || RoleOf(messages[at]) == "developer")) {
    ++at;
  }
  messages.insert(messages.begin() + static_cast<std::ptrdiff_t>(at),
                  json{{"role", "system"}, {"content", std::move(text)}});
}

class EnricherImpl final : public Enricher {
 public:
  EnricherImpl(memory::SessionMemory* memory, rag::RagStore* rag, metrics::Registry& registry)
      : memory_(memory), rag_(rag), registry_(registry) {}

  Enrichment Enrich(llm::ChatRequest& request, bool use_memory, bool use_rag) override {
    Enrichment result;
    // Memory first: it is inserted first, so retrieved context ends up nearest the question.
    std::optional<std::string> memory_text;
    if (use_memory && request.session_id) memory_text = RecallMemory(request, result);
    std::optional<std::string> rag_text;
    if (use_rag && request.rag_collection) rag_text = Retrieve(request, result);
    if (rag_text) InsertSystemMessage(request.body, *std::move(rag_text));
    if (memory_text) InsertSystemMessage(request.body, *std::move(memory_text));
    spdlog::debug("enrichment: session={} memory_chars={} collection={} chunks={} warnings={}",
                  request.session_id.value_or("-"), result.memory_chars,
                  request.rag_collection.value_or("-"), result.rag_sources.size(),
                  result.warnings.size());
    return result;
  }

  void Remember(const std::string& session_id, const json& request_messages,
                const std::string& assistant_reply) override {
    if (memory_ == nullptr) return;
    const auto started = std::chrono::steady_clock::now();
    absl::Status stored = memory_->AppendExchange(session_id, request_messages, assistant_reply);
    Count("memory", "store", stored.ok(), started);
    if (!stored.ok()) {
      spdlog::warn("session memory: storing an exchange of session {} failed: {}", session_id,
                   ToStd(stored.message()));
    }
  }

 private:
  std::optional<std::string> RecallMemory(const llm::ChatRequest& request, Enrichment& result) {
    if (memory_ == nullptr) {
      result.warnings.push_back("memory: session memory is unavailable");
      return std::nullopt;
    }
    const auto started = std::chrono::steady_clock::now();
    absl::StatusOr<std::optional<std::string>> context =
        memory_->BuildContext(*request.session_id, MessagesOf(request.body));
    Count("memory", "recall", context.ok(), started);
    if (!context.ok()) {
      result.warnings.push_back(absl::StrCat("memory: ", context.status().message()));
      spdlog::warn("session memory: recall for session {} failed: {}", *request.session_id,
                   ToStd(context.status().message()));
      return std::nullopt;
    }
    if (!context->has_value()) return std::nullopt;
    result.memory_chars = static_cast<int>((*context)->size());
    return **context;
  }

  std::optional<std::string> Retrieve(const llm::ChatRequest& request, Enrichment& result) {
    if (rag_ == nullptr) {
      result.warnings.push_back("rag: retrieval is unavailable");
      return std::nullopt;
    }
    const std::string question = LastUserText(MessagesOf(request.body));
    if (question.empty()) {
      result.warnings.push_back("rag: the request has no user message to retrieve for");
      return std::nullopt;
    }
    rag::QueryRequest query;
    query.query = question;
    query.top_k = request.rag_top_k;
    query.mode = rag::QueryMode::kHybrid;
    const auto started = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<rag::QueryHit>> hits = rag_->Query(*request.rag_collection, query);
    Count("rag", "retrieve", hits.ok(), started);
    if (!hits.ok()) {
      result.warnings.push_back(absl::StrCat("rag: ", hits.status().message()));
      spdlog::warn("rag: retrieval from collection {} failed: {}", *request.rag_collection,
                   ToStd(hits.status().message()));
      return std::nullopt;
    }
    if (hits->empty()) return std::nullopt;
    std::string text =
        "Answer using the retrieved context below when it is relevant. Cite the sources you use "
        "by their bracketed numbers.\n";
    int n = 0;
    for (const rag::QueryHit& hit : *hits) {
      absl::StrAppend(&text, "\n[", ++n, "] (source: ", hit.document_id, ", chunk ", hit.chunk_id,
                      ")\n", hit.text, "\n");
      result.rag_sources.push_back(absl::StrCat(hit.document_id, "#", hit.chunk_id));
    }
    return text;
  }

  void Count(std::string_view component, std::string_view operation, bool ok,
             std::chrono::steady_clock::time_point started) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const std::string prefix = absl::StrCat("ailb_", ToAbsl(component));
    registry_
        .GetCounter(absl::StrCat(prefix, "_operations_total"),
                    absl::StrCat("Chat-path ", ToAbsl(component), " operations by outcome"),
                    {{"operation", std::string(operation)}, {"outcome", ok ? "ok" : "error"}})
        .Increment();
    registry_
        .GetHistogram(absl::StrCat(prefix, "_operation_duration_seconds"),
                      absl::StrCat("Chat-path ", ToAbsl(component), " operation latency, seconds"),
                      {{"operation", std::string(operation)}}, metrics::LatencyBucketsSeconds())
        .Observe(seconds);
  }

  memory::SessionMemory* const memory_;
  rag::RagStore* const rag_;
  metrics::Registry& registry_;
};

}  // namespace

std::string LastUserText(const json& messages) {
  if (!messages.is_array()) return "";
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (RoleOf(*it) != "user") continue;
    auto content = it->find("content");
    return content == it->end() ? "" : ContentText(*content);
  }
  return "";
}

std::unique_ptr<Enricher> NewEnricher(memory::SessionMemory* memory, rag::RagStore* rag,
                                      metrics::Registry& registry) {
  return std::make_unique<EnricherImpl>(memory, rag, registry);
}

}  // namespace ailb::gateway
