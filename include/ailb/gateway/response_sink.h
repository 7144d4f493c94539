// Where the gateway writes a reply. The HTTP server implements it over a client connection;
// tests implement it in memory.
#pragma once

#include <string>
#include <string_view>

#include "ailb/upstream/http_client.h"

namespace ailb::gateway {

// Calls for one request come one at a time but possibly from different threads (the reactor
// that accepted the request, then the upstream client's event thread); implementations must be
// safe for that. A reply is either one SendJson, or StartStream, any number of SendStreamData
// and one EndStream.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void SendJson(int http_status, const upstream::Headers& headers, std::string body) = 0;
  // Starts a 200 text/event-stream reply.
  virtual void StartStream(const upstream::Headers& headers) = 0;
  // Returns false when the client has gone (the caller should stop producing).
  virtual bool SendStreamData(std::string data) = 0;
  virtual void EndStream() = 0;
  virtual bool ClientGone() const = 0;
};

}  // namespace ailb::gateway
