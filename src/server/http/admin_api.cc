#include "ailb/server/admin_api.h"

#include <cmath>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ailb/common/status.h"
#include "ailb/common/strings.h"
#include "ailb/llm/chat.h"

namespace ailb::server {
namespace {

using nlohmann::json;
using Reply = BlockingApi::Reply;

constexpr std::string_view kKeysPath = "/v1/admin/keys";
constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMaxModels = 1000;
constexpr int64_t kMaxLimit = int64_t{1} << 50;

json UsageJson(const auth::Usage& usage) {
  return {{"requests", usage.requests}, {"tokens", usage.tokens}, {"cost_usd", usage.cost_usd}};
}

json KeyJson(const auth::KeyInfo& key) {
  const auth::KeyLimits& limits = key.limits;
  return {{"id", key.id},
          {"object", "api_key"},
          {"name", key.name},
          {"key_prefix", key.key_prefix},
          {"source", key.source},
          {"created", key.created_unix},
          {"limits",
           {{"models", limits.models},
            {"rpm", limits.rpm},
            {"tpm", limits.tpm},
            {"tokens_per_day", limits.tokens_per_day},
            {"tokens_per_month", limits.tokens_per_month},
            {"cost_usd_per_day", limits.cost_usd_per_day},
            {"cost_usd_per_month", limits.cost_usd_per_month}}},
          {"usage",
           {{"day", key.today},
            {"today", UsageJson(key.usage_today)},
            {"month", key.this_month},
            {"this_month", UsageJson(key.usage_this_month)},
            {"in_flight", key.in_flight}}}};
}

absl::StatusOr<int64_t> Count(const json& value, const char* field) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > kMaxLimit) {
    return InvalidFieldError(
        field, absl::StrCat("'", field, "' must be a non-negative integer (0 = no limit)"));
  }
  return value.get<int64_t>();
}

absl::StatusOr<double> Dollars(const json& value, const char* field) {
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
    return InvalidFieldError(
        field, absl::StrCat("'", field, "' must be a non-negative number of US dollars"));
  }
  return value.get<double>();
}

// Applies the fields present in `body` over `limits` and `name`. Unknown fields are refused so a
// misspelt limit is not silently ignored.
absl::Status ApplyFields(const json& body, std::string* name, auth::KeyLimits* limits) {
  for (const auto& [field, value] : body.items()) {
    if (field == "name") {
      if (!value.is_string() || value.get_ref<const std::string&>().size() > kMaxNameBytes) {
        return InvalidFieldError(
            "name", absl::StrCat("'name' must be a string of at most ", kMaxNameBytes, " bytes"));
      }
      *name = value.get<std::string>();
    } else if (field == "models") {
      if (!value.is_array() || value.size() > kMaxModels) {
        return InvalidFieldError("models", "'models' must be an array of model names");
      }
      std::vector<std::string> models;
      for (const json& model : value) {
        if (!model.is_string() || model.get_ref<const std::string&>().empty() ||
            model.get_ref<const std::string&>().size() > 256) {
          return InvalidFieldError("models", "'models' must hold non-empty model names");
        }
        models.push_back(model.get<std::string>());
      }
      limits->models = std::move(models);
    } else if (field == "rpm") {
      AILB_ASSIGN_OR_RETURN(limits->rpm, Count(value, "rpm"));
    } else if (field == "tpm") {
      AILB_ASSIGN_OR_RETURN(limits->tpm, Count(value, "tpm"));
    } else if (field == "tokens_per_day") {
      AILB_ASSIGN_OR_RETURN(limits->tokens_per_day, Count(value, "tokens_per_day"));
    } else if (field == "tokens_per_month") {
      AILB_ASSIGN_OR_RETURN(limits->tokens_per_month, Count(value, "tokens_per_month"));
    } else if (field == "cost_usd_per_day") {
      AILB_ASSIGN_OR_RETURN(limits->cost_usd_per_day, Dollars(value, "cost_usd_per_day"));
    } else if (field == "cost_usd_per_month") {
      AILB_ASSIGN_OR_RETURN(limits->cost_usd_per_month, Dollars(value, "cost_usd_per_month"));
    } else {
      return InvalidFieldError(
          field, absl::StrCat("unknown field '", field,
                              "'; expected name, models, rpm, tpm, tokens_per_day, "
                              "tokens_per_month, cost_usd_per_day, cost_usd_per_month"));
    }
  }
  return absl::OkStatus();
}

absl::Status WrongMethod(std::string_view method, std::string_view path, std::string_view allowed) {
  return MethodNotAllowedError(absl::StrCat(ToAbsl(method), " is not allowed on ", ToAbsl(path),
                                            " (use ", ToAbsl(allowed), ")"),
                               allowed);
}

class AdminApi final : public BlockingApi {
 public:
  explicit AdminApi(auth::KeyStore* keys) : keys_(keys) {}

  bool Handles(std::string_view path) const override {
    return path == kKeysPath ||
           (absl::StartsWith(ToAbsl(path), absl::StrCat(ToAbsl(kKeysPath), "/")) &&
            path.size() > kKeysPath.size() + 1);
  }

  Access AccessFor(std::string_view) const override { return Access::kKeyAdmin; }

  absl::StatusOr<Reply> Handle(std::string_view method, std::string_view path,
                               std::string_view body) override {
    if (path == kKeysPath) {
      if (method == "GET") {
        json data = json::array();
        for (const auth::KeyInfo& key : keys_->List()) data.push_back(KeyJson(key));
        return Reply{200, llm::DumpJson(json{{"object", "list"}, {"data", std::move(data)}})};
      }
      if (method == "POST") return Create(body);
      return WrongMethod(method, path, "GET, POST");
    }
    const std::string id = PercentDecode(path.substr(kKeysPath.size() + 1));
    if (method == "GET") {
      AILB_ASSIGN_OR_RETURN(auth::KeyInfo key, keys_->Get(id));
      return Reply{200, llm::DumpJson(KeyJson(key))};
    }
    if (method == "PATCH") {
      AILB_ASSIGN_OR_RETURN(auth::KeyInfo current, keys_->Get(id));
      AILB_ASSIGN_OR_RETURN(json request, llm::ParseJsonObject(body));
      std::string name = current.name;
      auth::KeyLimits limits = current.limits;
      AILB_RETURN_IF_ERROR(ApplyFields(request, &name, &limits));
      AILB_ASSIGN_OR_RETURN(auth::KeyInfo updated, keys_->Update(id, name, limits));
      return Reply{200, llm::DumpJson(KeyJson(updated))};
    }
    if (method == "DELETE") {
      AILB_RETURN_IF_ERROR(keys_->Revoke(id));
      return Reply{200, llm::DumpJson(json{{"id", id}, {"object", "api_key"}, {"deleted", true}})};
    }
    return WrongMethod(method, path, "GET, PATCH, DELETE");
  }

 private:
  absl::StatusOr<Reply> Create(std::string_view body) {
    json request = json::object();
    if (!body.empty()) {
      AILB_ASSIGN_OR_RETURN(request, llm::ParseJsonObject(body));
    }
    std::string name;
    auth::KeyLimits limits;
    AILB_RETURN_IF_ERROR(ApplyFields(request, &name, &limits));
    AILB_ASSIGN_OR_RETURN(auto created, keys_->Create(name, limits));
    json reply = KeyJson(created.first);
    reply["key"] = std::move(created.second);
    return Reply{201, llm::DumpJson(reply)};
  }

  auth::KeyStore* const keys_;
};

}  // namespace

std::unique_ptr<BlockingApi> NewAdminApi(auth::KeyStore* keys) {
  return std::make_unique<AdminApi>(keys);
}

}  // namespace ailb::server
