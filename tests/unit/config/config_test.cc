// The configuration snapshot from environment variables alone, validation, and the small helpers
// declared in config.h. YAML files are covered by yaml_config_test.cc.
#include "ailb/config/config.h"

#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::config {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

absl::StatusOr<Config> Load(const Environment& env) { return LoadConfig(env, std::nullopt); }

std::string ErrorOf(const absl::StatusOr<Config>& result) {
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  return std::string(result.status().message());
}

std::vector<std::string> Ids(const Config& config) {
  std::vector<std::string> ids;
  for (const Deployment& deployment : config.deployments) ids.push_back(deployment.id);
  return ids;
}

TEST(ConfigEnvTest, EmptyEnvironmentGivesDocumentedDefaults) {
  absl::StatusOr<Config> config = Load({});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.host, "0.0.0.0");
  EXPECT_EQ(config->server.http_port, 8080);
  EXPECT_EQ(config->server.grpc_port, 50051);
  EXPECT_EQ(config->server.http_threads, 2);
  EXPECT_EQ(config->server.max_body_bytes, 8388608);
  EXPECT_EQ(config->server.drain_timeout_ms, 30000);
  EXPECT_EQ(config->timeouts.connect_ms, 5000);
  EXPECT_EQ(config->timeouts.first_byte_ms, 120000);
  EXPECT_EQ(config->timeouts.total_ms, 600000);
  EXPECT_EQ(config->timeouts.stream_idle_ms, 120000);
  EXPECT_EQ(config->module_id, "ailb-1");
  EXPECT_EQ(config->routing_strategy, "weighted");
  EXPECT_TRUE(config->enable_memory);
  EXPECT_TRUE(config->enable_rag);
  EXPECT_EQ(config->data_dir, "./data");
  EXPECT_EQ(config->log_level, "info");
  EXPECT_EQ(config->log_format, "text");
  EXPECT_THAT(config->api_keys, IsEmpty());
  EXPECT_THAT(config->deployments, IsEmpty());
  EXPECT_EQ(config->source_file, "");
  EXPECT_THAT(Validate(*config), IsEmpty());
}

TEST(ConfigEnvTest, EveryScalarVariableIsApplied) {
  absl::StatusOr<Config> config = Load({
      {"HOST", "127.0.0.1"},
      {"HTTP_PORT", "9090"},
      {"GRPC_PORT", "50052"},
      {"MODULE_ID", "ailb-7"},
      {"ROUTING_STRATEGY", "least_busy"},
      {"ENABLE_MEMORY", "false"},
      {"ENABLE_RAG", "0"},
      {"AILB_DATA_DIR", "/var/lib/ailb"},
      {"HTTP_THREADS", "8"},
      {"LOG_LEVEL", "debug"},
      {"LOG_FORMAT", "json"},
      {"AILB_API_KEYS", "first-key-123, second-key-456"},
      {"AILB_MAX_BODY_BYTES", "1048576"},
      {"AILB_CONNECT_TIMEOUT_MS", "1500"},
      {"AILB_FIRST_BYTE_TIMEOUT_MS", "2500"},
      {"AILB_TOTAL_TIMEOUT_MS", "3500"},
      {"AILB_STREAM_IDLE_TIMEOUT_MS", "4500"},
      {"AILB_DRAIN_TIMEOUT_MS", "5500"},
  });
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.host, "127.0.0.1");
  EXPECT_EQ(config->server.http_port, 9090);
  EXPECT_EQ(config->server.grpc_port, 50052);
  EXPECT_EQ(config->module_id, "ailb-7");
  EXPECT_EQ(config->routing_strategy, "least_busy");
  EXPECT_FALSE(config->enable_memory);
  EXPECT_FALSE(config->enable_rag);
  EXPECT_EQ(config->data_dir, "/var/lib/ailb");
  EXPECT_EQ(config->server.http_threads, 8);
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->log_format, "json");
  EXPECT_THAT(config->api_keys, ElementsAre("first-key-123", "second-key-456"));
  EXPECT_EQ(config->server.max_body_bytes, 1048576);
  EXPECT_EQ(config->timeouts.connect_ms, 1500);
  EXPECT_EQ(config->timeouts.first_byte_ms, 2500);
  EXPECT_EQ(config->timeouts.total_ms, 3500);
  EXPECT_EQ(config->timeouts.stream_idle_ms, 4500);
  EXPECT_EQ(config->server.drain_timeout_ms, 5500);
}

TEST(ConfigEnvTest, EnumerationsAreCaseInsensitiveAndValuesTrimmed) {
  absl::StatusOr<Config> config = Load({{"LOG_LEVEL", "WARN"},
                                        {"LOG_FORMAT", " Json "},
                                        {"ROUTING_STRATEGY", "Failover"},
                                        {"HTTP_PORT", " 8181 "}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->log_level, "warn");
  EXPECT_EQ(config->log_format, "json");
  EXPECT_EQ(config->routing_strategy, "failover");
  EXPECT_EQ(config->server.http_port, 8181);
}

TEST(ConfigEnvTest, BlankVariablesCountAsUnset) {
  absl::StatusOr<Config> config =
      Load({{"HTTP_PORT", ""}, {"ENABLE_RAG", "  "}, {"MODULE_ID", ""}, {"OPENAI_MODELS", ""}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.http_port, 8080);
  EXPECT_TRUE(config->enable_rag);
  EXPECT_EQ(config->module_id, "ailb-1");
  EXPECT_THAT(config->deployments, IsEmpty());
}

TEST(ConfigEnvTest, PortZeroMeansPickAFreePort) {
  absl::StatusOr<Config> config = Load({{"HTTP_PORT", "0"}, {"GRPC_PORT", "0"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.http_port, 0);
  EXPECT_EQ(config->server.grpc_port, 0);
}

class BooleanSpellingTest : public testing::TestWithParam<std::pair<std::string, bool>> {};

TEST_P(BooleanSpellingTest, IsAccepted) {
  const auto& [text, expected] = GetParam();
  absl::StatusOr<Config> config = Load({{"ENABLE_MEMORY", text}, {"ENABLE_RAG", text}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->enable_memory, expected);
  EXPECT_EQ(config->enable_rag, expected);
}

INSTANTIATE_TEST_SUITE_P(AllSpellings, BooleanSpellingTest,
                         testing::Values(std::pair<std::string, bool>{"true", true},
                                         std::pair<std::string, bool>{"TRUE", true},
                                         std::pair<std::string, bool>{"1", true},
                                         std::pair<std::string, bool>{"yes", true},
                                         std::pair<std::string, bool>{"On", true},
                                         std::pair<std::string, bool>{"false", false},
                                         std::pair<std::string, bool>{"False", false},
                                         std::pair<std::string, bool>{"0", false},
                                         std::pair<std::string, bool>{"NO", false},
                                         std::pair<std::string, bool>{"off", false}));

TEST(ConfigEnvTest, UnknownBooleanNamesTheVariable) {
  std::string error = ErrorOf(Load({{"ENABLE_RAG", "maybe"}}));
  EXPECT_THAT(error, AllOf(HasSubstr("ENABLE_RAG: not a boolean"), HasSubstr("maybe")));
  EXPECT_THAT(ErrorOf(Load({{"ENABLE_MEMORY", "2"}})), HasSubstr("ENABLE_MEMORY: not a boolean"));
}

TEST(ConfigEnvTest, NonIntegerIsReportedWithTheVariableName) {
  EXPECT_THAT(ErrorOf(Load({{"HTTP_PORT", "abc"}})), HasSubstr("HTTP_PORT: not an integer: abc"));
  EXPECT_THAT(ErrorOf(Load({{"AILB_TOTAL_TIMEOUT_MS", "10s"}})),
              HasSubstr("AILB_TOTAL_TIMEOUT_MS: not an integer: 10s"));
  EXPECT_THAT(ErrorOf(Load({{"GRPC_PORT", "99999999999"}})), HasSubstr("GRPC_PORT: out of range"));
}

TEST(ConfigEnvTest, RangesAreCheckedAndNamedByVariable) {
  EXPECT_THAT(ErrorOf(Load({{"HTTP_PORT", "70000"}})),
              HasSubstr("HTTP_PORT: must be between 0 and 65535, got 70000"));
  EXPECT_THAT(ErrorOf(Load({{"HTTP_THREADS", "0"}})), HasSubstr("HTTP_THREADS: must be between 1"));
  EXPECT_THAT(ErrorOf(Load({{"AILB_MAX_BODY_BYTES", "1023"}})),
              HasSubstr("AILB_MAX_BODY_BYTES: must be between 1024 and 1073741824"));
  EXPECT_THAT(ErrorOf(Load({{"AILB_CONNECT_TIMEOUT_MS", "0"}})),
              HasSubstr("AILB_CONNECT_TIMEOUT_MS: must be greater than 0"));
  EXPECT_THAT(ErrorOf(Load({{"ROUTING_STRATEGY", "fastest"}})),
              AllOf(HasSubstr("ROUTING_STRATEGY: must be one of"), HasSubstr("cost_optimized"),
                    HasSubstr("fastest")));
  EXPECT_TRUE(Load({{"AILB_MAX_BODY_BYTES", "1024"}}).ok());
  EXPECT_TRUE(Load({{"AILB_MAX_BODY_BYTES", "1073741824"}}).ok());
}

TEST(ConfigEnvTest, EveryRoutingStrategyIsAccepted) {
  for (const char* strategy :
       {"round_robin", "weighted", "least_busy", "latency_optimized", "cost_optimized",
        "usage_based", "load_balanced", "failover", "random"}) {
    absl::StatusOr<Config> config = Load({{"ROUTING_STRATEGY", strategy}});
    ASSERT_TRUE(config.ok()) << strategy << ": " << config.status();
    EXPECT_EQ(config->routing_strategy, strategy);
  }
}

TEST(ConfigEnvTest, SeveralProblemsAreReportedAtOnce) {
  std::string error = ErrorOf(Load({
      {"HTTP_PORT", "abc"},
      {"HTTP_THREADS", "100"},
      {"LOG_LEVEL", "loud"},
      {"ENABLE_MEMORY", "perhaps"},
      {"AILB_MAX_BODY_BYTES", "10"},
  }));
  EXPECT_THAT(error, HasSubstr("HTTP_PORT: not an integer: abc"));
  EXPECT_THAT(error, HasSubstr("HTTP_THREADS: must be between 1 and 64, got 100"));
  EXPECT_THAT(error, HasSubstr("LOG_LEVEL: must be one of"));
  EXPECT_THAT(error, HasSubstr("ENABLE_MEMORY: not a boolean"));
  EXPECT_THAT(error, HasSubstr("AILB_MAX_BODY_BYTES: must be between"));
  // Joined with "; ", one entry per problem.
  size_t separators = 0;
  for (size_t pos = error.find("; "); pos != std::string::npos; pos = error.find("; ", pos + 1)) {
    ++separators;
  }
  EXPECT_EQ(separators, 4u) << error;
}

TEST(ConfigEnvTest, ModelListsBecomeDeployments) {
  absl::StatusOr<Config> config = Load({
      {"OPENAI_API_KEY", "sk-openai-test"},
      {"OPENAI_BASE_URL", "https://openai.example.com/v1//"},
      {"OPENAI_MODELS", " gpt-4o , ,gpt-4o-mini,"},
      {"ANTHROPIC_API_KEY", "sk-ant-test"},
      {"ANTHROPIC_MODELS", "claude-3-5-sonnet"},
      {"OLLAMA_MODELS", "llama3"},
  });
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->deployments.size(), 4u);

  const Deployment& gpt = config->deployments[0];
  EXPECT_EQ(gpt.id, "openai/gpt-4o");
  EXPECT_EQ(gpt.model_name, "gpt-4o");
  EXPECT_EQ(gpt.upstream_model, "gpt-4o");
  EXPECT_EQ(gpt.provider, ProviderKind::kOpenAI);
  EXPECT_EQ(gpt.api_base, "https://openai.example.com/v1");
  EXPECT_EQ(gpt.api_key, "sk-openai-test");
  EXPECT_EQ(gpt.api_key_env, "OPENAI_API_KEY");
  EXPECT_EQ(gpt.weight, 1.0);
  EXPECT_EQ(config->deployments[1].model_name, "gpt-4o-mini");

  const Deployment& claude = config->deployments[2];
  EXPECT_EQ(claude.id, "anthropic/claude-3-5-sonnet");
  EXPECT_EQ(claude.provider, ProviderKind::kAnthropic);
  EXPECT_EQ(claude.api_base, "https://api.anthropic.com");
  EXPECT_EQ(claude.api_key, "sk-ant-test");
  EXPECT_EQ(claude.api_key_env, "ANTHROPIC_API_KEY");

  const Deployment& llama = config->deployments[3];
  EXPECT_EQ(llama.id, "ollama/llama3");
  EXPECT_EQ(llama.provider, ProviderKind::kOllama);
  EXPECT_EQ(llama.api_base, "http://localhost:11434");
  EXPECT_EQ(llama.api_key, "");
  EXPECT_EQ(llama.api_key_env, "");

  EXPECT_THAT(config->ModelNames(),
              ElementsAre("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama3"));
}

TEST(ConfigEnvTest, SameModelForTwoProvidersFormsOneGroup) {
  absl::StatusOr<Config> config = Load({
      {"OPENAI_BASE_URL", "http://vllm:8000/v1"},
      {"OPENAI_MODELS", "llama3"},
      {"OLLAMA_BASE_URL", "http://ollama:11434/"},
      {"OLLAMA_MODELS", "llama3,mistral"},
  });
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(Ids(*config), ElementsAre("openai/llama3", "ollama/llama3", "ollama/mistral"));
  EXPECT_EQ(config->deployments[0].model_name, config->deployments[1].model_name);
  EXPECT_EQ(config->deployments[1].api_base, "http://ollama:11434");
  EXPECT_THAT(config->ModelNames(), ElementsAre("llama3", "mistral"));
}

TEST(ConfigEnvTest, PublicNameCanMapToAnotherUpstreamModel) {
  absl::StatusOr<Config> config = Load({
      {"OPENAI_API_KEY", "sk-openai-test"},
      {"OPENAI_MODELS", "fast = gpt-4o-mini, gpt-4o"},
      {"ANTHROPIC_API_KEY", "sk-ant-test"},
      {"ANTHROPIC_MODELS", "fast=claude-3-haiku"},
  });
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->deployments.size(), 3u);
  EXPECT_EQ(config->deployments[0].model_name, "fast");
  EXPECT_EQ(config->deployments[0].upstream_model, "gpt-4o-mini");
  EXPECT_EQ(config->deployments[0].id, "openai/gpt-4o-mini");
  EXPECT_EQ(config->deployments[2].model_name, "fast");
  EXPECT_EQ(config->deployments[2].upstream_model, "claude-3-haiku");
  EXPECT_THAT(config->ModelNames(), ElementsAre("fast", "gpt-4o"));
}

TEST(ConfigEnvTest, MalformedModelEntryIsReported) {
  EXPECT_THAT(ErrorOf(Load({{"OLLAMA_MODELS", "llama3,=mistral"}})),
              HasSubstr("OLLAMA_MODELS[1]: expected \"model\" or \"public=upstream\""));
  EXPECT_THAT(ErrorOf(Load({{"OLLAMA_MODELS", "fast="}})), HasSubstr("OLLAMA_MODELS[0]"));
  EXPECT_THAT(ErrorOf(Load({{"OLLAMA_MODELS", "my model"}})),
              HasSubstr("OLLAMA_MODELS[0]: must not contain whitespace"));
  EXPECT_THAT(ErrorOf(Load({{"OLLAMA_BASE_URL", "ollama:11434"}, {"OLLAMA_MODELS", "a,b"}})),
              HasSubstr("OLLAMA_BASE_URL: must start with http:// or https://"));
}

TEST(ConfigEnvTest, CloudKeyIsRequiredOnlyForTheCloud) {
  EXPECT_THAT(
      ErrorOf(Load({{"OPENAI_MODELS", "gpt-4o"}})),
      HasSubstr("OPENAI_API_KEY: not set, but OPENAI_MODELS uses https://api.openai.com/v1"));
  EXPECT_THAT(ErrorOf(Load({{"ANTHROPIC_MODELS", "claude"}})),
              HasSubstr("ANTHROPIC_API_KEY: not set"));

  // An OpenAI-compatible local server needs no key.
  absl::StatusOr<Config> local =
      Load({{"OPENAI_BASE_URL", "http://localhost:8000/v1"}, {"OPENAI_MODELS", "qwen"}});
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->deployments[0].api_key, "");
  EXPECT_EQ(local->deployments[0].api_key_env, "OPENAI_API_KEY");
}

TEST(ConfigEnvTest, DuplicateIdsGetSuffixes) {
  absl::StatusOr<Config> config = Load({
      {"OPENAI_API_KEY", "sk-openai-test"},
      {"OPENAI_MODELS", "a=gpt-4o,b=gpt-4o,gpt-4o"},
  });
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(Ids(*config), ElementsAre("openai/gpt-4o", "openai/gpt-4o#2", "openai/gpt-4o#3"));
}

TEST(ConfigEnvTest, ApiKeysAreCheckedWithoutEchoingThem) {
  std::string error = ErrorOf(Load({{"AILB_API_KEYS", "long-enough-key,short7x"}}));
  EXPECT_THAT(error, HasSubstr("AILB_API_KEYS[1]: must be at least 8 characters"));
  EXPECT_THAT(error, Not(HasSubstr("short7x")));
  EXPECT_THAT(error, Not(HasSubstr("long-enough-key")));
}

TEST(ConfigEnvTest, Sha256KeysMustHoldSixtyFourHexDigits) {
  const std::string digest(64, 'a');  // any case is accepted
  const std::string upper_digest =
      "FB49157739821ED70A91AAD386F3819AEBE5C32367ADF36ED74820F5B1C118E7";
  absl::StatusOr<Config> valid =
      Load({{"AILB_API_KEYS",
             absl::StrCat("sha256:", digest, ",sha256:", upper_digest, ",plain-key-123")}});
  ASSERT_TRUE(valid.ok()) << valid.status();

  const std::string short_digest = absl::StrCat("sha256:", std::string(63, 'b'));
  const std::string long_digest = absl::StrCat("sha256:", std::string(65, 'c'));
  const std::string not_hex = absl::StrCat("sha256:", std::string(63, 'd'), "g");
  std::string error =
      ErrorOf(Load({{"AILB_API_KEYS", absl::StrCat("plain-key-123,", short_digest, ",", long_digest,
                                                   ",", not_hex)}}));
  EXPECT_THAT(error, Not(HasSubstr("AILB_API_KEYS[0]")));
  EXPECT_THAT(error, HasSubstr("AILB_API_KEYS[1]: a \"sha256:\" key must be followed by exactly 64 "
                               "hex digits (the SHA-256 of the key), got 63 character(s)"));
  EXPECT_THAT(error, HasSubstr("AILB_API_KEYS[2]: a \"sha256:\" key must be followed by exactly 64 "
                               "hex digits (the SHA-256 of the key), got 65 character(s)"));
  EXPECT_THAT(error, HasSubstr("AILB_API_KEYS[3]: a \"sha256:\" key must be followed by exactly 64 "
                               "hex digits (the SHA-256 of the key), got 64 character(s) "
                               "including non-hex ones"));
  // Never the key, nor its digest.
  EXPECT_THAT(error, Not(HasSubstr(std::string(63, 'b'))));
  EXPECT_THAT(error, Not(HasSubstr(std::string(65, 'c'))));
  EXPECT_THAT(error, Not(HasSubstr("plain-key-123")));
}

TEST(ValidateTest, Sha256AdminKeyMustHoldSixtyFourHexDigits) {
  Config config;
  config.admin_key = absl::StrCat("sha256:", std::string(64, 'e'));
  EXPECT_THAT(Validate(config), IsEmpty());
  config.admin_key = "plain-admin-key";
  EXPECT_THAT(Validate(config), IsEmpty());
  config.admin_key = "sha256:feedface";
  const std::vector<std::string> problems = Validate(config);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0], HasSubstr("admin_key: a \"sha256:\" key must be followed by exactly 64 "
                                     "hex digits"));
  EXPECT_THAT(problems[0], Not(HasSubstr("feedface")));
}

TEST(ConfigEnvTest, SecretsNeverAppearInErrors) {
  std::string error = ErrorOf(Load({
      {"OPENAI_API_KEY", "sk-super-secret-value"},
      {"OPENAI_MODELS", "bad model"},
      {"AILB_API_KEYS", "tiny"},
      {"HTTP_PORT", "nope"},
  }));
  EXPECT_THAT(error, Not(HasSubstr("sk-super-secret-value")));
  EXPECT_THAT(error, Not(HasSubstr("tiny")));
}

TEST(ValidateTest, ReportsEveryProblemWithItsPath) {
  Config config;
  config.server.http_port = -1;
  config.server.grpc_port = 65536;
  config.server.http_threads = 65;
  config.server.max_body_bytes = int64_t{2} << 30;
  config.server.drain_timeout_ms = 0;
  config.timeouts.first_byte_ms = -5;
  config.log_level = "verbose";
  config.log_format = "xml";
  config.routing_strategy = "";
  config.api_keys = {""};
  Deployment deployment;
  deployment.id = "openai/x";
  deployment.model_name = "has space";
  deployment.upstream_model = "x";
  deployment.api_base = "ftp://example.com";
  deployment.weight = std::numeric_limits<double>::infinity();
  deployment.rpm = -1;
  deployment.tpm = -2;
  deployment.input_cost_per_token = -0.5;
  deployment.output_cost_per_token = std::numeric_limits<double>::quiet_NaN();
  config.deployments.push_back(deployment);

  std::vector<std::string> problems = Validate(config);
  auto has = [&](const std::string& prefix) {
    for (const std::string& problem : problems) {
      if (problem.rfind(prefix, 0) == 0) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("server.http_port: "));
  EXPECT_TRUE(has("server.grpc_port: "));
  EXPECT_TRUE(has("server.http_threads: "));
  EXPECT_TRUE(has("server.max_body_bytes: "));
  EXPECT_TRUE(has("server.drain_timeout_ms: "));
  EXPECT_TRUE(has("timeouts.first_byte_ms: must be greater than 0"));
  EXPECT_TRUE(has("log_level: "));
  EXPECT_TRUE(has("log_format: "));
  EXPECT_TRUE(has("routing_strategy: "));
  EXPECT_TRUE(has("api_keys[0]: "));
  EXPECT_TRUE(has("deployments[0].model_name: must not contain whitespace"));
  EXPECT_TRUE(has("deployments[0].api_base: must start with http:// or https://"));
  EXPECT_TRUE(has("deployments[0].weight: "));
  EXPECT_TRUE(has("deployments[0].rpm: "));
  EXPECT_TRUE(has("deployments[0].tpm: "));
  EXPECT_TRUE(has("deployments[0].input_cost_per_token: "));
  EXPECT_TRUE(has("deployments[0].output_cost_per_token: "));
  EXPECT_EQ(problems.size(), 17u) << testing::PrintToString(problems);
}

TEST(ValidateTest, ValidConfigHasNoProblems) {
  Config config;
  Deployment deployment;
  deployment.id = "ollama/llama3";
  deployment.model_name = "llama3";
  deployment.provider = ProviderKind::kOllama;
  deployment.upstream_model = "llama3";
  deployment.api_base = "http://localhost:11434";
  deployment.weight = 0;  // allowed: a drained deployment
  config.deployments.push_back(deployment);
  config.api_keys = {"12345678"};
  EXPECT_THAT(Validate(config), IsEmpty());
}

TEST(ValidateTest, EmptyModelNameIsReported) {
  Config config;
  Deployment deployment;
  deployment.id = "openai/x";
  deployment.upstream_model = "x";
  deployment.api_base = "https://api.openai.com/v1";
  config.deployments.push_back(deployment);
  EXPECT_THAT(Validate(config), ElementsAre("deployments[0].model_name: must not be empty"));
}

TEST(ProviderNameTest, RoundTrips) {
  for (ProviderKind kind :
       {ProviderKind::kOpenAI, ProviderKind::kAnthropic, ProviderKind::kOllama}) {
    EXPECT_EQ(ParseProviderName(ProviderName(kind)), kind);
  }
  EXPECT_EQ(ProviderName(ProviderKind::kOpenAI), "openai");
  EXPECT_EQ(ProviderName(ProviderKind::kAnthropic), "anthropic");
  EXPECT_EQ(ProviderName(ProviderKind::kOllama), "ollama");
  EXPECT_EQ(ParseProviderName("Anthropic"), ProviderKind::kAnthropic);
  EXPECT_EQ(ParseProviderName("azure"), std::nullopt);
  EXPECT_EQ(ParseProviderName(""), std::nullopt);
}

TEST(ModelNamesTest, FirstSeenOrderWithoutRepeats) {
  Config config;
  for (const char* name : {"b", "a", "b", "c", "a"}) {
    Deployment deployment;
    deployment.model_name = name;
    config.deployments.push_back(deployment);
  }
  EXPECT_THAT(config.ModelNames(), ElementsAre("b", "a", "c"));
}

TEST(ProcessEnvironmentTest, ReadsTheProcessEnvironment) {
  constexpr char kName[] = "AILB_CONFIG_TEST_PROCESS_ENV";
  ASSERT_EQ(setenv(kName, "a=b=c", /*overwrite=*/1), 0);
  Environment env = ProcessEnvironment();
  unsetenv(kName);
  ASSERT_TRUE(env.contains(kName));
  EXPECT_EQ(env.at(kName), "a=b=c");  // only the first '=' separates name and value
}

TEST(ConfigStoreTest, ReadersKeepTheSnapshotTheyTook) {
  auto first = std::make_shared<const Config>();
  ConfigStore store(first);
  std::shared_ptr<const Config> held = store.Current();
  Config next_config;
  next_config.module_id = "ailb-2";
  store.Publish(std::make_shared<const Config>(next_config));
  EXPECT_EQ(held->module_id, "ailb-1");
  EXPECT_EQ(store.Current()->module_id, "ailb-2");
}

}  // namespace
}  // namespace ailb::config
