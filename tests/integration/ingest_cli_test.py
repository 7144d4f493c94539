#!/usr/bin/python3
"""`ailb ingest` end to end.

Part 1 runs the real binary's CLI against a scriptable fake of the RAG HTTP API (in this process):
creation, text directories, JSON lines with bad lines, batching, stdin, API keys, retries on 503,
and isolation of a document the server rejects. Part 2 ingests three text files into a fresh ailb
(port 0, temporary data dir) and checks document_count through GET /v1/rag/collections/{name}.

Usage: ingest_cli_test.py --ailb BINARY [--fake-only]
"""

import argparse
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

LISTENING = re.compile(r"listening: http=\S*:(\d+) grpc=\S*:(\d+)")


# --- The fake RAG API ---------------------------------------------------------------------------


class FakeState:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.collections = {}  # name -> {"spec": ..., "documents": {id: doc}}
        self.requests = []  # (method, path, body or None, headers)
        self.api_key = None
        self.fail_next = []  # statuses (with Retry-After: 0) for the next upserts
        self.poison = set()  # ids that make an upsert fail with 400


STATE = FakeState()


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, message, headers=None):
        self._reply(status, {"error": {"message": message, "type": "invalid_request_error",
                                       "param": None, "code": None}}, headers)

    def _handle(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with STATE.lock:
            STATE.requests.append((method, self.path, body, dict(self.headers)))
            if STATE.api_key and self.headers.get("Authorization") != f"Bearer {STATE.api_key}":
                return self._error(401, "invalid API key")
            parts = self.path.strip("/").split("/")
            if parts[:3] != ["v1", "rag", "collections"]:
                return self._error(404, "no route")
            if method == "POST" and len(parts) == 3:
                if body["name"] in STATE.collections:
                    return self._error(409, "exists")
                STATE.collections[body["name"]] = {"spec": body, "documents": {}}
                return self._reply(201, dict(body, document_count=0, chunk_count=0))
            if len(parts) < 4 or parts[3] not in STATE.collections:
                return self._error(404, "collection not found")
            collection = STATE.collections[parts[3]]
            if method == "GET" and len(parts) == 4:
                return self._reply(200, dict(collection["spec"],
                                             document_count=len(collection["documents"])))
            if method == "POST" and parts[4:] == ["documents"]:
                if STATE.fail_next:
                    return self._error(STATE.fail_next.pop(0), "overloaded", {"Retry-After": "0"})
                documents = body["documents"]
                for document in documents:
                    if document["id"] in STATE.poison:
                        return self._error(400, f"document {document['id']!r}: text is poisoned")
                for document in documents:
                    collection["documents"][document["id"]] = document
                return self._reply(200, {"documents": len(documents),
                                         "chunks": 2 * len(documents)})
            return self._error(404, "no route")

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


# --- Helpers ------------------------------------------------------------------------------------


class Failure(Exception):
    pass


def check(condition, message, result=None):
    if not condition:
        if result is not None:
            message += (f"\n--- exit {result.returncode}\n--- stdout:\n{result.stdout}"
                        f"--- stderr:\n{result.stderr}")
        raise Failure(message)


def run_ingest(binary, url, *args, env=None, stdin=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("AILB_URL", "AILB_API_KEY")}
    full_env.update(env or {})
    command = [binary, "ingest"] + (["--url", url] if url else []) + list(args)
    return subprocess.run(command, env=full_env, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=120)


def upserts(collection=None):
    return [body for method, path, body, _ in STATE.requests
            if method == "POST" and path.endswith("/documents")
            and (collection is None or f"/collections/{collection}/" in path)]


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


# --- Part 1: the CLI against the fake -------------------------------------------------------------


def fake_tests(binary, url, work):
    text_dir = os.path.join(work, "docs")
    write(os.path.join(text_dir, "b.md"), "# Bee\nbees make honey\n")
    write(os.path.join(text_dir, "a.txt"), "ants carry leaves\n")
    write(os.path.join(text_dir, "sub", "c.txt"), "cats chase mice\n")
    jsonl = os.path.join(work, "corpus.jsonl")
    write(jsonl, "\n".join([
        json.dumps({"id": "1", "title": "Wings", "text": "lift", "year": 1962,
                    "tags": ["a", "b"], "nested": {"x": 1}}),
        "{not json",
        json.dumps({"id": 2, "text": "drag"}),
        json.dumps({"id": "3"}),
        "",
        json.dumps({"id": "4", "text": "thrust"}),
    ]) + "\n")

    def test_help():
        result = run_ingest(binary, None, "--help")
        check(result.returncode == 0 and "Usage: ailb ingest" in result.stdout, "--help", result)

    def test_usage_errors():
        result = run_ingest(binary, url, text_dir)
        check(result.returncode == 2 and "--collection is required" in result.stderr,
              "missing --collection", result)
        result = run_ingest(binary, url, "--collection", "c", "--bogus", text_dir)
        check(result.returncode == 2 and "unknown option --bogus" in result.stderr,
              "unknown option", result)
        result = run_ingest(binary, url, "--collection", "c", "--batch", "0", text_dir)
        check(result.returncode == 2, "--batch 0", result)

    def test_missing_collection_without_create():
        result = run_ingest(binary, url, "--collection", "nope", text_dir)
        check(result.returncode == 1 and "does not exist" in result.stderr,
              "unknown collection without --create", result)
        check(not upserts(), "nothing may be sent")

    def test_text_directory_with_create():
        result = run_ingest(binary, url, "--collection", "texts", "--create", "--dimensions",
                            "128", "--max-tokens", "100", "--overlap", "10", text_dir)
        check(result.returncode == 0, "text directory", result)
        check("3 ingested, 0 failed" in result.stdout, "summary counts", result)
        check(re.search(r"chunks:\s+6", result.stdout), "summary chunks", result)
        check("docs/s" in result.stdout and "chunks/s" in result.stdout, "summary rates", result)
        spec = STATE.collections["texts"]["spec"]
        check(spec["embedding"] == {"provider": "local", "model": "", "dimensions": 128}
              and spec["chunking"] == {"max_tokens": 100, "overlap": 10}, f"spec {spec}")
        ids = [d["id"] for body in upserts("texts") for d in body["documents"]]
        expected = [os.path.join(text_dir, name) for name in ("a.txt", "b.md", "sub/c.txt")]
        check(ids == expected, f"sorted ids {ids} != {expected}")
        document = STATE.collections["texts"]["documents"][expected[1]]
        check(document["text"] == "# Bee\nbees make honey\n"
              and document["metadata"] == {"source": expected[1]}, f"document {document}")

    def test_jsonl_with_bad_lines():
        STATE.collections["j"] = {"spec": {"name": "j"}, "documents": {}}
        result = run_ingest(binary, url, "--collection", "j", jsonl)
        check(result.returncode == 1, "bad lines make the exit status 1", result)
        check("3 ingested, 2 failed" in result.stdout, "counts", result)
        check(f"{jsonl}:2: invalid JSON" in result.stderr, "file:line for bad JSON", result)
        check(f"{jsonl}:4: missing field \"text\"" in result.stderr, "file:line, no text", result)
        documents = STATE.collections["j"]["documents"]
        check(sorted(documents) == ["1", "2", "4"], f"ids {sorted(documents)}")
        check(documents["1"]["text"] == "Wings\nlift", f"title: {documents['1']}")
        check(documents["1"]["metadata"] == {"year": 1962, "tags": ["a", "b"]},
              f"metadata: {documents['1']}")

    def test_batching_and_stdin():
        STATE.collections["s"] = {"spec": {"name": "s"}, "documents": {}}
        lines = "".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n"
                        for i in range(5))
        result = run_ingest(binary, url, "--collection", "s", "--batch", "2", "-", stdin=lines)
        check(result.returncode == 0, "stdin", result)
        sizes = [len(body["documents"]) for body in upserts("s")]
        check(sizes == [2, 2, 1], f"batch sizes {sizes}")

    def test_custom_fields():
        STATE.collections["f"] = {"spec": {"name": "f"}, "documents": {}}
        path = os.path.join(work, "custom.ndjson")
        write(path, json.dumps({"key": "k1", "body": "B", "heading": "H", "lang": "en"}) + "\n")
        result = run_ingest(binary, url, "--collection", "f", "--id-field", "key", "--text-field",
                            "body", "--title-field=heading", path)
        check(result.returncode == 0, "custom fields", result)
        document = STATE.collections["f"]["documents"]["k1"]
        check(document["text"] == "H\nB" and document["metadata"] == {"lang": "en"},
              f"custom fields: {document}")

    def test_rejected_document_is_isolated():
        STATE.collections["p"] = {"spec": {"name": "p"}, "documents": {}}
        STATE.poison = {"d5"}
        lines = "".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n"
                        for i in range(8))
        path = os.path.join(work, "poison.jsonl")
        write(path, lines)
        result = run_ingest(binary, url, "--collection", "p", "--batch", "8", path)
        check(result.returncode == 1, "a rejected document fails the run", result)
        check("7 ingested, 1 failed" in result.stdout, "only the bad one fails", result)
        check(f"{path}:6: document \"d5\" rejected: HTTP 400" in result.stderr,
              "rejection reported with file:line", result)
        check(len(STATE.collections["p"]["documents"]) == 7, "the others are stored")

    def test_retries_on_503():
        STATE.collections["r"] = {"spec": {"name": "r"}, "documents": {}}
        STATE.fail_next = [503, 429]
        result = run_ingest(binary, url, "--collection", "r", text_dir)
        check(result.returncode == 0, "503/429 are retried", result)
        check("retry 1/5" in result.stderr and "retry 2/5" in result.stderr,
              "retries are reported", result)
        check(len(STATE.collections["r"]["documents"]) == 3, "all stored after retries")

    def test_api_key():
        STATE.collections["k"] = {"spec": {"name": "k"}, "documents": {}}
        STATE.api_key = "secret"
        result = run_ingest(binary, url, "--collection", "k", text_dir)
        check(result.returncode == 1 and "HTTP 401" in result.stderr, "no key: 401", result)
        result = run_ingest(binary, url, "--collection", "k", "--api-key", "secret", text_dir)
        check(result.returncode == 0, "--api-key", result)
        result = run_ingest(binary, None, "--collection", "k", text_dir,
                            env={"AILB_API_KEY": "secret", "AILB_URL": url})
        check(result.returncode == 0, "AILB_API_KEY and AILB_URL", result)

    def test_missing_path():
        STATE.collections["m"] = {"spec": {"name": "m"}, "documents": {}}
        result = run_ingest(binary, url, "--collection", "m", text_dir,
                            os.path.join(work, "absent.txt"))
        check(result.returncode == 1 and "absent.txt: no such file" in result.stderr.lower(),
              "missing path", result)
        check("3 ingested, 1 failed" in result.stdout, "missing path counts as failed", result)

    tests = [test_help, test_usage_errors, test_missing_collection_without_create,
             test_text_directory_with_create, test_jsonl_with_bad_lines, test_batching_and_stdin,
             test_custom_fields, test_rejected_document_is_isolated, test_retries_on_503,
             test_api_key, test_missing_path]
    failures = 0
    for test in tests:
        STATE.reset()
        try:
            test()
            print(f"[ OK ] fake: {test.__name__}", flush=True)
        except Failure as error:
            failures += 1
            print(f"[FAIL] fake: {test.__name__}: {error}", flush=True)
    return len(tests), failures


# --- Part 2: against a real ailb --------------------------------------------------------------------


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode(errors="replace")


def real_test(binary, work):
    data_dir = os.path.join(work, "data")
    log_path = os.path.join(work, "ailb.log")
    env = {k: v for k, v in os.environ.items() if k not in ("AILB_API_KEYS", "AILB_CONFIG")}
    env.update({"HOST": "127.0.0.1", "HTTP_PORT": "0", "GRPC_PORT": "0",
                "AILB_DATA_DIR": data_dir, "OPENAI_MODELS": ""})
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and process.poll() is None:
            match = LISTENING.search(open(log_path, errors="replace").read())
            port = match.group(1) if match else None
            time.sleep(0.05)
        check(port, f"ailb did not start:\n{open(log_path, errors='replace').read()}")
        url = f"http://127.0.0.1:{port}"
        status, _ = http_json("GET", url + "/v1/rag/collections")
        check(status == 200, f"GET /v1/rag/collections: HTTP {status} (RAG API missing?)")

        docs = os.path.join(work, "real-docs")
        write(os.path.join(docs, "one.txt"), "The albatross glides over the southern ocean.\n")
        write(os.path.join(docs, "two.txt"), "Turbulent boundary layers thicken downstream.\n")
        write(os.path.join(docs, "deep", "three.md"), "Supersonic inlets need shock control.\n")
        for attempt in ("first", "again (upsert)"):
            result = run_ingest(binary, url, "--collection", "cli-e2e", "--create", docs)
            check(result.returncode == 0, f"ingest {attempt}", result)
            check("3 ingested, 0 failed" in result.stdout, f"summary {attempt}", result)
            status, info = http_json("GET", url + "/v1/rag/collections/cli-e2e")
            check(status == 200 and info.get("document_count") == 3,
                  f"document_count after {attempt}: {status} {info}")
        status, reply = http_json("POST", url + "/v1/rag/collections/cli-e2e/query",
                                  {"query": "albatross", "top_k": 3, "mode": "lexical"})
        check(status == 200 and reply["results"]
              and reply["results"][0]["document_id"] == os.path.join(docs, "one.txt"),
              f"lexical query: {status} {reply}")
        check(reply["results"][0]["metadata"].get("source") == os.path.join(docs, "one.txt"),
              f"metadata: {reply['results'][0]}")
        print("[ OK ] real: three text files into a fresh ailb", flush=True)
        return 0
    except Failure as error:
        print(f"[FAIL] real: {error}\n--- ailb log:\n{open(log_path, errors='replace').read()}",
              flush=True)
        return 1
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ailb", required=True)
    parser.add_argument("--fake-only", action="store_true")
    args = parser.parse_args()
    binary = os.path.abspath(args.ailb)
    work = tempfile.mkdtemp(prefix="ailb-ingest-test-")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        total, failures = fake_tests(binary, f"http://127.0.0.1:{server.server_address[1]}",
                                     work)
        if not args.fake_only:
            total += 1
            failures += real_test(binary, work)
    except Exception:  # a bug in the test itself
        traceback.print_exc()
        return 1
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
