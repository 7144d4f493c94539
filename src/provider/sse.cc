#include "ailb/provider/sse.h"

#include "absl/strings/str_cat.h"

namespace ailb::provider {

void SseDecoder::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  buffer_.append(bytes.data(), bytes.size());
  size_t line_start = consumed_;
  for (size_t i = consumed_; i < buffer_.size(); ++i) {
    const char c = buffer_[i];
    if (c != '\n' && c != '\r') continue;
    if (c == '\n' && last_was_cr_ && i == line_start) {
      // The \n of a \r\n pair whose \r already ended the line.
      last_was_cr_ = false;
      line_start = i + 1;
      continue;
    }
    ProcessLine(std::string_view(buffer_).substr(line_start, i - line_start), out);
    last_was_cr_ = (c == '\r');
    line_start = i + 1;
  }
  consumed_ = line_start;
  // Compact once the consumed prefix dominates, keeping appends amortised O(1).
  if (consumed_ > 4096 && consumed_ * 2 > buffer_.size()) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  } else if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  }
}

bool SseDecoder::HasPartialEvent() const { return current_has_data_ || buffered() > 0; }

void SseDecoder::ProcessLine(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    if (current_has_data_) out.push_back(std::move(current_));
    current_ = SseEvent();
    current_has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  std::string_view field = line;
  std::string_view value;
  if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (current_has_data_) current_.data.push_back('\n');
    current_.data.append(value.data(), value.size());
    current_has_data_ = true;
  } else if (field == "event") {
    current_.event.assign(value.data(), value.size());
  }
  // id and retry are irrelevant to a proxy that does not reconnect.
}

std::string SseDataEvent(std::string_view json) {
  return absl::StrCat("data: ", absl::string_view(json.data(), json.size()), "\n\n");
}

}  // namespace ailb::provider
