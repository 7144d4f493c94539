// The YAML configuration file: ailb's flat form, LiteLLM's form, precedence of the environment,
// and how problems in a file are reported.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "ailb/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ailb::config {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// A YAML file under the test temp directory, removed when the test ends.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    std::string pattern = testing::TempDir() + "ailb_config_XXXXXX.yaml";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkstemps(name.data(), /*suffixlen=*/5);
    if (fd < 0) {
      ADD_FAILURE() << "mkstemps failed for " << pattern;
      return;
    }
    close(fd);
    path_ = name.data();
    std::ofstream(path_) << contents;
  }
  ~TempFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

absl::StatusOr<Config> LoadYaml(const std::string& yaml, const Environment& env = {}) {
  return LoadConfigFromYamlText(env, yaml, "test.yaml");
}

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

TEST(YamlConfigTest, FlatFormSetsEverything) {
  TempFile file(R"yaml(
server:
  host: 127.0.0.1
  http_port: 9000
  grpc_port: 9001
  http_threads: 4
  max_body_bytes: 2048
  drain_timeout_ms: 1000
module_id: ailb-east
routing_strategy: cost_optimized
enable_memory: false
enable_rag: no
data_dir: /srv/ailb
log_level: warn
log_format: json
api_keys: [client-key-0001, client-key-0002]
timeouts:
  connect_ms: 100
  first_byte_ms: 200
  total_ms: 300
  stream_idle_ms: 400
model_list:
  - model_name: gpt-4o
    provider: openai
    model: gpt-4o-2024-08-06
    api_base: https://proxy.example.com/v1/
    api_key_env: MY_OPENAI_KEY
    id: primary
    weight: 2.5
    rpm: 600
    tpm: 100000
    priority: 1
    input_cost_per_token: 0.0000025
    output_cost_per_token: 0.00001
    version: blue
  - model_name: gpt-4o
    provider: ollama
)yaml");
  absl::StatusOr<Config> config = LoadConfig({{"MY_OPENAI_KEY", "sk-from-env"}}, file.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source_file, file.path());
  EXPECT_EQ(config->server.host, "127.0.0.1");
  EXPECT_EQ(config->server.http_port, 9000);
  EXPECT_EQ(config->server.grpc_port, 9001);
  EXPECT_EQ(config->server.http_threads, 4);
  EXPECT_EQ(config->server.max_body_bytes, 2048);
  EXPECT_EQ(config->server.drain_timeout_ms, 1000);
  EXPECT_EQ(config->module_id, "ailb-east");
  EXPECT_EQ(config->routing_strategy, "cost_optimized");
  EXPECT_FALSE(config->enable_memory);
  EXPECT_FALSE(config->enable_rag);
  EXPECT_EQ(config->data_dir, "/srv/ailb");
  EXPECT_EQ(config->log_level, "warn");
  EXPECT_EQ(config->log_format, "json");
  EXPECT_THAT(config->api_keys, ElementsAre("client-key-0001", "client-key-0002"));
  EXPECT_EQ(config->timeouts.connect_ms, 100);
  EXPECT_EQ(config->timeouts.first_byte_ms, 200);
  EXPECT_EQ(config->timeouts.total_ms, 300);
  EXPECT_EQ(config->timeouts.stream_idle_ms, 400);

  ASSERT_EQ(config->deployments.size(), 2u);
  const Deployment& first = config->deployments[0];
  EXPECT_EQ(first.id, "primary");
  EXPECT_EQ(first.model_name, "gpt-4o");
  EXPECT_EQ(first.provider, ProviderKind::kOpenAI);
  EXPECT_EQ(first.upstream_model, "gpt-4o-2024-08-06");
  EXPECT_EQ(first.api_base, "https://proxy.example.com/v1");
  EXPECT_EQ(first.api_key, "sk-from-env");
  EXPECT_EQ(first.api_key_env, "MY_OPENAI_KEY");
  EXPECT_EQ(first.weight, 2.5);
  EXPECT_EQ(first.rpm, 600);
  EXPECT_EQ(first.tpm, 100000);
  EXPECT_EQ(first.priority, 1);
  EXPECT_DOUBLE_EQ(first.input_cost_per_token, 0.0000025);
  EXPECT_DOUBLE_EQ(first.output_cost_per_token, 0.00001);
  EXPECT_EQ(first.version, "blue");

  // Defaults: upstream model = public name, provider's endpoint, id from provider and model.
  const Deployment& second = config->deployments[1];
  EXPECT_EQ(second.id, "ollama/gpt-4o");
  EXPECT_EQ(second.provider, ProviderKind::kOllama);
  EXPECT_EQ(second.upstream_model, "gpt-4o");
  EXPECT_EQ(second.api_base, "http://localhost:11434");
  EXPECT_EQ(second.api_key, "");
  EXPECT_EQ(second.weight, 1.0);
  EXPECT_THAT(config->ModelNames(), ElementsAre("gpt-4o"));
}

TEST(YamlConfigTest, LiteLLMFormLoads) {
  absl::StatusOr<Config> config = LoadYaml(R"yaml(
model_list:
  - model_name: smart
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 100
      tpm: 5000
      weight: 3
      order: 2
      input_cost_per_token: 0.000005
      output_cost_per_token: 0.000015
    model_info:
      version: green
      id: smart-openai
  - model_name: smart
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: literal-anthropic-key
    version: blue
  - model_name: local
    litellm_params:
      model: ollama_chat/library/llama3
      api_base: http://ollama:11434/
)yaml",
                                           {{"OPENAI_API_KEY", "sk-openai-env"}});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->deployments.size(), 3u);

  const Deployment& openai = config->deployments[0];
  EXPECT_EQ(openai.id, "smart-openai");
  EXPECT_EQ(openai.model_name, "smart");
  EXPECT_EQ(openai.provider, ProviderKind::kOpenAI);
  EXPECT_EQ(openai.upstream_model, "gpt-4o");
  EXPECT_EQ(openai.api_base, "https://api.openai.com/v1");
  EXPECT_EQ(openai.api_key, "sk-openai-env");
  EXPECT_EQ(openai.api_key_env, "OPENAI_API_KEY");
  EXPECT_EQ(openai.rpm, 100);
  EXPECT_EQ(openai.tpm, 5000);
  EXPECT_EQ(openai.weight, 3.0);
  EXPECT_EQ(openai.priority, 2);
  EXPECT_DOUBLE_EQ(openai.input_cost_per_token, 0.000005);
  EXPECT_DOUBLE_EQ(openai.output_cost_per_token, 0.000015);
  EXPECT_EQ(openai.version, "green");

  const Deployment& anthropic = config->deployments[1];
  EXPECT_EQ(anthropic.id, "anthropic/claude-3-5-sonnet-20241022");
  EXPECT_EQ(anthropic.provider, ProviderKind::kAnthropic);
  EXPECT_EQ(anthropic.upstream_model, "claude-3-5-sonnet-20241022");
  EXPECT_EQ(anthropic.api_base, "https://api.anthropic.com");
  EXPECT_EQ(anthropic.api_key, "literal-anthropic-key");
  EXPECT_EQ(anthropic.api_key_env, "");
  EXPECT_EQ(anthropic.version, "blue");

  const Deployment& ollama = config->deployments[2];
  EXPECT_EQ(ollama.provider, ProviderKind::kOllama);
  EXPECT_EQ(ollama.upstream_model, "library/llama3");  // only the first '/' ends the provider
  EXPECT_EQ(ollama.api_base, "http://ollama:11434");
  EXPECT_THAT(config->ModelNames(), ElementsAre("smart", "local"));
}

TEST(YamlConfigTest, LiteLLMModelNeedsAKnownProviderPrefix) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
model_list:
  - model_name: a
    litellm_params: {model: gpt-4o}
  - model_name: b
    litellm_params: {model: azure/gpt-4o}
  - model_name: c
    litellm_params: {api_base: "http://x:1"}
)yaml"));
  EXPECT_THAT(error,
              HasSubstr("model_list[0].litellm_params.model: expected \"<provider>/<model>\""));
  EXPECT_THAT(error, HasSubstr("model_list[1].litellm_params.model: unknown provider \"azure\""));
  EXPECT_THAT(error, HasSubstr("model_list[2].litellm_params.model: required"));
}

TEST(YamlConfigTest, LiteralKeyIsNeverEchoed) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
model_list:
  - model_name: has space
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-literal-secret-1234
      weight: -1
)yaml"));
  EXPECT_THAT(error, HasSubstr("model_list[0].model_name: must not contain whitespace"));
  EXPECT_THAT(error, HasSubstr("model_list[0].litellm_params.weight: must be a finite number"));
  EXPECT_THAT(error, Not(HasSubstr("sk-literal-secret-1234")));
}

TEST(YamlConfigTest, FormsCannotBeMixedInOneEntry) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
model_list:
  - model_name: a
    weight: 2
    litellm_params: {model: ollama/llama3, weight: 3}
)yaml"));
  EXPECT_THAT(error, HasSubstr("model_list[0].weight: cannot be combined with litellm_params"));
}

TEST(YamlConfigTest, IdAndVersionMayNotBeGivenTwice) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
model_list:
  - model_name: a
    provider: ollama
    id: one
    version: v1
    model_info: {id: two, version: v2}
)yaml"));
  EXPECT_THAT(error, HasSubstr("model_list[0].model_info.id: conflicts with model_list[0].id"));
  EXPECT_THAT(error,
              HasSubstr("model_list[0].model_info.version: conflicts with model_list[0].version"));
}

TEST(YamlConfigTest, EnvironmentOverridesFileScalars) {
  TempFile file(R"yaml(
server: {http_port: 9000, grpc_port: 9001, host: 10.0.0.1}
log_level: debug
routing_strategy: failover
enable_rag: false
api_keys: [file-key-00001]
model_list:
  - {model_name: from-file, provider: ollama}
)yaml");
  absl::StatusOr<Config> config = LoadConfig(
      {
          {"HTTP_PORT", "9100"},
          {"ROUTING_STRATEGY", "random"},
          {"ENABLE_RAG", "on"},
          {"AILB_API_KEYS", "env-key-00001"},
          {"OLLAMA_MODELS", "from-env"},
      },
      file.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.http_port, 9100);  // environment wins
  EXPECT_EQ(config->server.grpc_port, 9001);  // file value kept where env is silent
  EXPECT_EQ(config->server.host, "10.0.0.1");
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->routing_strategy, "random");
  EXPECT_TRUE(config->enable_rag);
  EXPECT_THAT(config->api_keys, ElementsAre("env-key-00001"));
  // File deployments first, then the environment's.
  EXPECT_THAT(config->ModelNames(), ElementsAre("from-file", "from-env"));
}

TEST(YamlConfigTest, FileComesFromAilbConfigUnlessGivenExplicitly) {
  TempFile from_env("module_id: from-env-file\n");
  TempFile explicit_file("module_id: explicit-file\n");

  absl::StatusOr<Config> config = LoadConfig({{"AILB_CONFIG", from_env.path()}}, std::nullopt);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->module_id, "from-env-file");
  EXPECT_EQ(config->source_file, from_env.path());

  config = LoadConfig({{"AILB_CONFIG", from_env.path()}}, explicit_file.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->module_id, "explicit-file");
  EXPECT_EQ(config->source_file, explicit_file.path());
}

TEST(YamlConfigTest, MissingFileIsInvalidArgumentNamingIt) {
  std::string path = testing::TempDir() + "ailb_config_does_not_exist.yaml";
  std::string error = ErrorOf(LoadConfig({}, path));
  EXPECT_THAT(error, AllOf(HasSubstr(path), HasSubstr("cannot open")));
  // A directory is not a file either.
  EXPECT_THAT(ErrorOf(LoadConfig({}, testing::TempDir())), HasSubstr("cannot read"));
}

TEST(YamlConfigTest, UnknownKeysAreErrorsNamingTheFullPath) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
sever:
  http_port: 1
timeouts:
  connect: 5
model_list:
  - {model_name: a, provider: ollama}
  - {model_name: b, provider: ollama}
  - model_name: c
    provider: ollama
    wieght: 2
  - model_name: d
    litellm_params: {model: ollama/d, api_key_env: X}
)yaml"));
  EXPECT_THAT(error, HasSubstr("sever: unknown key (did you mean \"server\"?)"));
  EXPECT_THAT(error, HasSubstr("timeouts.connect: unknown key"));
  EXPECT_THAT(error, HasSubstr("model_list[2].wieght: unknown key (did you mean \"weight\"?)"));
  EXPECT_THAT(error, HasSubstr("model_list[3].litellm_params.api_key_env: unknown key"));
  // The line helps find the typo in a long file.
  EXPECT_THAT(error, HasSubstr("model_list[2].wieght: unknown key (did you mean \"weight\"?) "
                               "(test.yaml line 11)"));
}

TEST(YamlConfigTest, DuplicateKeysAreErrors) {
  EXPECT_THAT(ErrorOf(LoadYaml("server:\n  http_port: 1\n  http_port: 2\n")),
              HasSubstr("server.http_port: duplicate key"));
}

TEST(YamlConfigTest, WrongShapesAreReported) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
server: 5
timeouts:
  total_ms: [1, 2]
model_list: {model_name: a}
api_keys: key-00000001
module_id: {a: b}
)yaml"));
  EXPECT_THAT(error, HasSubstr("server: expected a mapping"));
  EXPECT_THAT(error, HasSubstr("timeouts.total_ms: expected a single value"));
  EXPECT_THAT(error, HasSubstr("model_list: expected a list of deployments"));
  EXPECT_THAT(error, HasSubstr("api_keys: expected a list"));
  EXPECT_THAT(error, HasSubstr("module_id: expected a single value"));
  EXPECT_THAT(ErrorOf(LoadYaml("- a\n- b\n")), HasSubstr("test.yaml: expected a mapping"));
}

TEST(YamlConfigTest, BadValuesNameTheirPath) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
server: {http_port: eighty, http_threads: 0}
enable_memory: sometimes
model_list:
  - model_name: a
    provider: azure
  - model_name: b
    provider: ollama
    rpm: lots
    api_base: localhost:11434
    tpm: -1
)yaml"));
  EXPECT_THAT(error, HasSubstr("server.http_port: not an integer: eighty"));
  EXPECT_THAT(error, HasSubstr("server.http_threads: must be between 1 and 64"));
  EXPECT_THAT(error, HasSubstr("enable_memory: not a boolean"));
  EXPECT_THAT(error, HasSubstr("model_list[0].provider: unknown provider \"azure\""));
  EXPECT_THAT(error, HasSubstr("model_list[1].rpm: not an integer: lots"));
  // Entries with read errors are dropped, so their other problems are not reported twice.
  EXPECT_THAT(error, Not(HasSubstr("model_list[1].api_base")));
}

TEST(YamlConfigTest, ValidationProblemsUseFilePaths) {
  std::string error = ErrorOf(LoadYaml(R"yaml(
model_list:
  - {model_name: a, provider: ollama}
  - model_name: b
    provider: ollama
    api_base: localhost:11434
    tpm: -1
    model: ""
)yaml"));
  EXPECT_THAT(error, HasSubstr("model_list[1].api_base: must start with http:// or https://"));
  EXPECT_THAT(error, HasSubstr("model_list[1].tpm: must be >= 0"));
  EXPECT_THAT(error, HasSubstr("model_list[1].model: must not be empty"));
}

TEST(YamlConfigTest, SeveralProblemsAreReportedTogether) {
  absl::StatusOr<Config> result = LoadYaml(R"yaml(
server: {http_port: 70000}
log_format: xml
bogus: 1
model_list:
  - {model_name: a, provider: ollama, weight: -2}
)yaml",
                                           {{"HTTP_THREADS", "x"}});
  std::string error = ErrorOf(result);
  EXPECT_THAT(error, HasSubstr("server.http_port: must be between 0 and 65535, got 70000"));
  EXPECT_THAT(error, HasSubstr("log_format: must be one of text, json"));
  EXPECT_THAT(error, HasSubstr("bogus: unknown key"));
  EXPECT_THAT(error, HasSubstr("model_list[0].weight: must be a finite number >= 0"));
  EXPECT_THAT(error, HasSubstr("HTTP_THREADS: not an integer: x"));
}

TEST(YamlConfigTest, BadSyntaxIsInvalidArgumentWithFileAndLine) {
  TempFile file("server:\n  host: [unclosed\nmodule_id: x\n");
  absl::StatusOr<Config> config = LoadConfig({}, file.path());
  std::string error = ErrorOf(config);
  EXPECT_THAT(error, StartsWith(file.path() + ":"));
  EXPECT_THAT(error, HasSubstr(file.path() + ":3:"));
}

TEST(YamlConfigTest, GarbageNeverThrows) {
  const std::vector<std::string> inputs = {
      "{",
      "]",
      "a: b: c",
      "\t- x\n\ty",
      "key: &a [*a]",
      "!!binary x",
      "? [a]\n: b",
      "model_list:\n  - [1, 2]",
      "\"unterminated",
      std::string("a\0b", 3),
      ": :",
      "model_list:\n  - model_name: {x: y}\n",
      ",",
      "a: 1\n,",
      std::string(10000, '['),
  };
  for (const std::string& input : inputs) {
    absl::StatusOr<Config> config;
    EXPECT_NO_THROW(config = LoadYaml(input)) << input;
    if (!config.ok()) {
      EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << input;
    }
  }
}

TEST(YamlConfigTest, SeveralDocumentsAreRefused) {
  EXPECT_THAT(ErrorOf(LoadYaml("module_id: a\n---\nmodule_id: b\n")),
              HasSubstr("test.yaml:2:1: expected a single YAML document"));
}

// yaml-cpp 0.7 alone would hang (LoadAll) or silently ignore the whole file (Load) here.
TEST(YamlConfigTest, StrayTopLevelCommaIsASyntaxError) {
  EXPECT_THAT(ErrorOf(LoadYaml(",server: {http_port: 1}\n")),
              HasSubstr("test.yaml:1:1: unexpected ','"));
  EXPECT_THAT(ErrorOf(LoadYaml("module_id: a\n...\n,\n")),
              HasSubstr("test.yaml:3:1: unexpected ','"));
}

TEST(YamlConfigTest, EmptyDocumentMeansDefaults) {
  for (const char* text : {"", "# only a comment\n", "~\n"}) {
    absl::StatusOr<Config> config = LoadYaml(text);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->server.http_port, 8080);
    EXPECT_EQ(config->source_file, "test.yaml");
  }
}

TEST(YamlConfigTest, DuplicateIdsAreSuffixedAcrossFileAndEnvironment) {
  absl::StatusOr<Config> config = LoadYaml(R"yaml(
model_list:
  - {model_name: llama3, provider: ollama}
  - {model_name: llama3-b, provider: ollama, model: llama3}
  - {model_name: x, provider: ollama, id: "ollama/llama3#2"}
)yaml",
                                           {{"OLLAMA_MODELS", "llama3"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(Ids(*config), ElementsAre("ollama/llama3", "ollama/llama3#2", "ollama/llama3#2#2",
                                        "ollama/llama3#3"));
}

TEST(YamlConfigTest, NamedKeyVariableMustExistOnlyForTheCloud) {
  const char* yaml = R"yaml(
model_list:
  - model_name: a
    api_key_env: MISSING_KEY
)yaml";
  EXPECT_THAT(ErrorOf(LoadYaml(yaml)),
              HasSubstr("model_list[0].api_key_env: environment variable MISSING_KEY is not set"));

  absl::StatusOr<Config> local = LoadYaml(R"yaml(
model_list:
  - model_name: a
    api_base: http://localhost:8000/v1
    api_key_env: MISSING_KEY
  - model_name: b
    provider: anthropic
    api_base: http://anthropic-proxy:9000
    api_key_env: MISSING_KEY
)yaml");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->deployments[0].api_key, "");
  EXPECT_EQ(local->deployments[0].api_key_env, "MISSING_KEY");

  EXPECT_THAT(ErrorOf(LoadYaml(R"yaml(
model_list:
  - model_name: a
    litellm_params: {model: anthropic/claude, api_key: os.environ/NOPE}
)yaml")),
              HasSubstr("model_list[0].litellm_params.api_key: environment variable NOPE"));
}

TEST(YamlConfigTest, StandardKeyVariableIsUsedOnlyForTheProvidersOwnEndpoint) {
  const char* cloud = "model_list:\n  - {model_name: a, provider: openai}\n";
  absl::StatusOr<Config> config = LoadYaml(cloud, {{"OPENAI_API_KEY", "sk-standard"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->deployments[0].api_key, "sk-standard");
  EXPECT_EQ(config->deployments[0].api_key_env, "OPENAI_API_KEY");

  EXPECT_THAT(ErrorOf(LoadYaml(cloud)),
              HasSubstr("model_list[0]: https://api.openai.com/v1 requires an API key: set "
                        "OPENAI_API_KEY or name a variable in api_key_env"));

  // The cloud key must not be sent to some other host.
  config = LoadYaml("model_list:\n  - {model_name: a, api_base: 'http://other:8000/v1'}\n",
                    {{"OPENAI_API_KEY", "sk-standard"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->deployments[0].api_key, "");
  EXPECT_EQ(config->deployments[0].api_key_env, "");
}

TEST(YamlConfigTest, BaseUrlVariablesAreTheDefaultEndpoint) {
  absl::StatusOr<Config> config = LoadYaml(
      "model_list:\n  - {model_name: a, provider: ollama}\n  - {model_name: b, provider: "
      "ollama, api_base: 'http://explicit:1'}\n",
      {{"OLLAMA_BASE_URL", "http://ollama.internal:11434/"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->deployments[0].api_base, "http://ollama.internal:11434");
  EXPECT_EQ(config->deployments[1].api_base, "http://explicit:1");

  EXPECT_THAT(ErrorOf(LoadYaml("model_list:\n  - {model_name: a, provider: ollama}\n",
                               {{"OLLAMA_BASE_URL", "ollama:11434"}})),
              HasSubstr("OLLAMA_BASE_URL: must start with http:// or https://"));
}

TEST(YamlConfigTest, QuotedAndTypedScalarsBothWork) {
  absl::StatusOr<Config> config = LoadYaml(R"yaml(
server: {http_port: "8081", max_body_bytes: +4096}
enable_memory: "OFF"
model_list:
  - {model_name: a, provider: ollama, version: 2, weight: 0.5}
)yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.http_port, 8081);
  EXPECT_EQ(config->server.max_body_bytes, 4096);
  EXPECT_FALSE(config->enable_memory);
  EXPECT_EQ(config->deployments[0].version, "2");
  EXPECT_EQ(config->deployments[0].weight, 0.5);
}

TEST(YamlConfigTest, ModelNameIsRequired) {
  EXPECT_THAT(ErrorOf(LoadYaml("model_list:\n  - {provider: ollama}\n")),
              HasSubstr("model_list[0].model_name: required"));
}

TEST(YamlConfigTest, SyntaxErrorFromTextNamesTheSource) {
  absl::StatusOr<Config> config = LoadConfigFromYamlText({}, "a: [", "grpc:UpdateConfig");
  EXPECT_THAT(ErrorOf(config), StartsWith("grpc:UpdateConfig:"));
}

TEST(YamlConfigTest, ModelGroupsRetriesAndHealthChecks) {
  absl::StatusOr<Config> config = LoadYaml(R"yaml(
retries:
  backoff_base_ms: 50
  backoff_max_ms: 800
  max_attempts: 4
health_check_interval_ms: 15000
model_groups:
  gpt-4o:
    routing_strategy: Latency_Optimized
    fallbacks: [gpt-4o-mini]
    context_window_fallbacks: [gpt-4o-long]
    max_input_tokens: 128000
    hedge_after_ms: 750
  gpt-4o-mini:
    hedge_after_ms: p95
model_list:
  - {model_name: gpt-4o, provider: ollama, api_base: "http://a:11434"}
  - {model_name: gpt-4o-mini, provider: ollama, api_base: "http://b:11434"}
  - {model_name: gpt-4o-long, provider: ollama, api_base: "http://c:11434"}
)yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->retries.backoff_base_ms, 50);
  EXPECT_EQ(config->retries.backoff_max_ms, 800);
  EXPECT_EQ(config->retries.max_attempts, 4);
  EXPECT_EQ(config->health_check_interval_ms, 15000);
  const ModelGroupConfig& group = config->GroupSettings("gpt-4o");
  EXPECT_EQ(group.routing_strategy, "latency_optimized");
  EXPECT_THAT(group.fallbacks, ElementsAre("gpt-4o-mini"));
  EXPECT_THAT(group.context_window_fallbacks, ElementsAre("gpt-4o-long"));
  EXPECT_EQ(group.max_input_tokens, 128000);
  EXPECT_EQ(group.hedge_after_ms, 750);
  EXPECT_EQ(config->GroupSettings("gpt-4o-mini").hedge_after_ms, kHedgeAfterP95);
  EXPECT_EQ(config->StrategyFor("gpt-4o"), "latency_optimized");
  EXPECT_EQ(config->StrategyFor("gpt-4o-long"), config->routing_strategy);
  // A group without settings gets the defaults.
  EXPECT_TRUE(config->GroupSettings("gpt-4o-long").fallbacks.empty());
  EXPECT_EQ(config->GroupSettings("gpt-4o-long").hedge_after_ms, 0);
}

TEST(YamlConfigTest, ModelGroupProblemsAreListedTogether) {
  const std::string message = ErrorOf(LoadYaml(R"yaml(
model_groups:
  gpt-4o:
    routing_strategy: fastest
    fallbacks: [gpt-4o, nonexistent]
    hedge_after_ms: sometimes
    falbacks: [x]
  ghost:
    fallbacks: [gpt-4o]
retries:
  max_attempts: 0
model_list:
  - {model_name: gpt-4o, provider: ollama, api_base: "http://a:11434"}
)yaml"));
  EXPECT_THAT(message, HasSubstr("model_groups.gpt-4o.falbacks: unknown key (did you mean "
                                 "\"fallbacks\"?)"));
  EXPECT_THAT(message, HasSubstr("model_groups.gpt-4o.hedge_after_ms"));
  EXPECT_THAT(message, HasSubstr("model_groups.gpt-4o.routing_strategy"));
  EXPECT_THAT(message, HasSubstr("model_groups.gpt-4o.fallbacks[0]: a group cannot fall back to "
                                 "itself"));
  EXPECT_THAT(message, HasSubstr("model_groups.gpt-4o.fallbacks[1]: unknown model "
                                 "\"nonexistent\""));
  EXPECT_THAT(message, HasSubstr("model_groups.ghost: no deployment serves this model"));
  EXPECT_THAT(message, HasSubstr("retries.max_attempts"));
}

TEST(YamlConfigTest, RetryAndHealthCheckEnvironmentOverrides) {
  absl::StatusOr<Config> config =
      LoadYaml("retries: {backoff_base_ms: 50}\n", {{"AILB_RETRY_BACKOFF_MS", "10"},
                                                    {"AILB_RETRY_BACKOFF_MAX_MS", "90"},
                                                    {"AILB_MAX_ATTEMPTS", "3"},
                                                    {"AILB_HEALTH_CHECK_INTERVAL_MS", "2000"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->retries.backoff_base_ms, 10);
  EXPECT_EQ(config->retries.backoff_max_ms, 90);
  EXPECT_EQ(config->retries.max_attempts, 3);
  EXPECT_EQ(config->health_check_interval_ms, 2000);
}

}  // namespace
}  // namespace ailb::config
