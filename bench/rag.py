#!/usr/bin/env python3
"""Scenario 5 helpers for bench/run.sh (standard library only).

  rag.py corpus N DOCS.jsonl QUERIES.txt      synthetic clustered corpus: N one-chunk documents
  rag.py query PORT COLLECTION QUERIES.txt MODE COUNT LABEL
                                              sequential query latency through the HTTP API
  rag.py recall PORT COLLECTION QUERIES.txt DB RAG_EXACT COUNT LABEL
                                              recall@10 of mode=vector against exact search

Every command but corpus prints one JSON line for results.jsonl.

The corpus is synthetic but not i.i.d. noise (a pathological recall test for HNSW): 1,000 topics,
each with its own 40-word vocabulary over a 6,000-word lexicon; a document is 70-100 words, about
60 % from its topic and the rest from the whole lexicon (Zipf-like), so the local embedder's
vectors form clusters as real text does. Queries are 6-10 words drawn the same way. Deterministic
(seeded): the same N gives the same files.
"""
import bisect
import http.client
import itertools
import json
import random
import struct
import subprocess
import sys
import time

SYLLABLES = ["ka", "to", "ri", "men", "sol", "var", "nu", "pel", "dra", "quin", "lo", "tes",
             "bar", "ig", "on", "cru", "fa", "zel", "mo", "tri", "sa", "ven", "hul", "po"]


def lexicon(rng, size):
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def corpus(n, docs_path, queries_path):
    rng = random.Random(7)
    words = lexicon(rng, 6000)
    topics = [rng.sample(words, 40) for _ in range(1000)]
    cumulative = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))

    def text(topic, length):
        out = []
        for _ in range(length):
            if rng.random() < 0.6:
                out.append(rng.choice(topics[topic]))
            else:
                out.append(words[bisect.bisect(cumulative, rng.random() * cumulative[-1])])
        return " ".join(out)

    with open(docs_path, "w") as f:
        for i in range(n):
            topic = rng.randrange(len(topics))
            doc = {"id": f"doc-{i}", "text": text(topic, rng.randint(70, 100)), "topic": topic}
            f.write(json.dumps(doc) + "\n")
    with open(queries_path, "w") as f:
        for _ in range(1000):
            f.write(text(rng.randrange(len(topics)), rng.randint(6, 10)) + "\n")


class Client:
    """One kept-alive connection; reconnects when the server closes it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, path, body):
        data = json.dumps(body).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, payload
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    rank = max(1, min(len(values), int(-(-p * len(values) // 100))))
    return values[rank - 1]


def query(port, collection, queries_path, mode, count, label):
    queries = [q.strip() for q in open(queries_path) if q.strip()]
    client = Client(port)
    path = f"/v1/rag/collections/{collection}/query"
    for q in queries[:20]:  # warm-up
        client.post(path, {"query": q, "top_k": 10, "mode": mode})
    times, errors = [], 0
    for q in queries[20:20 + count]:
        t0 = time.perf_counter_ns()
        status, payload = client.post(path, {"query": q, "top_k": 10, "mode": mode})
        t1 = time.perf_counter_ns()
        if status != 200 or not json.loads(payload).get("results"):
            errors += 1
            continue
        times.append((t1 - t0) / 1e6)
    chunks = count_chunks(client, collection)
    print(json.dumps({"mode": "rag_query", "label": label, "query_mode": mode, "queries": len(times),
                      "errors": errors, "chunks": chunks, "p50_ms": pct(times, 50),
                      "p90_ms": pct(times, 90), "p99_ms": pct(times, 99),
                      "max_ms": pct(times, 100)}))


def count_chunks(client, collection):
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=30)
    conn.request("GET", f"/v1/rag/collections/{collection}")
    resp = conn.getresponse()
    body = json.loads(resp.read() or b"{}")
    conn.close()
    return body.get("chunk_count")


def recall(port, collection, queries_path, db, exact_bin, count, label):
    queries = [q.strip() for q in open(queries_path) if q.strip()][:count]
    client = Client(port)
    # Query vectors from the same built-in embedder the collection uses (local, 384 dimensions).
    vectors = []
    for start in range(0, len(queries), 100):
        status, payload = client.post("/v1/embeddings", {"model": "local", "dimensions": 384,
                                                         "input": queries[start:start + 100]})
        if status != 200:
            raise SystemExit(f"rag.py: /v1/embeddings answered {status}: {payload[:200]!r}")
        data = sorted(json.loads(payload)["data"], key=lambda d: d["index"])
        vectors.extend(d["embedding"] for d in data)
    qfile = db + ".queries.f32"
    with open(qfile, "wb") as f:
        for v in vectors:
            f.write(struct.pack(f"<{len(v)}f", *v))
    exact = subprocess.run([exact_bin, db, collection, qfile, "384", "10"], check=True,
                           capture_output=True, text=True).stdout.split("\n")
    hits, total = 0, 0
    path = f"/v1/rag/collections/{collection}/query"
    for q, truth in zip(queries, exact):
        truth_ids = set(int(x) for x in truth.split())
        status, payload = client.post(path, {"query": q, "top_k": 10, "mode": "vector"})
        if status != 200:
            continue
        got = [r["chunk_id"] for r in json.loads(payload)["results"]]
        hits += len(truth_ids.intersection(got))
        total += len(truth_ids)
    print(json.dumps({"mode": "rag_recall", "label": label, "queries": len(queries),
                      "recall_at_10": hits / total if total else None}))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    a = sys.argv[2:]
    if cmd == "corpus" and len(a) == 3:
        corpus(int(a[0]), a[1], a[2])
    elif cmd == "query" and len(a) == 6:
        query(int(a[0]), a[1], a[2], a[3], int(a[4]), a[5])
    elif cmd == "recall" and len(a) == 7:
        recall(int(a[0]), a[1], a[2], a[3], a[4], int(a[5]), a[6])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
