// Pistache 0.0.5's HTTP request parser with its hostile-input holes closed. Included only by the
// HTTP server and its tests: it pulls in Pistache's headers.
//
// What the stock parser does, and what this one does instead (each answer is written by Pistache
// as a plain-text error, before any handler runs):
//   - a header its typed parsers reject (Content-Length beyond 64 bits, `Host: a:-1`, a garbage
//     `Date` or `Cache-Control`) escapes as an exception → 500 with the exception's text. Here:
//     400.
//   - `Content-Length: -5` is read by strtoull as 2^64-5 and the body buffer reservation throws
//     → 500. A Content-Length that is not 1*DIGIT → 400; one above the request size limit → 413 at
//     once (the stock parser reserves that much memory and waits for the bytes).
//   - the request line and header steps re-scan everything buffered on every read, so a head that
//     never ends (a huge header, or a body-less garbage stream) costs quadratic time on the reactor
//     thread: a 2 MiB header stalled every connection of that reactor for 6 s. A request line, or
//     a header section, longer than `max_head_bytes` → 431.
//   - a complete request line or header section (its CRLF or blank line received) that the steps
//     still cannot parse, e.g. a request line without a version or a header line without ':',
//     got no answer until the header timeout. Here: 400.
#pragma once

#include <pistache/http.h>

#include <cstddef>
#include <memory>

namespace ailb::server {

// Limit of the request line, and separately of the header section, in bytes.
inline constexpr size_t kMaxHeadBytes = 32 * 1024;

// A parser for one connection; `max_request_bytes` bounds the whole request as Pistache's own
// maxRequestSize does.
std::shared_ptr<Pistache::Http::RequestParser> NewCheckedRequestParser(size_t max_request_bytes,
                                                                       size_t max_head_bytes);

}  // namespace ailb::server
