// Key administration over HTTP (admin key only):
//   POST   /v1/admin/keys        create; the reply holds the key, shown this once
//   GET    /v1/admin/keys        list (no secrets), with today's and this month's spend
//   GET    /v1/admin/keys/{id}   one key
//   PATCH  /v1/admin/keys/{id}   change name and limits (fields present replace the current ones)
//   DELETE /v1/admin/keys/{id}   revoke at once
// Limits: models (array of model names), rpm, tpm, tokens_per_day, tokens_per_month
// (non-negative integers), cost_usd_per_day, cost_usd_per_month (non-negative numbers); 0 or an
// empty list means no limit.
#pragma once

#include <memory>

#include "ailb/auth/key_store.h"
#include "ailb/server/http_server.h"

namespace ailb::server {

// Thread-safe. Blocking (SQLite): the HTTP server runs it on worker threads.
std::unique_ptr<BlockingApi> NewAdminApi(auth::KeyStore* keys);

}  // namespace ailb::server
