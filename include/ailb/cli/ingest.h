// `ailb ingest`: loads files (JSON lines or plain text) into a RAG collection through the data
// plane's HTTP API (POST /v1/rag/collections/{name}/documents), in batches, with retries.
//
// The conversion of input into documents and the batching are pure functions, declared here so
// they can be tested without a server; RunIngest does the I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ailb::cli {

// Entry point of the subcommand. `argv` holds the arguments after "ingest" (argv[0] is the first
// option or path, not the program name). Returns the process exit code: 0 when every document
// was ingested, 1 when some failed or the run was aborted, 2 for usage errors.
int RunIngest(int argc, char** argv);

enum class InputFormat { kAuto, kJsonl, kText };

// "auto" | "jsonl" | "text"; InvalidArgument otherwise.
absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name);

// kAuto resolves by extension: .jsonl and .ndjson (any case) are JSON lines, the rest is text.
// Explicit formats are returned as they are.
InputFormat ResolveInputFormat(InputFormat requested, std::string_view path);

// Which fields of a JSON line hold what.
struct JsonlFields {
  std::string id = "id";
  std::string text = "text";
  // Optional; when present (a non-empty string) the text sent is title + "\n" + text.
  std::string title = "title";
};

// One document as sent to the server, plus where it came from (for error messages).
struct Document {
  std::string id;
  std::string text;
  nlohmann::json metadata = nlohmann::json::object();  // scalars and arrays of scalars only
  std::string source;                                  // file path, or "<stdin>"
  int64_t line = 0;                                    // 1-based line in a JSONL file; 0: none
};

// An input that could not become a document.
struct InputError {
  std::string source;
  int64_t line = 0;  // 0 when the error concerns the whole file
  std::string message;

  // "source:line: message", or "source: message" without a line.
  std::string ToString() const;
};

// The documents of one input and the errors met on the way.
struct DocumentBatch {
  std::vector<Document> documents;
  std::vector<InputError> errors;
};

// Converts one JSON line (an object). The id may be a string or an integer; the text must be a
// non-blank string; the title, if present and not null, a string. Every other field goes to the
// metadata when it is a scalar or an array of scalars, and is dropped otherwise. InvalidArgument
// (without location; the caller adds it) for invalid JSON, non-objects and missing or bad fields.
absl::StatusOr<Document> ParseJsonLine(std::string_view line, const JsonlFields& fields);

// Converts JSON lines content: blank lines are skipped, bad lines become errors with their line
// number (counted from `first_line`).
DocumentBatch ParseJsonlContent(std::string_view content, std::string_view source,
                                const JsonlFields& fields, int64_t first_line = 1);

// A plain-text file as one document: id = the path as given, metadata {"source": path}.
// InvalidArgument for blank content or content that is not valid UTF-8 (binary files).
absl::StatusOr<Document> TextFileDocument(std::string_view path, std::string_view content);

// The documents in a file's content, by format (kAuto resolves by `path`).
DocumentBatch ConvertFile(std::string_view path, std::string_view content, InputFormat format,
                          const JsonlFields& fields);

// Bounds of one upsert request.
struct BatchLimits {
  size_t max_documents = 64;
  size_t max_bytes = 4 << 20;  // of the request body
};

// The request body {"documents":[...]} for `documents`.
std::string EncodeUpsertBody(const std::vector<Document>& documents);

// What one document adds to an upsert body (its JSON, without the separating comma).
size_t EncodedDocumentSize(const Document& document);

// Groups documents into upsert requests, in order. A batch is emitted as soon as it holds
// max_documents, or before a document that would take its body past max_bytes. A document that
// alone exceeds max_bytes travels alone (the server then judges it).
class Batcher {
 public:
  explicit Batcher(BatchLimits limits) : limits_(limits) {}

  // Adds `document`; returns the batches that became ready (zero, one or two).
  std::vector<std::vector<Document>> Add(Document document);
  // The last, partial batch; empty when there is none.
  std::vector<Document> Flush();

  size_t pending_documents() const { return pending_.size(); }

 private:
  BatchLimits limits_;
  std::vector<Document> pending_;
  size_t pending_bytes_ = 0;
};

// All of `documents` through a Batcher.
std::vector<std::vector<Document>> SplitIntoBatches(std::vector<Document> documents,
                                                    BatchLimits limits);

}  // namespace ailb::cli
