#include "ailb/server/knowledge_api.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/llm/chat.h"
#include "ailb/rag/chunker.h"
#include "ailb/rag/embedder.h"

namespace ailb::server {
namespace {

using nlohmann::json;
using Reply = BlockingApi::Reply;

constexpr std::string_view kCollectionsPath = "/v1/rag/collections";
constexpr std::string_view kSessionsPath = "/v1/sessions/";
constexpr std::string_view kEmbeddingsPath = "/v1/embeddings";
constexpr size_t kMaxEmbeddingInputs = 2048;
constexpr int kDefaultLocalDimensions = 384;

Reply JsonReply(int status, const json& body) { return Reply{status, llm::DumpJson(body)}; }

// The methods `path` supports, as an Allow header lists them (RFC 9110); empty for a path that
// is no resource of this API (404).
std::string_view AllowedMethods(std::string_view path) {
  if (path == kEmbeddingsPath || path == "/embeddings") return "POST";
  if (absl::StartsWith(ToAbsl(path), ToAbsl(kSessionsPath))) {
    return path.size() > kSessionsPath.size() ? "GET, DELETE" : "";
  }
  if (!absl::StartsWith(ToAbsl(path), ToAbsl(kCollectionsPath))) return "";
  std::string_view rest = path.substr(kCollectionsPath.size());
  if (rest.empty()) return "GET, POST";
  if (rest.front() != '/') return "";
  rest.remove_prefix(1);
  if (rest.empty()) return "GET, POST";
  // The same split as Collections(): /{name}[/documents[/{id...}] | /query]
  const std::vector<absl::string_view> parts = absl::StrSplit(ToAbsl(rest), '/');
  if (parts.size() == 1) return "GET, DELETE";
  if (parts[1] == "documents") return parts.size() == 2 ? "POST" : "DELETE";
  if (parts[1] == "query" && parts.size() == 2) return "POST";
  return "";
}

bool MethodAllowed(std::string_view method, std::string_view allowed) {
  for (absl::string_view candidate : absl::StrSplit(ToAbsl(allowed), ", ")) {
    if (candidate == ToAbsl(method)) return true;
  }
  return false;
}

// 405 with the Allow header of `path`.
absl::Status WrongMethod(std::string_view method, std::string_view path) {
  const std::string_view allowed = AllowedMethods(path);
  return MethodNotAllowedError(absl::StrCat(ToAbsl(method), " is not allowed on ", ToAbsl(path),
                                            " (use ", ToAbsl(allowed), ")"),
                               allowed);
}

// Reads an optional field of `object` with the expected JSON type; InvalidArgument naming it
// otherwise.
template <typename T>
absl::Status Read(const json& object, std::string_view key, std::string_view param, T* out) {
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string())
      return InvalidFieldError(param, absl::StrCat("'", ToAbsl(param), "' must be a string"));
    *out = it->get<std::string>();
  } else if constexpr (std::is_same_v<T, int>) {
    if (!it->is_number_integer() || it->get<int64_t>() < INT32_MIN ||
        it->get<int64_t>() > INT32_MAX) {
      return InvalidFieldError(param, absl::StrCat("'", ToAbsl(param), "' must be an integer"));
    }
    *out = static_cast<int>(it->get<int64_t>());
  } else {
    static_assert(sizeof(T) == 0, "unsupported field type");
  }
  return absl::OkStatus();
}

absl::StatusOr<const json*> ObjectField(const json& object, std::string_view key) {
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return nullptr;
  if (!it->is_object()) {
    return InvalidFieldError(key, absl::StrCat("'", ToAbsl(key), "' must be an object"));
  }
  return &*it;
}

json CollectionJson(const rag::CollectionInfo& info) {
  return {
      {"object", "rag.collection"},
      {"name", info.spec.name},
      {"embedding",
       {{"provider", info.spec.embedding.provider},
        {"model", info.spec.embedding.model},
        {"dimensions", info.spec.embedding.dimensions}}},
      {"chunking",
       {{"max_tokens", info.spec.chunking.max_tokens}, {"overlap", info.spec.chunking.overlap}}},
      {"document_count", info.document_count},
      {"chunk_count", info.chunk_count},
      {"created_at", info.created_at}};
}

absl::StatusOr<rag::CollectionSpec> ParseCollectionSpec(const json& body) {
  rag::CollectionSpec spec;
  auto name = body.find("name");
  if (name == body.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return InvalidFieldError("name", "'name' is required and must be a non-empty string");
  }
  spec.name = name->get<std::string>();
  AILB_ASSIGN_OR_RETURN(const json* embedding, ObjectField(body, "embedding"));
  if (embedding != nullptr) {
    AILB_RETURN_IF_ERROR(
        Read(*embedding, "provider", "embedding.provider", &spec.embedding.provider));
    spec.embedding.provider = absl::AsciiStrToLower(spec.embedding.provider);
    AILB_RETURN_IF_ERROR(Read(*embedding, "model", "embedding.model", &spec.embedding.model));
    AILB_RETURN_IF_ERROR(
        Read(*embedding, "dimensions", "embedding.dimensions", &spec.embedding.dimensions));
  }
  AILB_ASSIGN_OR_RETURN(const json* chunking, ObjectField(body, "chunking"));
  if (chunking != nullptr) {
    AILB_RETURN_IF_ERROR(
        Read(*chunking, "max_tokens", "chunking.max_tokens", &spec.chunking.max_tokens));
    AILB_RETURN_IF_ERROR(Read(*chunking, "overlap", "chunking.overlap", &spec.chunking.overlap));
  }
  return spec;
}

absl::StatusOr<std::vector<rag::DocumentInput>> ParseDocuments(const json& body) {
  auto documents = body.find("documents");
  if (documents == body.end() || !documents->is_array()) {
    return InvalidFieldError("documents", "'documents' is required and must be an array");
  }
  std::vector<rag::DocumentInput> out;
  out.reserve(documents->size());
  for (size_t i = 0; i < documents->size(); ++i) {
    const json& item = (*documents)[i];
    const std::string where = absl::StrCat("documents[", i, "]");
    if (!item.is_object())
      return InvalidFieldError(where, absl::StrCat(where, " must be an object"));
    rag::DocumentInput document;
    auto id = item.find("id");
    if (id != item.end() && id->is_number_integer()) {
      document.id = std::to_string(id->get<int64_t>());  // numeric ids are common in datasets
    } else if (id != item.end() && id->is_string()) {
      document.id = id->get<std::string>();
    } else {
      return InvalidFieldError(absl::StrCat(where, ".id"),
                               absl::StrCat(where, ".id is required and must be a string"));
    }
    auto text = item.find("text");
    if (text == item.end() || !text->is_string()) {
      return InvalidFieldError(absl::StrCat(where, ".text"),
                               absl::StrCat(where, ".text is required and must be a string"));
    }
    document.text = text->get<std::string>();
    auto metadata = item.find("metadata");
    if (metadata != item.end() && !metadata->is_null()) {
      if (!metadata->is_object()) {
        return InvalidFieldError(absl::StrCat(where, ".metadata"),
                                 absl::StrCat(where, ".metadata must be an object"));
      }
      document.metadata = *metadata;
    }
    out.push_back(std::move(document));
  }
  return out;
}

absl::StatusOr<rag::QueryRequest> ParseQuery(const json& body) {
  rag::QueryRequest query;
  auto text = body.find("query");
  if (text == body.end() || !text->is_string()) {
    return InvalidFieldError("query", "'query' is required and must be a string");
  }
  query.query = text->get<std::string>();
  AILB_RETURN_IF_ERROR(Read(body, "top_k", "top_k", &query.top_k));
  std::string mode = "hybrid";
  AILB_RETURN_IF_ERROR(Read(body, "mode", "mode", &mode));
  mode = absl::AsciiStrToLower(mode);
  if (mode == "hybrid") {
    query.mode = rag::QueryMode::kHybrid;
  } else if (mode == "vector") {
    query.mode = rag::QueryMode::kVector;
  } else if (mode == "lexical") {
    query.mode = rag::QueryMode::kLexical;
  } else {
    return InvalidFieldError(
        "mode", absl::StrCat("'mode' must be hybrid, vector or lexical, got '", mode, "'"));
  }
  auto filter = body.find("filter");
  if (filter != body.end() && !filter->is_null()) {
    if (!filter->is_object()) return InvalidFieldError("filter", "'filter' must be an object");
    query.filter = *filter;
  }
  return query;
}

std::string_view ModeName(rag::QueryMode mode) {
  switch (mode) {
    case rag::QueryMode::kVector:
      return "vector";
    case rag::QueryMode::kLexical:
      return "lexical";
    case rag::QueryMode::kHybrid:
      break;
  }
  return "hybrid";
}

class KnowledgeApi final : public BlockingApi {
 public:
  explicit KnowledgeApi(KnowledgeApiDeps deps) : deps_(deps) {}

  bool Handles(std::string_view path) const override {
    return path == kCollectionsPath ||
           absl::StartsWith(ToAbsl(path), absl::StrCat(ToAbsl(kCollectionsPath), "/")) ||
           (absl::StartsWith(ToAbsl(path), ToAbsl(kSessionsPath)) &&
            path.size() > kSessionsPath.size()) ||
           path == kEmbeddingsPath || path == "/embeddings";
  }

  Access AccessFor(std::string_view path) const override {
    return path == kEmbeddingsPath || path == "/embeddings" ? Access::kData : Access::kAdmin;
  }

  absl::StatusOr<Reply> Handle(std::string_view method, std::string_view path,
                               std::string_view body) override {
    // A wrong method is the request's fault whatever the state of the stores: answer it first.
    if (const std::string_view allowed = AllowedMethods(path);
        !allowed.empty() && !MethodAllowed(method, allowed)) {
      return WrongMethod(method, path);
    }
    if (path == kEmbeddingsPath || path == "/embeddings") {
      if (method != "POST") return WrongMethod(method, path);
      AILB_ASSIGN_OR_RETURN(json request, llm::ParseJsonObject(body));
      return Embeddings(request);
    }
    if (absl::StartsWith(ToAbsl(path), ToAbsl(kSessionsPath))) {
      return Sessions(method, path, PercentDecode(path.substr(kSessionsPath.size())));
    }
    return Collections(method, path, body);
  }

 private:
  absl::StatusOr<rag::RagStore*> Rag() const {
    if (!deps_.config->Current()->enable_rag) {
      return WithErrorCode(absl::NotFoundError("RAG is disabled on this server (ENABLE_RAG=false)"),
                           "rag_disabled");
    }
    if (deps_.rag == nullptr) {
      return absl::UnavailableError("the RAG store is unavailable (see the server log)");
    }
    return deps_.rag;
  }

  absl::StatusOr<Reply> Collections(std::string_view method, std::string_view path,
                                    std::string_view body) {
    AILB_ASSIGN_OR_RETURN(rag::RagStore * rag, Rag());
    std::string_view rest = path.substr(kCollectionsPath.size());
    if (!rest.empty()) rest.remove_prefix(1);  // the '/'
    std::vector<std::string> parts;
    if (!rest.empty()) {
      for (absl::string_view part : absl::StrSplit(ToAbsl(rest), '/')) {
        parts.push_back(PercentDecode(ToStd(part)));
      }
    }
    if (parts.empty()) {
      if (method == "GET") {
        AILB_ASSIGN_OR_RETURN(std::vector<rag::CollectionInfo> list, rag->ListCollections());
        json data = json::array();
        for (const rag::CollectionInfo& info : list) data.push_back(CollectionJson(info));
        return JsonReply(200, {{"object", "list"}, {"data", std::move(data)}});
      }
      if (method != "POST") return WrongMethod(method, path);
      AILB_ASSIGN_OR_RETURN(json request, llm::ParseJsonObject(body));
      AILB_ASSIGN_OR_RETURN(rag::CollectionSpec spec, ParseCollectionSpec(request));
      AILB_ASSIGN_OR_RETURN(rag::CollectionInfo info, rag->CreateCollection(spec));
      return JsonReply(201, CollectionJson(info));
    }
    const std::string& name = parts[0];
    if (parts.size() == 1) {
      if (method == "GET") {
        AILB_ASSIGN_OR_RETURN(rag::CollectionInfo info, rag->GetCollection(name));
        return JsonReply(200, CollectionJson(info));
      }
      if (method != "DELETE") return WrongMethod(method, path);
      AILB_RETURN_IF_ERROR(rag->DeleteCollection(name));
      return JsonReply(200,
                       {{"object", "rag.collection.deleted"}, {"name", name}, {"deleted", true}});
    }
    if (parts[1] == "documents" && parts.size() == 2) {
      if (method != "POST") return WrongMethod(method, path);
      AILB_ASSIGN_OR_RETURN(json request, llm::ParseJsonObject(body));
      AILB_ASSIGN_OR_RETURN(std::vector<rag::DocumentInput> documents, ParseDocuments(request));
      AILB_ASSIGN_OR_RETURN(rag::UpsertResult result,
                            rag->UpsertDocuments(name, std::move(documents)));
      return JsonReply(200, {{"object", "rag.upsert"},
                             {"collection", name},
                             {"documents", result.documents},
                             {"chunks", result.chunks}});
    }
    if (parts[1] == "documents" && parts.size() >= 3) {
      if (method != "DELETE") return WrongMethod(method, path);
      // Ids may hold '/': everything after documents/ is the id.
      std::string id = parts[2];
      for (size_t i = 3; i < parts.size(); ++i) absl::StrAppend(&id, "/", parts[i]);
      AILB_RETURN_IF_ERROR(rag->DeleteDocument(name, id));
      return JsonReply(200, {{"object", "rag.document.deleted"},
                             {"collection", name},
                             {"id", id},
                             {"deleted", true}});
    }
    if (parts[1] == "query" && parts.size() == 2) {
      if (method != "POST") return WrongMethod(method, path);
      AILB_ASSIGN_OR_RETURN(json request, llm::ParseJsonObject(body));
      AILB_ASSIGN_OR_RETURN(rag::QueryRequest query, ParseQuery(request));
      AILB_ASSIGN_OR_RETURN(std::vector<rag::QueryHit> hits, rag->Query(name, query));
      json results = json::array();
      for (rag::QueryHit& hit : hits) {
        results.push_back({{"document_id", std::move(hit.document_id)},
                           {"chunk_id", hit.chunk_id},
                           {"text", std::move(hit.text)},
                           {"score", hit.score},
                           {"metadata", std::move(hit.metadata)}});
      }
      return JsonReply(200, {{"object", "list"},
                             {"collection", name},
                             {"mode", ModeName(query.mode)},
                             {"results", std::move(results)}});
    }
    return WithErrorCode(
        absl::NotFoundError(absl::StrCat("no route for ", ToAbsl(method), " ", ToAbsl(path))),
        "unknown_url");
  }

  absl::StatusOr<Reply> Sessions(std::string_view method, std::string_view path,
                                 const std::string& session_id) {
    if (!deps_.config->Current()->enable_memory) {
      return WithErrorCode(
          absl::NotFoundError("session memory is disabled on this server (ENABLE_MEMORY=false)"),
          "memory_disabled");
    }
    if (deps_.memory == nullptr) {
      return absl::UnavailableError("session memory is unavailable (see the server log)");
    }
    if (method == "GET") {
      AILB_ASSIGN_OR_RETURN(json history, deps_.memory->History(session_id));
      history["object"] = "session";
      return JsonReply(200, history);
    }
    if (method != "DELETE") return WrongMethod(method, path);
    AILB_RETURN_IF_ERROR(deps_.memory->Forget(session_id));
    return JsonReply(
        200, {{"object", "session.deleted"}, {"session_id", session_id}, {"deleted", true}});
  }

  absl::StatusOr<Reply> Embeddings(const json& request) {
    auto model = request.find("model");
    if (model == request.end() || !model->is_string() ||
        model->get_ref<const std::string&>().empty()) {
      return InvalidFieldError("model", "'model' is required and must be a non-empty string");
    }
    std::vector<std::string> inputs;
    auto input = request.find("input");
    if (input != request.end() && input->is_string()) {
      inputs.push_back(input->get<std::string>());
    } else if (input != request.end() && input->is_array() && !input->empty()) {
      for (const json& item : *input) {
        if (!item.is_string()) {
          return InvalidFieldError("input",
                                   "'input' must be a string or an array of strings (token arrays "
                                   "are not supported)");
        }
        inputs.push_back(item.get<std::string>());
      }
    } else {
      return InvalidFieldError("input",
                               "'input' is required: a string or a non-empty array of strings");
    }
    if (inputs.size() > kMaxEmbeddingInputs) {
      return InvalidFieldError("input", absl::StrCat("at most ", kMaxEmbeddingInputs,
                                                     " inputs per request, got ", inputs.size()));
    }
    for (const std::string& text : inputs) {
      if (text.empty()) return InvalidFieldError("input", "inputs must not be empty strings");
    }
    std::string encoding = "float";
    AILB_RETURN_IF_ERROR(Read(request, "encoding_format", "encoding_format", &encoding));
    if (encoding != "float" && encoding != "base64") {
      return InvalidFieldError("encoding_format", "'encoding_format' must be float or base64");
    }
    int dimensions = 0;
    AILB_RETURN_IF_ERROR(Read(request, "dimensions", "dimensions", &dimensions));

    const std::string& name = model->get_ref<const std::string&>();
    std::shared_ptr<const config::Config> config = deps_.config->Current();
    rag::EmbeddingSpec spec;
    if (name == "local" || absl::StartsWith(name, "local-") || absl::StartsWith(name, "local/")) {
      spec.provider = "local";
      spec.dimensions = dimensions > 0 ? dimensions : kDefaultLocalDimensions;
    } else {
      const config::Deployment* deployment = nullptr;
      for (const config::Deployment& d : config->deployments) {
        if (d.model_name == name && d.provider != config::ProviderKind::kAnthropic) {
          deployment = &d;
          break;
        }
      }
      if (deployment == nullptr) {
        return WithErrorCode(
            WithErrorParam(absl::NotFoundError(absl::StrCat(
                               "The model '", name,
                               "' is not an embedding model here: use \"local\" or a configured "
                               "OpenAI-compatible or Ollama deployment")),
                           "model"),
            "model_not_found");
      }
      spec.provider = std::string(config::ProviderName(deployment->provider));
      spec.model = name;
      spec.dimensions = dimensions;
    }
    AILB_ASSIGN_OR_RETURN(std::unique_ptr<rag::Embedder> embedder,
                          MakeEmbedder(spec, *config, deps_.client));
    AILB_ASSIGN_OR_RETURN(std::vector<rag::Vector> vectors, embedder->Embed(inputs));
    json data = json::array();
    int64_t tokens = 0;
    for (size_t i = 0; i < vectors.size(); ++i) {
      json item = {{"object", "embedding"}, {"index", i}};
      if (encoding == "base64") {
        std::string bytes(vectors[i].size() * sizeof(float), '\0');
        std::memcpy(bytes.data(), vectors[i].data(), bytes.size());
        item["embedding"] = absl::Base64Escape(bytes);
      } else {
        item["embedding"] = vectors[i];
      }
      data.push_back(std::move(item));
      tokens += rag::EstimateTokens(inputs[i]);
    }
    return JsonReply(200, {{"object", "list"},
                           {"data", std::move(data)},
                           {"model", name},
                           {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
  }

  const KnowledgeApiDeps deps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<rag::Embedder>> MakeEmbedder(const rag::EmbeddingSpec& spec,
                                                            const config::Config& config,
                                                            upstream::HttpClient* client) {
  if (spec.provider == "local") return rag::NewLocalEmbedder(spec.dimensions);
  std::optional<config::ProviderKind> kind = config::ParseProviderName(spec.provider);
  if (!kind || *kind == config::ProviderKind::kAnthropic) {
    return InvalidFieldError("embedding.provider",
                             absl::StrCat("embedding provider must be local, openai or ollama, "
                                          "got '",
                                          spec.provider, "'"));
  }
  if (client == nullptr) return absl::UnavailableError("provider embeddings are unavailable");
  const config::Deployment* chosen = nullptr;
  for (const config::Deployment& d : config.deployments) {
    if (d.provider != *kind) continue;
    if (d.model_name == spec.model) {
      chosen = &d;
      break;
    }
    if (chosen == nullptr) chosen = &d;
  }
  if (chosen == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("no ", spec.provider, " deployment is configured to embed with"));
  }
  rag::RemoteEmbedderOptions options;
  options.api = *kind == config::ProviderKind::kOllama ? rag::RemoteEmbedderOptions::Api::kOllama
                                                       : rag::RemoteEmbedderOptions::Api::kOpenAI;
  options.base_url = chosen->api_base;
  options.api_key = chosen->api_key;
  options.model = chosen->model_name == spec.model ? chosen->upstream_model : spec.model;
  options.dimensions = spec.dimensions;
  options.send_dimensions =
      spec.dimensions > 0 && options.api == rag::RemoteEmbedderOptions::Api::kOpenAI;
  return rag::NewRemoteEmbedder(*client, std::move(options));
}

std::unique_ptr<BlockingApi> NewKnowledgeApi(KnowledgeApiDeps deps) {
  return std::make_unique<KnowledgeApi>(deps);
}

}  // namespace ailb::server
