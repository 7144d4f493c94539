#include "provider/openai/openai_adapter.h"

#include <charconv>

#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/provider/sse.h"
#include "provider/retry_after.h"

namespace ailb::provider {
namespace {

using nlohmann::json;

void AddAuthHeaders(const config::Deployment& deployment, upstream::Headers& headers) {
  if (!deployment.api_key.empty()) {
    headers.emplace_back("Authorization", absl::StrCat("Bearer ", deployment.api_key));
  }
}

class OpenAIStreamDecoder final : public StreamDecoder {
 public:
  absl::Status Feed(std::string_view bytes, std::vector<json>& out) override {
    events_.clear();
    sse_.Feed(bytes, events_);
    for (const SseEvent& event : events_) {
      if (done_) break;  // nothing after [DONE] is meaningful
      if (event.data == "[DONE]") {
        done_ = true;
        break;
      }
      json chunk = json::parse(event.data, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_discarded() || !chunk.is_object()) {
        return BadGatewayError("upstream stream contained an event that is not valid JSON");
      }
      if (auto error = chunk.find("error"); error != chunk.end()) {
        std::string message = "upstream reported an error mid-stream";
        if (error->is_object() && error->contains("message") && (*error)["message"].is_string()) {
          message = (*error)["message"].get<std::string>();
        }
        return BadGatewayError(message);
      }
      out.push_back(std::move(chunk));
    }
    return absl::OkStatus();
  }

  absl::Status Finish(std::vector<json>& out) override {
    // A final event without its blank line still counts.
    if (!done_) {
      AILB_RETURN_IF_ERROR(Feed("\n\n", out));
    }
    if (!done_) return absl::UnavailableError("upstream stream ended before [DONE]");
    return absl::OkStatus();
  }

 private:
  SseDecoder sse_;
  std::vector<SseEvent> events_;
  bool done_ = false;
};

}  // namespace

absl::StatusOr<upstream::Request> OpenAIAdapter::EncodeChat(
    const llm::ChatRequest& request, const config::Deployment& deployment) const {
  json body = request.body;
  body["model"] = deployment.upstream_model;
  if (request.stream) body["stream_options"]["include_usage"] = true;
  upstream::Request out;
  out.url = absl::StrCat(deployment.api_base, "/chat/completions");
  out.headers.emplace_back("Content-Type", "application/json");
  out.headers.emplace_back("Accept", request.stream ? "text/event-stream" : "application/json");
  AddAuthHeaders(deployment, out.headers);
  out.body = llm::DumpJson(body);
  return out;
}

absl::StatusOr<json> OpenAIAdapter::DecodeChat(std::string_view body) const {
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) {
    return BadGatewayError("upstream reply is not valid JSON");
  }
  auto choices = reply.find("choices");
  if (choices == reply.end() || !choices->is_array()) {
    return BadGatewayError("upstream reply has no 'choices' array");
  }
  return reply;
}

std::unique_ptr<StreamDecoder> OpenAIAdapter::NewStreamDecoder() const {
  return std::make_unique<OpenAIStreamDecoder>();
}

absl::Status OpenAIAdapter::DecodeError(int http_status, const upstream::Headers& headers,
                                        std::string_view body) const {
  std::string message;
  std::string code;
  std::string param;
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (!reply.is_discarded() && reply.is_object()) {
    const json& error = reply.contains("error") ? reply["error"] : reply;
    if (error.is_object()) {
      if (error.contains("message") && error["message"].is_string()) {
        message = error["message"].get<std::string>();
      }
      if (error.contains("code") && error["code"].is_string())
        code = error["code"].get<std::string>();
      if (error.contains("param") && error["param"].is_string()) {
        param = error["param"].get<std::string>();
      }
    } else if (error.is_string()) {
      message = error.get<std::string>();
    }
  }
  if (message.empty()) {
    message = absl::StrCat("upstream answered HTTP ", http_status);
  }
  absl::Status status(StatusCodeForHttp(http_status), message);
  status = WithHttpStatus(std::move(status), http_status);
  if (!code.empty()) status = WithErrorCode(std::move(status), code);
  if (!param.empty()) status = WithErrorParam(std::move(status), param);
  status = WithUpstreamRetryAfter(std::move(status), headers);
  return status;
}

absl::StatusOr<upstream::Request> OpenAIAdapter::EncodeHealthProbe(
    const config::Deployment& deployment) const {
  upstream::Request out;
  out.method = "GET";
  out.url = absl::StrCat(deployment.api_base, "/models");
  AddAuthHeaders(deployment, out.headers);
  return out;
}

}  // namespace ailb::provider
