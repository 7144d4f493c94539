#!/usr/bin/python3
"""Retrieval quality of ailb's RAG collections on the Cranfield collection.

Creates a collection, ingests the corpus with `ailb ingest`, runs every dev query in the hybrid,
vector and lexical modes through POST /v1/rag/collections/{name}/query, and reports nDCG@10,
recall@10 and the client-side query latency (p50/p95) per mode.

  # start a fresh ailb (port 0, temporary data dir) and stop it afterwards
  scripts/cranfield_eval.py --ailb build-dev/ailb --min-hybrid-ndcg 0.35
  # or use a running one (the collection is deleted at the end unless --keep)
  scripts/cranfield_eval.py --url http://127.0.0.1:8080 --ingest-binary build-dev/ailb

Exit status: 0 on success, 1 when hybrid nDCG@10 is below --min-hybrid-ndcg, 2 when the
evaluation could not run (server did not start, ingest failed, ...).

Python 3 standard library only.
"""

import argparse
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

MODES = ("hybrid", "vector", "lexical")
LISTENING = re.compile(r"listening: http=(\S*):(\d+) grpc=\S*:(\d+)")
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                            "cranfield")


class EvalError(Exception):
    """The evaluation could not run."""


# --- HTTP ------------------------------------------------------------------------------------


class Client:
    """A keep-alive JSON client for ailb's data plane."""

    def __init__(self, base_url, api_key=None, timeout=300):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https"):
            raise EvalError(f"unsupported URL {base_url!r}")
        self.scheme = parsed.scheme
        self.netloc = parsed.netloc
        self.prefix = parsed.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        self.conn = cls(self.netloc, timeout=self.timeout)

    def request(self, method, path, body=None, retries=5):
        """Returns (status, parsed JSON or None). Retries connection errors and 429/503."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = 0.25
        for attempt in range(retries + 1):
            try:
                if self.conn is None:
                    self._connect()
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if attempt == retries:
                    raise EvalError(f"{method} {path}: {error}") from error
                time.sleep(delay)
                delay *= 2
                continue
            if status in (429, 503) and attempt < retries:
                retry_after = response.getheader("Retry-After")
                wait = delay
                if retry_after and retry_after.isdigit():
                    wait = max(wait, min(float(retry_after), 30.0))
                time.sleep(wait)
                delay *= 2
                continue
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return status, parsed
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def error_message(payload):
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"].get("message", "")
    return json.dumps(payload)[:300]


# --- The server --------------------------------------------------------------------------------


class Server:
    """An ailb started on port 0 with a temporary data directory."""

    def __init__(self, binary, startup_timeout=60):
        self.binary = os.path.abspath(binary)
        self.workdir = tempfile.mkdtemp(prefix="ailb-cranfield-")
        self.log_path = os.path.join(self.workdir, "ailb.log")
        env = dict(os.environ)
        for name in ("AILB_API_KEYS", "AILB_CONFIG"):
            env.pop(name, None)
        env.update({"HOST": "127.0.0.1", "HTTP_PORT": "0", "GRPC_PORT": "0",
                    "AILB_DATA_DIR": os.path.join(self.workdir, "data"), "OPENAI_MODELS": ""})
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([self.binary], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + startup_timeout
        while True:
            match = LISTENING.search(self.logs())
            if match:
                self.url = f"http://127.0.0.1:{match.group(2)}"
                return
            if self.process.poll() is not None:
                raise EvalError(f"ailb exited with {self.process.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise EvalError(f"ailb did not report its port within {startup_timeout}s:\n"
                                f"{self.logs()}")
            time.sleep(0.05)

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("ailb did not stop within 30 s of SIGTERM; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()
        self.log.close()
        code = self.process.returncode
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code


# --- Data and metrics --------------------------------------------------------------------------


def load_queries(path):
    queries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                queries.append((str(item["id"]), item["text"]))
    return queries


def load_qrels(path):
    """{query_id: {doc_id: gain}}; a header line (non-numeric gain) is skipped."""
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                gain = float(parts[2])
            except ValueError:
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = gain
    return qrels


def ndcg_at_k(ranked, judged, k=10):
    """nDCG@k: gain as judged, log2 discount, ideal DCG over every judged document."""
    dcg = sum(judged.get(doc, 0.0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal_gains = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal_gains))
    return dcg / idcg if idcg > 0 else None


def recall_at_k(ranked, judged, k=10):
    relevant = {doc for doc, gain in judged.items() if gain > 0}
    if not relevant:
        return None
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def percentile(values, p):
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def unique_documents(results):
    seen = []
    for hit in results:
        doc = str(hit.get("document_id"))
        if doc not in seen:
            seen.append(doc)
    return seen


# --- The evaluation ----------------------------------------------------------------------------


def ingest(args, url, collection, corpus, expected_failures):
    """Runs `ailb ingest`; returns its wall time. Cranfield has documents with empty text (471,
    995), which the server cannot take: exactly those may fail."""
    binary = args.ingest_binary or args.ailb
    if not binary:
        raise EvalError("--ingest-binary is required with --url")
    command = [os.path.abspath(binary), "ingest", "--url", url, "--collection", collection,
               "--create", "--dimensions", str(args.dimensions), "--batch", str(args.batch),
               "--max-tokens", str(args.max_tokens), "--overlap", str(args.overlap), corpus]
    env = dict(os.environ)
    if args.api_key:
        env["AILB_API_KEY"] = args.api_key
    print("$ " + " ".join(command), flush=True)
    started = time.monotonic()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    elapsed = time.monotonic() - started
    sys.stdout.write(done.stdout)
    if done.stderr.strip():
        sys.stderr.write(done.stderr)
    counts = re.search(r"documents:\s+(\d+) ingested, (\d+) failed", done.stdout)
    if not counts:
        raise EvalError(f"ailb ingest exited with {done.returncode} without a summary")
    failed = int(counts.group(2))
    if "aborted:" in done.stdout or failed != expected_failures or (
            done.returncode != 0 and expected_failures == 0):
        raise EvalError(f"ailb ingest exited with {done.returncode}: {failed} documents failed, "
                        f"expected {expected_failures} (those with empty text)")
    return elapsed


def run_mode(client, collection, queries, qrels, mode, top_k, fetch_k):
    path = f"/v1/rag/collections/{urllib.parse.quote(collection, safe='')}/query"
    ndcgs, recalls, latencies = [], [], []
    # One query outside the measurements, so that first-use costs do not land in p95.
    client.request("POST", path, {"query": queries[0][1], "top_k": fetch_k, "mode": mode})
    for query_id, text in queries:
        judged = qrels.get(query_id)
        if not judged:
            continue
        k = fetch_k
        while True:
            started = time.perf_counter()
            status, reply = client.request("POST", path, {"query": text, "top_k": k,
                                                          "mode": mode})
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise EvalError(f"query {query_id} ({mode}): HTTP {status}: "
                                f"{error_message(reply)}")
            results = reply.get("results", [])
            ranked = unique_documents(results)
            # Chunks of the same documents filled the page: ask for more (the API caps top_k).
            if len(ranked) < top_k and len(results) >= k and k < 100:
                k = min(100, k * 3)
                continue
            break
        ranked = ranked[:top_k]
        ndcg = ndcg_at_k(ranked, judged, top_k)
        if ndcg is not None:
            ndcgs.append(ndcg)
        recall = recall_at_k(ranked, judged, top_k)
        if recall is not None:
            recalls.append(recall)
    return {
        "queries": len(ndcgs),
        "ndcg@10": sum(ndcgs) / len(ndcgs) if ndcgs else 0.0,
        "recall@10": sum(recalls) / len(recalls) if recalls else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }


def evaluate(args, url):
    corpus = os.path.join(args.data, "corpus.jsonl")
    queries = load_queries(os.path.join(args.data, "queries-dev.jsonl"))
    qrels = load_qrels(os.path.join(args.data, "qrels-dev.tsv"))
    corpus_size, blank = 0, 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                document = json.loads(line)
                if (document.get("title") or "").strip() or (document.get("text") or "").strip():
                    corpus_size += 1
                else:
                    blank += 1

    client = Client(url, args.api_key)
    status, reply = client.request("GET", "/v1/rag/collections")
    if status != 200:
        raise EvalError(f"GET /v1/rag/collections: HTTP {status}: {error_message(reply)} "
                        "(is the RAG API enabled?)")
    collection = args.collection or f"cranfield-{uuid.uuid4().hex[:12]}"
    collection_path = f"/v1/rag/collections/{urllib.parse.quote(collection, safe='')}"
    try:
        ingest_seconds = ingest(args, url, collection, corpus, blank)
        status, info = client.request("GET", collection_path)
        if status != 200:
            raise EvalError(f"GET {collection_path}: HTTP {status}: {error_message(info)}")
        if info.get("document_count") != corpus_size:
            raise EvalError(f"collection holds {info.get('document_count')} documents, "
                            f"expected {corpus_size}")
        report = {
            "collection": collection,
            "documents": info.get("document_count"),
            "chunks": info.get("chunk_count"),
            "embedding": info.get("embedding"),
            "chunking": info.get("chunking"),
            "skipped_empty_documents": blank,
            "ingest_seconds": round(ingest_seconds, 3),
            "top_k": args.top_k,
            "modes": {},
        }
        for mode in MODES:
            report["modes"][mode] = run_mode(client, collection, queries, qrels, mode,
                                             args.top_k, args.fetch_k)
        return report
    finally:
        if args.url and not args.keep:
            try:
                client.request("DELETE", collection_path, retries=1)
            except EvalError as error:
                print(f"warning: could not delete {collection}: {error}", file=sys.stderr)
        client.close()


def print_table(report):
    print(f"\nCranfield dev: {report['documents']} documents, {report['chunks']} chunks, "
          f"{report['modes']['hybrid']['queries']} judged queries, "
          f"ingest {report['ingest_seconds']:.1f} s")
    print(f"{'mode':<8} {'nDCG@10':>8} {'recall@10':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for mode, m in report["modes"].items():
        print(f"{mode:<8} {m['ndcg@10']:>8.4f} {m['recall@10']:>10.4f} "
              f"{m['p50_ms']:>8.1f} {m['p95_ms']:>8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ailb", help="ailb binary to start (port 0, temporary data dir)")
    target.add_argument("--url", help="base URL of a running ailb")
    parser.add_argument("--ingest-binary",
                        help="binary providing `ailb ingest` (default: the --ailb binary)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="directory with corpus.jsonl, queries-dev.jsonl, qrels-dev.tsv")
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--max-tokens", type=int, default=256, help="chunk size of the collection")
    parser.add_argument("--overlap", type=int, default=32, help="chunk overlap of the collection")
    parser.add_argument("--batch", type=int, default=64, help="documents per ingest request")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--fetch-k", type=int, default=30,
                        help="chunks asked for per query, deduplicated to --top-k documents")
    parser.add_argument("--collection", help="collection name (default: a unique one)")
    parser.add_argument("--keep", action="store_true",
                        help="with --url: keep the collection instead of deleting it")
    parser.add_argument("--api-key", default=os.environ.get("AILB_API_KEY"))
    parser.add_argument("--min-hybrid-ndcg", type=float,
                        help="exit 1 when hybrid nDCG@10 is below this")
    parser.add_argument("--json-out", help="write the report as JSON to this file")
    args = parser.parse_args()
    if args.fetch_k < args.top_k:
        parser.error("--fetch-k must be at least --top-k")

    server = None
    try:
        if args.ailb:
            server = Server(args.ailb)
            print(f"started {args.ailb} at {server.url}", flush=True)
        report = evaluate(args, server.url if server else args.url)
    except EvalError as error:
        print(f"cranfield_eval: {error}", file=sys.stderr)
        if server:
            print(f"--- ailb log (tail) ---\n{server.logs()[-4000:]}", file=sys.stderr)
        return 2
    finally:
        if server:
            code = server.stop()
            if code not in (0, None):
                print(f"warning: ailb exited with {code} after SIGTERM", file=sys.stderr)

    print_table(report)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    hybrid = report["modes"]["hybrid"]["ndcg@10"]
    if args.min_hybrid_ndcg is not None and hybrid < args.min_hybrid_ndcg:
        print(f"FAIL: hybrid nDCG@10 {hybrid:.4f} < {args.min_hybrid_ndcg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
