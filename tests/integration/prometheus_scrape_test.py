#!/usr/bin/python3
"""/metrics as a real Prometheus server sees it.

Starts a fake OpenAI-compatible upstream (in this process), the real ailb binary pointed at it and
sends it 7 chat requests that succeed and 2 for an unknown model (404). Then:
  1. `promtool check metrics` must accept the /metrics body without a single complaint;
  2. a real `prometheus` scrapes ailb every second: the target must be up with no scrape error,
     and PromQL must see exactly the requests sent (sum of litellm_proxy_total_requests_metric_total),
     the 2 failures, and litellm_deployment_state 0 for the healthy deployment.
Everything listens on 127.0.0.1; temporary files are removed. Exits 77 (ctest SKIP_RETURN_CODE)
when the prometheus binary is not installed (Debian package `prometheus`).

Usage: prometheus_scrape_test.py --ailb BINARY [--prometheus PATH] [--promtool PATH]
"""

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
OK_REQUESTS = 7
UNKNOWN_MODEL_REQUESTS = 2
MODEL = "scrape-model"
DEPLOYMENT_ID = "fake-upstream-1"
LISTENING = re.compile(r"listening: http=\S*:(\d+) grpc=\S*:(\d+)")
# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


# --- The fake upstream ----------------------------------------------------------------------------


class FakeUpstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    chat_requests = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.endswith("/models"):
            return self._reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        self._reply(404, {"error": {"message": "no route", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith("/chat/completions"):
            return self._reply(404, {"error": {"message": "no route",
                                               "type": "invalid_request_error"}})
        with FakeUpstream.lock:
            FakeUpstream.chat_requests += 1
        self._reply(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", MODEL),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from the fake."}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        })


# --- Helpers --------------------------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def hermetic_env(extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and not k.startswith(("AILB_", "OPENAI_", "ANTHROPIC_", "OLLAMA_"))}
    env.update(extra)
    return env


def log_of(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-6000:]
    except OSError:
        return "(no log)"


def stop(process, timeout=10):
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_ailb(binary, work, upstream_port):
    config_path = os.path.join(work, "ailb.yaml")
    with open(config_path, "w") as f:
        f.write("model_list:\n"
                f"  - {{model_name: {MODEL}, provider: openai, model: {MODEL}, "
                f"id: {DEPLOYMENT_ID}, api_base: \"http://127.0.0.1:{upstream_port}/v1\"}}\n")
    log_path = os.path.join(work, "ailb.log")
    env = hermetic_env({"HOST": "127.0.0.1", "HTTP_PORT": "0", "GRPC_PORT": "0",
                        "AILB_DATA_DIR": os.path.join(work, "data"), "AILB_CONFIG": config_path,
                        "ENABLE_MEMORY": "false", "ENABLE_RAG": "false"})
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        match = LISTENING.search(log_of(log_path))
        if match:
            return process, int(match.group(1)), log_path
        time.sleep(0.05)
    stop(process)
    raise Failure(f"ailb did not start:\n{log_of(log_path)}")


def start_prometheus(prometheus, work, ailb_port):
    """Starts prometheus scraping ailb every second; returns (process, base URL, log) once ready.

    The web port is picked free beforehand: another process may take it meanwhile, so a start
    that fails on "address already in use" is retried on another port."""
    config_path = os.path.join(work, "prometheus.yml")
    with open(config_path, "w") as f:
        f.write("global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: ailb\n"
                "    static_configs:\n"
                f"      - targets: [\"127.0.0.1:{ailb_port}\"]\n")
    log_path = os.path.join(work, "prometheus.log")
    for _ in range(3):
        port = free_port()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [prometheus, f"--config.file={config_path}",
                 f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                env=hermetic_env({}), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=work)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if http_call("GET", base + "/-/ready", timeout=1)[0] == 200:
                    return process, base, log_path
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(0.1)
        stop(process)
        if "address already in use" not in log_of(log_path):
            break
    raise Failure(f"prometheus did not start:\n{log_of(log_path)}")


def prometheus_api(base, path, **params):
    """The `data` of a Prometheus API answer, or None while it is not ready."""
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        status, body = http_call("GET", url, timeout=2)
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None
    if status != 200:
        return None
    reply = json.loads(body)
    return reply.get("data") if reply.get("status") == "success" else None


def wait_for(what, probe, timeout):
    """Polls `probe` (returning (done, observed)) until done; fails with the last observed."""
    deadline = time.monotonic() + timeout
    observed = None
    while time.monotonic() < deadline:
        done, observed = probe()
        if done:
            return observed
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout} s waiting for {what}; last seen: {observed!r}")


def query_value(base, promql):
    """The value of a PromQL query with exactly one series, or None."""
    data = prometheus_api(base, "/api/v1/query", query=promql)
    if not data or len(data.get("result", [])) != 1:
        return None
    return data["result"][0]


# --- The test -------------------------------------------------------------------------------------


def run(args, work):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ailb = prometheus = None
    ailb_log = prometheus_log = None
    try:
        ailb, ailb_port, ailb_log = start_ailb(args.ailb, work, upstream.server_address[1])
        base = f"http://127.0.0.1:{ailb_port}"
        chat = {"messages": [{"role": "user", "content": "Say hello."}]}
        for i in range(OK_REQUESTS):
            status, body = http_call("POST", base + "/v1/chat/completions", dict(chat, model=MODEL))
            check(status == 200, f"chat request {i}: HTTP {status}: {body}")
            check(json.loads(body)["choices"][0]["message"]["content"] == "Hello from the fake.",
                  f"chat request {i}: unexpected reply {body}")
        for i in range(UNKNOWN_MODEL_REQUESTS):
            status, body = http_call("POST", base + "/v1/chat/completions",
                                dict(chat, model="no-such-model"))
            check(status == 404, f"unknown model {i}: expected 404, got {status}: {body}")
        check(FakeUpstream.chat_requests == OK_REQUESTS,
              f"the upstream saw {FakeUpstream.chat_requests} requests, expected {OK_REQUESTS}")

        # 1. promtool's linter accepts the exposition as it is.
        status, metrics = http_call("GET", base + "/metrics")
        check(status == 200, f"GET /metrics: HTTP {status}")
        lint = subprocess.run([args.promtool, "check", "metrics"], input=metrics,
                              capture_output=True, text=True, timeout=30)
        check(lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(),
              f"promtool check metrics (exit {lint.returncode}):\n{lint.stdout}{lint.stderr}\n"
              f"--- /metrics:\n{metrics}")
        for name in ("litellm_proxy_total_requests_metric_total", "litellm_deployment_state",
                     "litellm_deployment_cooled_down_total",
                     "ailb_deployment_cooldown_remaining_seconds", "ailb_open_streams",
                     "process_cpu_seconds_total"):
            check(f"\n# TYPE {name} " in metrics, f"/metrics has no {name}:\n{metrics}")
        check("\n# TYPE process_cpu_seconds_total counter\n" in metrics,
              "process_cpu_seconds_total is not a counter")
        print("[ OK ] promtool check metrics: no problems", flush=True)

        # 2. A real Prometheus scrapes it.
        prometheus, prom, prometheus_log = start_prometheus(args.prometheus, work, ailb_port)

        def target_up():
            if prometheus.poll() is not None:
                raise Failure(f"prometheus exited with {prometheus.returncode}")
            data = prometheus_api(prom, "/api/v1/targets")
            targets = (data or {}).get("activeTargets", [])
            up = len(targets) == 1 and targets[0].get("health") == "up" and \
                targets[0].get("lastError") == ""
            return up, (targets[0] if len(targets) == 1 else data)

        target = wait_for("the ailb target to be up", target_up, 30)
        check(target["scrapeUrl"] == f"{base}/metrics", f"scrape URL {target['scrapeUrl']}")
        print(f"[ OK ] prometheus target up: {target['scrapeUrl']}", flush=True)

        sent = OK_REQUESTS + UNKNOWN_MODEL_REQUESTS

        def total_is_sent():
            result = query_value(prom, "sum(litellm_proxy_total_requests_metric_total)")
            return bool(result) and float(result["value"][1]) == sent, result

        wait_for(f"sum(litellm_proxy_total_requests_metric_total) == {sent}", total_is_sent, 10)
        failed = query_value(prom, "sum(litellm_proxy_failed_requests_metric_total)")
        check(failed and float(failed["value"][1]) == UNKNOWN_MODEL_REQUESTS,
              f"sum(litellm_proxy_failed_requests_metric_total): {failed}")
        not_found = query_value(
            prom, 'sum(litellm_proxy_total_requests_metric_total{status_code="404"})')
        check(not_found and float(not_found["value"][1]) == UNKNOWN_MODEL_REQUESTS,
              f"404s: {not_found}")
        ok = query_value(prom, 'sum(litellm_proxy_total_requests_metric_total{status_code="200",'
                               f'model="{MODEL}",deployment="{DEPLOYMENT_ID}"}})')
        check(ok and float(ok["value"][1]) == OK_REQUESTS, f"200s: {ok}")
        print(f"[ OK ] PromQL: {sent} requests, {UNKNOWN_MODEL_REQUESTS} failed", flush=True)

        state = query_value(prom, f'litellm_deployment_state{{model_id="{DEPLOYMENT_ID}"}}')
        check(state is not None, "no litellm_deployment_state series for the deployment")
        labels = state["metric"]
        check(labels.get("litellm_model_name") == MODEL and labels.get("api_provider") == "openai"
              and labels.get("api_base") == f"http://127.0.0.1:{upstream.server_address[1]}/v1",
              f"litellm_deployment_state labels: {labels}")
        check(float(state["value"][1]) == 0, f"litellm_deployment_state: {state}")
        cooled = query_value(prom,
                             f'litellm_deployment_cooled_down_total{{model_id="{DEPLOYMENT_ID}"}}')
        check(cooled and float(cooled["value"][1]) == 0, f"cooled down: {cooled}")
        tokens = query_value(prom, "sum(litellm_input_tokens_total)")
        check(tokens and float(tokens["value"][1]) == 5 * OK_REQUESTS, f"input tokens: {tokens}")
        print("[ OK ] PromQL: litellm_deployment_state 0 (healthy), tokens counted", flush=True)
        return 0
    except Failure as error:
        print(f"[FAIL] {error}", flush=True)
        if ailb_log:
            print(f"--- ailb log:\n{log_of(ailb_log)}", flush=True)
        if prometheus_log:
            print(f"--- prometheus log:\n{log_of(prometheus_log)}", flush=True)
        return 1
    finally:
        stop(prometheus)
        stop(ailb, timeout=30)
        upstream.shutdown()
        upstream.server_close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ailb", required=True)
    parser.add_argument("--prometheus", default="/usr/bin/prometheus")
    parser.add_argument("--promtool", default="/usr/bin/promtool")
    args = parser.parse_args()
    args.ailb = os.path.abspath(args.ailb)
    if not os.access(args.prometheus, os.X_OK):
        print(f"SKIP: {args.prometheus} is not installed (Debian package prometheus)")
        return SKIP
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="ailb-prometheus-test-")
    try:
        failures = run(args, work)
    except Exception:  # a bug in the test itself
        traceback.print_exc()
        failures = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{1 - failures} passed, {failures} failed ({time.monotonic() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
