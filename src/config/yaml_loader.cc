// The YAML document ailb reads. Every key is optional. Unknown keys are errors naming their full
// path ("model_list[2].wieght: unknown key"), because a typo that silently falls back to a
// default is worse than a refusal to start. Environment variables (shown on the right) override
// the scalar settings; deployments from *_MODELS are appended after model_list's.
//
//   server:
//     host: 0.0.0.0                  # HOST
//     http_port: 8080                # HTTP_PORT (0 = pick a free port)
//     grpc_port: 50051               # GRPC_PORT (0 = pick a free port)
//     http_threads: 2                # HTTP_THREADS
//     max_body_bytes: 8388608        # AILB_MAX_BODY_BYTES
//     drain_timeout_ms: 30000        # AILB_DRAIN_TIMEOUT_MS
//     grpc_host: 127.0.0.1           # AILB_GRPC_HOST (default: host)
//     promotion_interval_ms: 30000   # AILB_PROMOTION_INTERVAL_MS
//   (the control token is read from AILB_CONTROL_TOKEN only: secrets stay out of files)
//   module_id: ailb-1                # MODULE_ID
//   routing_strategy: weighted       # ROUTING_STRATEGY: round_robin, weighted, least_busy,
//                                    #   latency_optimized, cost_optimized, usage_based,
//                                    #   load_balanced, failover, random
//   session_affinity: false          # AILB_SESSION_AFFINITY
//   enable_memory: true              # ENABLE_MEMORY
//   enable_rag: true                 # ENABLE_RAG
//   data_dir: ./data                 # AILB_DATA_DIR
//   log_level: info                  # LOG_LEVEL: trace, debug, info, warn, error, critical, off
//   log_format: text                 # LOG_FORMAT: text or json
//   api_keys:                        # AILB_API_KEYS (comma list; replaces this list)
//     - sk-ailb-0123456789           # a key, plain or sha256:<64 hex digits>
//     - key: sha256:9f86d0...        # or a key with a name and limits (0 = none)
//       name: team-a
//       models: [gpt-4o-mini]        # allow-list of public model names
//       rpm: 60                      # requests and tokens per minute
//       tpm: 100000
//       tokens_per_day: 1000000      # budgets per UTC day and month
//       tokens_per_month: 20000000
//       cost_usd_per_day: 5.0
//       cost_usd_per_month: 100.0
//   admin_key: sha256:...            # AILB_ADMIN_KEY: RAG, session and key administration
//   timeouts:
//     connect_ms: 5000               # AILB_CONNECT_TIMEOUT_MS
//     first_byte_ms: 120000          # AILB_FIRST_BYTE_TIMEOUT_MS
//     total_ms: 600000               # AILB_TOTAL_TIMEOUT_MS
//     stream_idle_ms: 120000         # AILB_STREAM_IDLE_TIMEOUT_MS
//   retries:
//     backoff_base_ms: 25            # AILB_RETRY_BACKOFF_MS (first failover is immediate)
//     backoff_max_ms: 2000           # AILB_RETRY_BACKOFF_MAX_MS
//     max_attempts: 10               # AILB_MAX_ATTEMPTS
//   health_check_interval_ms: 0      # AILB_HEALTH_CHECK_INTERVAL_MS (0 = no active checks)
//   model_groups:                    # per model group; every key optional
//     gpt-4o:
//       routing_strategy: latency_optimized
//       fallbacks: [gpt-4o-mini]     # tried when every gpt-4o deployment failed
//       context_window_fallbacks: [gpt-4o-long]  # tried when the prompt is too long
//       max_input_tokens: 128000     # estimated prompts above it go to the context fallbacks
//       hedge_after_ms: 800          # or p95; second attempt when no byte came by then
//   model_list:
//     # ailb's flat form.
//     - model_name: gpt-4o           # public name (required); entries sharing it form a group
//       provider: openai             # openai | anthropic | ollama (default openai)
//       model: gpt-4o-2024-08-06     # upstream model (default: model_name)
//       api_base: https://api.openai.com/v1
//       api_key_env: OPENAI_API_KEY  # name of the variable holding the key
//       id: openai-primary           # default "<provider>/<model>"; repeats get "#2", "#3", ...
//       weight: 1.0                  # relative share (>= 0)
//       rpm: 500                     # requests per minute, enforced (0 = no limit)
//       tpm: 200000                  # tokens per minute, enforced (0 = no limit)
//       priority: 0                  # lower is tried first by failover
//       input_cost_per_token: 0.0000025
//       output_cost_per_token: 0.00001
//       version: blue                # blue/green tag
//     # LiteLLM's form, so existing LiteLLM configs load unchanged.
//     - model_name: gpt-4o
//       litellm_params:
//         model: openai/gpt-4o       # "<provider>/<upstream model>"
//         api_base: https://api.openai.com/v1
//         api_key: os.environ/OPENAI_API_KEY   # or the key itself
//         rpm: 500
//         tpm: 200000
//         weight: 1.0
//         order: 1                   # = priority
//         input_cost_per_token: 0.0000025
//         output_cost_per_token: 0.00001
//       model_info: {id: azure-east, version: green}   # or id/version beside model_name
//
// API keys: a deployment without api_base gets *_BASE_URL from the environment, else the
// provider's public endpoint. A deployment that names no key source uses OPENAI_API_KEY /
// ANTHROPIC_API_KEY, but only when its api_base is that default or the provider's own cloud, so
// the cloud key is never sent to some other host. A variable that is not set is an error only for
// the OpenAI and Anthropic clouds; local compatible servers need no key.

#include "config/yaml_loader.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace ailb::config::internal {
namespace {

constexpr std::string_view kEnvKeyPrefix = "os.environ/";

// A string value and where it was written, for problems found after reading.
struct Text {
  std::string value;
  YAML::Mark mark;
};

// The per-deployment settings, which the flat form keeps beside model_name and LiteLLM's form
// nests under litellm_params.
struct DeploymentParams {
  std::optional<Text> provider;  // flat only
  std::optional<Text> model;     // flat: upstream model; LiteLLM: "<provider>/<model>"
  std::optional<Text> api_base;
  std::optional<Text> api_key_env;  // flat only
  std::optional<Text> api_key;      // LiteLLM only: "os.environ/NAME" or the key itself
  std::optional<double> weight;
  std::optional<int64_t> rpm;
  std::optional<int64_t> tpm;
  std::optional<int> priority;  // LiteLLM's "order"
  std::optional<double> input_cost_per_token;
  std::optional<double> output_cost_per_token;
};

class YamlReader {
 public:
  YamlReader(std::string_view source, const Environment& env, std::vector<std::string>* errors)
      : source_(source), env_(env), errors_(errors) {}

  void ReadDocument(const YAML::Node& root, Config* config, SourceMap* sources) {
    if (!root.IsDefined() || root.IsNull()) return;  // an empty file configures nothing
    ReadMapping(
        root, "",
        {
            {"server",
             [&](const YAML::Node& node, const std::string& path) {
               ServerConfig& server = config->server;
               ReadMapping(
                   node, path,
                   {
                       {"host", StringInto(&server.host)},
                       {"http_port", IntegerInto<int>(&server.http_port)},
                       {"grpc_port", IntegerInto<int>(&server.grpc_port)},
                       {"http_threads", IntegerInto<int>(&server.http_threads)},
                       {"max_body_bytes", IntegerInto<int64_t>(&server.max_body_bytes)},
                       {"drain_timeout_ms", IntegerInto<int>(&server.drain_timeout_ms)},
                       {"grpc_host", StringInto(&server.grpc_host)},
                       {"promotion_interval_ms", IntegerInto<int>(&server.promotion_interval_ms)},
                   });
             }},
            {"module_id", StringInto(&config->module_id)},
            {"routing_strategy", StringInto(&config->routing_strategy, /*lower=*/true)},
            {"session_affinity", BoolInto(&config->session_affinity)},
            {"enable_memory", BoolInto(&config->enable_memory)},
            {"enable_rag", BoolInto(&config->enable_rag)},
            {"data_dir", StringInto(&config->data_dir)},
            {"log_level", StringInto(&config->log_level, /*lower=*/true)},
            {"log_format", StringInto(&config->log_format, /*lower=*/true)},
            {"api_keys", [&](const YAML::Node& node,
                             const std::string& path) { ReadApiKeys(node, path, config); }},
            {"admin_key", StringInto(&config->admin_key)},
            {"timeouts",
             [&](const YAML::Node& node, const std::string& path) {
               TimeoutConfig& timeouts = config->timeouts;
               ReadMapping(node, path,
                           {
                               {"connect_ms", IntegerInto<int>(&timeouts.connect_ms)},
                               {"first_byte_ms", IntegerInto<int>(&timeouts.first_byte_ms)},
                               {"total_ms", IntegerInto<int>(&timeouts.total_ms)},
                               {"stream_idle_ms", IntegerInto<int>(&timeouts.stream_idle_ms)},
                           });
             }},
            {"model_list",
             [&](const YAML::Node& node, const std::string& path) {
               ReadModelList(node, path, config, sources);
             }},
            {"model_groups", [&](const YAML::Node& node,
                                 const std::string& path) { ReadModelGroups(node, path, config); }},
            {"retries",
             [&](const YAML::Node& node, const std::string& path) {
               RetryConfig& retries = config->retries;
               ReadMapping(node, path,
                           {
                               {"backoff_base_ms", IntegerInto<int>(&retries.backoff_base_ms)},
                               {"backoff_max_ms", IntegerInto<int>(&retries.backoff_max_ms)},
                               {"max_attempts", IntegerInto<int>(&retries.max_attempts)},
                           });
             }},
            {"health_check_interval_ms", IntegerInto<int>(&config->health_check_interval_ms)},
        });
  }

 private:
  using Handler = std::function<void(const YAML::Node& value, const std::string& path)>;
  struct Field {
    std::string_view key;
    Handler handler;
  };

  std::string Where(const YAML::Mark& mark) const {
    if (mark.is_null()) return "";
    return Cat(" (", source_, " line ", mark.line + 1, ")");
  }

  void Error(const YAML::Mark& mark, std::string_view path, std::string_view message) {
    errors_->push_back(Cat(path.empty() ? source_ : path, ": ", message, Where(mark)));
  }

  // Calls the handler of each key; unknown and repeated keys are problems.
  void ReadMapping(const YAML::Node& node, const std::string& path,
                   const std::vector<Field>& fields) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error(node.Mark(), path, Cat("expected a mapping, got ", KindOf(node)));
      return;
    }
    std::vector<std::string_view> known;
    for (const Field& field : fields) known.push_back(field.key);
    std::set<std::string, std::less<>> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies: the iterator hands out a temporary pair, so references into it would dangle.
      const YAML::Node key_node = it->first;
      const YAML::Node value_node = it->second;
      if (!key_node.IsScalar()) {
        Error(key_node.Mark(), path, "keys must be plain strings");
        continue;
      }
      const std::string& key = key_node.Scalar();
      std::string child = path.empty() ? key : Cat(path, ".", key);
      if (!seen.insert(key).second) {
        Error(key_node.Mark(), child, "duplicate key");
        continue;
      }
      auto field =
          std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
      if (field == fields.end()) {
        std::optional<std::string_view> guess = ClosestMatch(key, known);
        Error(key_node.Mark(), child,
              guess ? Cat("unknown key (did you mean \"", *guess, "\"?)") : "unknown key");
        continue;
      }
      field->handler(value_node, child);
    }
  }

  static std::string_view KindOf(const YAML::Node& node) {
    if (node.IsMap()) return "a mapping";
    if (node.IsSequence()) return "a list";
    if (node.IsNull()) return "nothing";
    return "a scalar";
  }

  // The text of a scalar; nullopt for null (treated as "not set") and for non-scalars (reported).
  std::optional<std::string> Scalar(const YAML::Node& node, const std::string& path) {
    if (node.IsNull()) return std::nullopt;
    if (!node.IsScalar()) {
      Error(node.Mark(), path, Cat("expected a single value, got ", KindOf(node)));
      return std::nullopt;
    }
    return node.Scalar();
  }

  // Runs a text parser from parse_util, adding this node's line to its messages.
  template <typename Parse>
  bool ParseAt(const YAML::Node& node, Parse parse) {
    std::vector<std::string> problems;
    bool ok = parse(&problems);
    for (const std::string& problem : problems) errors_->push_back(problem + Where(node.Mark()));
    return ok;
  }

  // `Out` is the value type or a std::optional of it.
  template <typename Out>
  Handler StringInto(Out* out, bool lower = false) {
    return [this, out, lower](const YAML::Node& node, const std::string& path) {
      if (std::optional<std::string> text = Scalar(node, path)) {
        *out = lower ? AsciiLower(*text) : *text;
      }
    };
  }

  Handler TextInto(std::optional<Text>* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      if (std::optional<std::string> text = Scalar(node, path)) *out = Text{*text, node.Mark()};
    };
  }

  template <typename T, typename Out>
  Handler IntegerInto(Out* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      std::optional<std::string> text = Scalar(node, path);
      T value{};
      if (text && ParseAt(node, [&](std::vector<std::string>* problems) {
            return ParseInteger(path, *text, &value, problems);
          })) {
        *out = value;
      }
    };
  }

  template <typename Out>
  Handler DoubleInto(Out* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      std::optional<std::string> text = Scalar(node, path);
      double value = 0;
      if (text && ParseAt(node, [&](std::vector<std::string>* problems) {
            return ParseDouble(path, *text, &value, problems);
          })) {
        *out = value;
      }
    };
  }

  Handler BoolInto(bool* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      std::optional<std::string> text = Scalar(node, path);
      if (!text) return;
      if (std::optional<bool> value = ParseBool(*text)) {
        *out = *value;
      } else {
        Error(node.Mark(), path, Cat("not a boolean (true/false, yes/no, on/off, 1/0): ", *text));
      }
    };
  }

  Handler StringListInto(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      if (node.IsNull()) return;
      if (!node.IsSequence()) {
        Error(node.Mark(), path, Cat("expected a list, got ", KindOf(node)));
        return;
      }
      std::vector<std::string> items;
      for (size_t i = 0; i < node.size(); ++i) {
        std::string item_path = Cat(path, "[", i, "]");
        // A null item stays as "" so that validation reports it with its index.
        items.push_back(Scalar(node[i], item_path).value_or(""));
      }
      *out = std::move(items);
    };
  }

  // A list of keys: plain strings, or mappings with the key, its name and its limits.
  void ReadApiKeys(const YAML::Node& node, const std::string& path, Config* config) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(node.Mark(), path, Cat("expected a list, got ", KindOf(node)));
      return;
    }
    config->api_keys.clear();
    config->api_key_settings.clear();
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = Cat(path, "[", i, "]");
      const YAML::Node item = node[i];
      ApiKeySettings settings;
      std::string key;
      if (item.IsMap()) {
        KeyLimits& limits = settings.limits;
        ReadMapping(item, item_path,
                    {
                        {"key", StringInto(&key)},
                        {"name", StringInto(&settings.name)},
                        {"models", StringListInto(&limits.models)},
                        {"rpm", IntegerInto<int64_t>(&limits.rpm)},
                        {"tpm", IntegerInto<int64_t>(&limits.tpm)},
                        {"tokens_per_day", IntegerInto<int64_t>(&limits.tokens_per_day)},
                        {"tokens_per_month", IntegerInto<int64_t>(&limits.tokens_per_month)},
                        {"cost_usd_per_day", DoubleInto(&limits.cost_usd_per_day)},
                        {"cost_usd_per_month", DoubleInto(&limits.cost_usd_per_month)},
                    });
      } else {
        // A null item stays as "" so that validation reports it with its index.
        key = Scalar(item, item_path).value_or("");
      }
      config->api_keys.push_back(std::move(key));
      config->api_key_settings.push_back(std::move(settings));
    }
  }

  void ReadModelGroups(const YAML::Node& node, const std::string& path, Config* config) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error(node.Mark(), path, Cat("expected a mapping of model names, got ", KindOf(node)));
      return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key_node = it->first;
      const YAML::Node value_node = it->second;
      if (!key_node.IsScalar()) {
        Error(key_node.Mark(), path, "keys must be model names");
        continue;
      }
      const std::string group_path = Cat(path, ".", key_node.Scalar());
      ModelGroupConfig& group = config->model_groups[key_node.Scalar()];
      ReadMapping(value_node, group_path,
                  {
                      {"routing_strategy", StringInto(&group.routing_strategy, /*lower=*/true)},
                      {"fallbacks", StringListInto(&group.fallbacks)},
                      {"context_window_fallbacks", StringListInto(&group.context_window_fallbacks)},
                      {"max_input_tokens", IntegerInto<int64_t>(&group.max_input_tokens)},
                      {"hedge_after_ms",
                       [this, &group](const YAML::Node& value, const std::string& value_path) {
                         std::optional<std::string> text = Scalar(value, value_path);
                         if (!text) return;
                         if (AsciiLower(*text) == "p95") {
                           group.hedge_after_ms = kHedgeAfterP95;
                           return;
                         }
                         int ms = 0;
                         if (ParseAt(value, [&](std::vector<std::string>* problems) {
                               return ParseInteger(value_path, *text, &ms, problems);
                             })) {
                           group.hedge_after_ms = ms;
                         }
                       }},
                  });
    }
  }

  void ReadModelList(const YAML::Node& node, const std::string& path, Config* config,
                     SourceMap* sources) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(node.Mark(), path, Cat("expected a list of deployments, got ", KindOf(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      ReadDeployment(node[i], Cat(path, "[", i, "]"), config, sources);
    }
  }

  void ReadDeployment(const YAML::Node& node, const std::string& path, Config* config,
                      SourceMap* sources) {
    const size_t errors_before = errors_->size();
    if (!node.IsMap()) {
      Error(node.Mark(), path, Cat("expected a mapping, got ", KindOf(node)));
      return;
    }
    std::optional<Text> model_name, id, version, info_id, info_version;
    DeploymentParams flat, nested;
    std::optional<YAML::Mark> litellm_mark;
    // Flat keys seen, to refuse mixing the two forms (which of two weights would win?).
    std::vector<std::pair<std::string, YAML::Mark>> flat_seen;
    auto flat_key = [&](Handler handler) -> Handler {
      return [&flat_seen, handler](const YAML::Node& value, const std::string& key_path) {
        flat_seen.emplace_back(key_path, value.Mark());
        handler(value, key_path);
      };
    };

    ReadMapping(node, path,
                {
                    {"model_name", TextInto(&model_name)},
                    {"id", TextInto(&id)},
                    {"version", TextInto(&version)},
                    {"provider", flat_key(TextInto(&flat.provider))},
                    {"model", flat_key(TextInto(&flat.model))},
                    {"api_base", flat_key(TextInto(&flat.api_base))},
                    {"api_key_env", flat_key(TextInto(&flat.api_key_env))},
                    {"weight", flat_key(DoubleInto(&flat.weight))},
                    {"rpm", flat_key(IntegerInto<int64_t>(&flat.rpm))},
                    {"tpm", flat_key(IntegerInto<int64_t>(&flat.tpm))},
                    {"priority", flat_key(IntegerInto<int>(&flat.priority))},
                    {"input_cost_per_token", flat_key(DoubleInto(&flat.input_cost_per_token))},
                    {"output_cost_per_token", flat_key(DoubleInto(&flat.output_cost_per_token))},
                    {"litellm_params",
                     [&](const YAML::Node& value, const std::string& params_path) {
                       litellm_mark = value.Mark();
                       ReadMapping(
                           value, params_path,
                           {
                               {"model", TextInto(&nested.model)},
                               {"api_base", TextInto(&nested.api_base)},
                               {"api_key", TextInto(&nested.api_key)},
                               {"rpm", IntegerInto<int64_t>(&nested.rpm)},
                               {"tpm", IntegerInto<int64_t>(&nested.tpm)},
                               {"weight", DoubleInto(&nested.weight)},
                               {"order", IntegerInto<int>(&nested.priority)},
                               {"input_cost_per_token", DoubleInto(&nested.input_cost_per_token)},
                               {"output_cost_per_token", DoubleInto(&nested.output_cost_per_token)},
                           });
                     }},
                    {"model_info",
                     [&](const YAML::Node& value, const std::string& info_path) {
                       ReadMapping(value, info_path,
                                   {
                                       {"id", TextInto(&info_id)},
                                       {"version", TextInto(&info_version)},
                                   });
                     }},
                });

    const bool litellm = litellm_mark.has_value();
    if (litellm) {
      for (const auto& [key_path, mark] : flat_seen) {
        Error(mark, key_path, "cannot be combined with litellm_params (use one form per entry)");
      }
    }
    const DeploymentParams& params = litellm ? nested : flat;

    Deployment deployment;
    if (model_name) {
      deployment.model_name = model_name->value;
    } else {
      Error(node.Mark(), Cat(path, ".model_name"), "required");
    }

    if (litellm) {
      ResolveLiteLLMModel(params, path, *litellm_mark, &deployment);
    } else {
      ResolveFlatModel(params, path, &deployment);
    }

    std::string base_label;
    bool default_base = !params.api_base.has_value();
    if (default_base) {
      deployment.api_base = DefaultApiBase(deployment.provider, env_);
      if (EnvValue(env_, BaseUrlEnvName(deployment.provider))) {
        base_label = BaseUrlEnvName(deployment.provider);
      }
    } else {
      deployment.api_base = NormalizeApiBase(params.api_base->value);
    }
    ResolveApiKey(params, path, litellm, default_base, node.Mark(), &deployment);

    if (params.weight) deployment.weight = *params.weight;
    if (params.rpm) deployment.rpm = *params.rpm;
    if (params.tpm) deployment.tpm = *params.tpm;
    if (params.priority) deployment.priority = *params.priority;
    if (params.input_cost_per_token) deployment.input_cost_per_token = *params.input_cost_per_token;
    if (params.output_cost_per_token) {
      deployment.output_cost_per_token = *params.output_cost_per_token;
    }

    std::optional<Text> chosen_id = PickOne(id, info_id, path, "id");
    std::optional<Text> chosen_version = PickOne(version, info_version, path, "version");
    if (chosen_version) deployment.version = chosen_version->value;
    deployment.id = chosen_id ? chosen_id->value : DefaultDeploymentId(deployment);

    // A half-read entry would only add misleading follow-up problems.
    if (errors_->size() != errors_before) return;
    config->deployments.push_back(std::move(deployment));
    sources->AddDeployment(
        {path, litellm ? DeploymentStyle::kLiteLLM : DeploymentStyle::kFlat, base_label});
  }

  // id and version may sit beside model_name or in model_info, but not in both.
  std::optional<Text> PickOne(const std::optional<Text>& top, const std::optional<Text>& info,
                              const std::string& path, std::string_view key) {
    if (top && info) {
      Error(info->mark, Cat(path, ".model_info.", key), Cat("conflicts with ", path, ".", key));
    }
    return top ? top : info;
  }

  void ResolveFlatModel(const DeploymentParams& params, const std::string& path,
                        Deployment* deployment) {
    if (params.provider) {
      std::optional<ProviderKind> kind = ParseProviderName(Trim(params.provider->value));
      if (kind) {
        deployment->provider = *kind;
      } else {
        Error(params.provider->mark, Cat(path, ".provider"),
              Cat("unknown provider \"", params.provider->value,
                  "\" (expected openai, anthropic or ollama)"));
      }
    }
    deployment->upstream_model = params.model ? params.model->value : deployment->model_name;
  }

  void ResolveLiteLLMModel(const DeploymentParams& params, const std::string& path,
                           const YAML::Mark& litellm_mark, Deployment* deployment) {
    std::string model_path = Cat(path, ".litellm_params.model");
    if (!params.model) {
      Error(litellm_mark, model_path, "required");
      return;
    }
    std::string_view model = Trim(params.model->value);
    size_t slash = model.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == model.size()) {
      Error(params.model->mark, model_path,
            Cat("expected \"<provider>/<model>\" (e.g. openai/gpt-4o), got \"", model, "\""));
      return;
    }
    std::string_view prefix = model.substr(0, slash);
    std::optional<ProviderKind> kind = ParseProviderName(prefix);
    // LiteLLM spells Ollama's chat endpoint as its own provider.
    if (!kind && AsciiLower(prefix) == "ollama_chat") kind = ProviderKind::kOllama;
    if (!kind) {
      Error(params.model->mark, model_path,
            Cat("unknown provider \"", prefix, "\" (expected openai, anthropic or ollama)"));
      return;
    }
    deployment->provider = *kind;
    deployment->upstream_model = std::string(model.substr(slash + 1));
  }

  void ResolveApiKey(const DeploymentParams& params, const std::string& path, bool litellm,
                     bool default_base, const YAML::Mark& entry_mark, Deployment* deployment) {
    std::string env_name;
    std::string key_path;
    YAML::Mark key_mark = entry_mark;
    bool has_source = false;
    if (params.api_key) {
      key_path = Cat(path, ".litellm_params.api_key");
      key_mark = params.api_key->mark;
      std::string_view value = Trim(params.api_key->value);
      if (value.starts_with(kEnvKeyPrefix)) {
        env_name = std::string(Trim(value.substr(kEnvKeyPrefix.size())));
        has_source = true;
        if (env_name.empty()) Error(key_mark, key_path, "expected os.environ/<VARIABLE>");
      } else if (!value.empty()) {
        // A literal key: accepted for LiteLLM compatibility; never echoed anywhere.
        deployment->api_key = std::string(value);
        has_source = true;
      }
    } else if (params.api_key_env) {
      key_path = Cat(path, ".api_key_env");
      key_mark = params.api_key_env->mark;
      env_name = std::string(Trim(params.api_key_env->value));
      has_source = !env_name.empty();
    }

    const bool requires_key = RequiresApiKey(deployment->provider, deployment->api_base);
    if (!has_source && (default_base || requires_key)) {
      env_name = std::string(ApiKeyEnvName(deployment->provider));
    }
    if (!env_name.empty()) {
      deployment->api_key_env = env_name;
      deployment->api_key = EnvValue(env_, env_name).value_or("");
    }
    if (!deployment->api_key.empty() || !requires_key) return;
    if (has_source) {
      Error(key_mark, key_path,
            Cat("environment variable ", env_name, " is not set (", RedactUrl(deployment->api_base),
                " requires an API key)"));
    } else {
      Error(entry_mark, path,
            Cat(RedactUrl(deployment->api_base), " requires an API key: set ", env_name,
                " or name a variable in ",
                litellm ? "litellm_params.api_key (os.environ/<VARIABLE>)" : "api_key_env"));
    }
  }

  std::string source_;
  const Environment& env_;
  std::vector<std::string>* errors_;
};

// Counts documents without building them. yaml-cpp 0.7 needs this guard: on a stray top-level
// ',' its parser stops advancing, so YAML::LoadAll loops forever and YAML::Load returns an empty
// document, silently ignoring the whole file.
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  YAML::Mark start;
};

struct DocumentScan {
  int documents = 0;  // counting stops at 2
  YAML::Mark second_document;
  bool stuck = false;  // the parser stopped advancing at stuck_mark
  YAML::Mark stuck_mark;
};

// Throws YAML::Exception on syntax errors, like YAML::Load.
DocumentScan ScanDocuments(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  DocumentScan scan;
  std::optional<int> previous_start;
  while (scan.documents < 2 && parser.HandleNextDocument(counter)) {
    if (previous_start == counter.start.pos) {
      scan.stuck = true;
      scan.stuck_mark = counter.start;
      return scan;
    }
    previous_start = counter.start.pos;
    if (++scan.documents == 2) scan.second_document = counter.start;
  }
  // A second document that is itself a stuck one must be reported as what it is.
  if (scan.documents == 2 && parser.HandleNextDocument(counter) &&
      counter.start.pos == previous_start) {
    scan.stuck = true;
    scan.stuck_mark = counter.start;
  }
  return scan;
}

}  // namespace

absl::Status ApplyYaml(std::string_view yaml_text, std::string_view source_name,
                       const Environment& env, Config* config, SourceMap* sources,
                       std::vector<std::string>* errors) {
  auto invalid = [](std::string message) {
    return absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
  };
  auto at = [&](const YAML::Mark& mark) {
    return Cat(source_name, ":", mark.line + 1, ":", mark.column + 1, ": ");
  };
  try {
    std::string text(yaml_text);
    DocumentScan scan = ScanDocuments(text);
    if (scan.stuck) {
      std::string_view what = "unexpected content";
      if (scan.stuck_mark.pos >= 0 && static_cast<size_t>(scan.stuck_mark.pos) < text.size() &&
          text[scan.stuck_mark.pos] == ',') {
        what = "unexpected ','";
      }
      return invalid(Cat(at(scan.stuck_mark), what));
    }
    if (scan.documents > 1) {
      return invalid(Cat(at(scan.second_document), "expected a single YAML document"));
    }
    if (scan.documents == 0) return absl::OkStatus();
    YamlReader(source_name, env, errors).ReadDocument(YAML::Load(text), config, sources);
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) return invalid(Cat(source_name, ": ", e.msg));
    return invalid(Cat(at(e.mark), e.msg));
  } catch (const std::exception& e) {
    return invalid(Cat(source_name, ": ", e.what()));
  } catch (...) {
    return invalid(Cat(source_name, ": unreadable YAML"));
  }
}

}  // namespace ailb::config::internal
