// The memory, RAG and embeddings REST API:
//   POST/GET          /v1/rag/collections
//   GET/DELETE        /v1/rag/collections/{name}
//   POST              /v1/rag/collections/{name}/documents
//   DELETE            /v1/rag/collections/{name}/documents/{id}
//   POST              /v1/rag/collections/{name}/query
//   GET/DELETE        /v1/sessions/{id}
//   POST              /v1/embeddings (OpenAI format; model "local" or a configured deployment)
// JSON in and out, OpenAI-style errors. Pure request handling over the stores: the HTTP server
// runs it on worker threads.
#pragma once

#include <memory>

#include "ailb/config/config.h"
#include "ailb/memory/session_memory.h"
#include "ailb/rag/rag_store.h"
#include "ailb/server/http_server.h"
#include "ailb/upstream/http_client.h"

namespace ailb::server {

struct KnowledgeApiDeps {
  rag::RagStore* rag = nullptr;                 // null: RAG unavailable (503)
  memory::SessionMemory* memory = nullptr;      // null: memory unavailable (503)
  const config::ConfigStore* config = nullptr;  // enable_rag / enable_memory, deployments
  upstream::HttpClient* client = nullptr;       // provider embeddings
};

// Thread-safe when its stores are. Blocking.
std::unique_ptr<BlockingApi> NewKnowledgeApi(KnowledgeApiDeps deps);

// Builds the embedder a RAG collection or /v1/embeddings asks for: "local" (feature hashing), or
// "openai"/"ollama" through a configured deployment of that provider (the one whose model name
// is `spec.model`, else the first, with `spec.model` as the upstream model).
absl::StatusOr<std::unique_ptr<rag::Embedder>> MakeEmbedder(const rag::EmbeddingSpec& spec,
                                                            const config::Config& config,
                                                            upstream::HttpClient* client);

}  // namespace ailb::server
