#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into the Markdown table of docs/performance.md.

usage: bench/report.py build/bench/results.jsonl

Columns: scenario, metric, direct, nginx, ailb, comparison (ailb/nginx for throughput, ailb - direct
for latency and time), goal (from issue 7), met?. A goal that was not measured says so.
"""
import json
import math
import sys


def load(path):
    results = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[row.get("label", "?")] = row
    return results


R = {}


def get(label, key, default=None):
    row = R.get(label)
    if row is None or row.get(key) is None:
        return default
    value = row[key]
    if isinstance(value, float) and math.isnan(value):
        return default
    return value


def num(x, digits=0):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def us(x):
    """Microseconds, shown with precision that fits their size."""
    if x is None:
        return "—"
    if abs(x) >= 10000:
        return f"{x / 1000:,.1f} ms"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.1f}"


def dur(x):
    """Microseconds with their unit (µs or ms)."""
    if x is None:
        return "—"
    return us(x) if abs(x) >= 10000 else f"{us(x)} µs"


def signed(x):
    """A difference in microseconds with its sign."""
    if x is None:
        return "—"
    return ("+" if x >= 0 else "−") + us(abs(x))


def errs(label):
    """Errors plus non-2xx replies of one run, or None if it did not run."""
    if label not in R:
        return None
    row = R[label]
    if row.get("mode") == "failed":
        return -1
    return (row.get("errors") or 0) + (row.get("non2xx") or 0) + (row.get("non200") or 0)


def with_errors(text, label):
    e = errs(label)
    if e is None:
        return "not run"
    if e == -1:
        return "failed"
    return text if e == 0 else f"{text} ({e:,} err)"


rows = []


def row(scenario, metric, direct, nginx, ailb, compare, goal, met):
    rows.append((scenario, metric, direct, nginx, ailb, compare, goal, met))


def verdict(ok, gap_text=""):
    if ok is None:
        return "not measured"
    return "**met**" if ok else f"**no**{(' — ' + gap_text) if gap_text else ''}"


def scenario1():
    for conn, title in (("ka", "keep-alive"), ("close", "new connection per request")):
        base = f"s1.max.{conn}"
        if f"{base}/ailb" not in R:
            continue
        d, n, a = (get(f"{base}/{p}", "rps") for p in ("direct", "nginx", "ailb"))
        ratio = a / n if a is not None and n else None
        errors = errs(f"{base}/ailb")
        primary = conn == "ka"
        if ratio is None:
            met = verdict(None)
        elif errors:
            met = verdict(False, f"{errors:,} failed replies")
        else:
            met = verdict(ratio >= 0.5, f"{ratio:.2f} × nginx")
        row(f"1 non-stream, {title}", "max throughput, req/s (2xx only; 64 conns)",
            with_errors(num(d), f"{base}/direct"), with_errors(num(n), f"{base}/nginx"),
            with_errors(num(a), f"{base}/ailb"),
            f"{ratio:.2f} × nginx" if ratio is not None else "—",
            "≥ 0.50 × nginx" if primary else "(info)", met if primary else "")
        base = f"s1.rate.{conn}"
        for key, name, goal in (("lat_p50_us", "p50", 200), ("lat_p99_us", "p99", 1000),
                                ("lat_p999_us", "p99.9", None), ("lat_max_us", "max", None)):
            d, n, a = (get(f"{base}/{p}", key) for p in ("direct", "nginx", "ailb"))
            added = a - d if a is not None and d is not None else None
            errors = errs(f"{base}/ailb")
            if not primary or goal is None:
                goal_text, met = "(info)", ""
            elif errors:
                goal_text, met = f"≤ {goal:,} µs added", verdict(False, f"{errors:,} failed replies")
            elif added is None:
                goal_text, met = f"≤ {goal:,} µs added", verdict(None)
            else:
                goal_text, met = f"≤ {goal:,} µs added", verdict(added <= goal, f"{signed(added)} µs")
            row(f"1 non-stream, {title}", f"latency at 1,000 req/s, {name} (µs)",
                with_errors(us(d), f"{base}/direct"), with_errors(us(n), f"{base}/nginx"),
                with_errors(us(a), f"{base}/ailb"),
                signed(added) if added is not None else "—", goal_text, met)


def scenario2():
    base = "s2.stream"
    if f"{base}/ailb" not in R:
        return
    title = "2 streaming, 100 chunks 1 ms apart"
    for key, name, goal in (("ttfb_p50_us", "time to first byte p50 (µs)", 500),
                            ("ttfb_p99_us", "time to first byte p99 (µs)", None),
                            ("chunk_p50_us", "per-chunk delay p50 (µs)", 100),
                            ("chunk_p99_us", "per-chunk delay p99 (µs)", None),
                            ("chunk_p999_us", "per-chunk delay p99.9 (µs)", None)):
        d, n, a = (get(f"{base}/{p}", key) for p in ("direct", "nginx", "ailb"))
        added = a - d if a is not None and d is not None else None
        errors = errs(f"{base}/ailb")
        if goal is None:
            goal_text, met = "(info)", ""
        else:
            goal_text = f"≤ {goal} µs added"
            if added is None:
                met = verdict(None)
            elif errors:
                met = verdict(False, f"{errors} broken streams")
            else:
                met = verdict(added <= goal, f"{signed(added)} µs")
        row(title, name, with_errors(us(d), f"{base}/direct"), with_errors(us(n), f"{base}/nginx"),
            with_errors(us(a), f"{base}/ailb"), signed(added) if added is not None else "—",
            goal_text, met)
    d, n, a = (get(f"{base}/{p}", "batched_chunks") for p in ("direct", "nginx", "ailb"))
    total = get(f"{base}/ailb", "content_chunks")
    row(title, f"chunks batched with the previous one (of {num(total)})", num(d), num(n), num(a),
        "—", "0 (never batched)", verdict(a == 0 if a is not None else None, f"{num(a)} batched"))


def scenario3():
    base = "s3.hold"
    if f"{base}/ailb" not in R:
        return
    n_streams = get(f"{base}/ailb", "streams")
    chunks = get(f"{base}/ailb", "chunks")
    title = f"3 concurrency: {num(n_streams)} streams × {chunks} s"

    def held(p):
        label = f"{base}/{p}"
        if label not in R:
            return "not run"
        if R[label].get("mode") == "failed":
            return "failed"
        c, e = get(label, "completed"), get(label, "errors")
        text = f"{num(c)}/{num(get(label, 'streams'))} ok, max {num(get(label, 'max_open'))} open"
        if e:
            kinds = [f"{k[4:]} {num(get(label, k))}" for k in
                     ("err_connect", "err_status", "err_cut", "err_incomplete", "err_timeout")
                     if get(label, k)]
            text += f" ({num(e)} failed: {', '.join(kinds)})"
        return text

    a_err = get(f"{base}/ailb", "errors")
    if a_err is None:
        met = verdict(None)
    elif a_err:
        met = verdict(False, f"{num(a_err)} of {num(n_streams)} failed")
    elif n_streams >= 10000:
        met = verdict(True)
    else:
        met = f"met at {num(n_streams)}; 10,000 not run"
    row(title, "streams completed, errors", held("direct"), held("nginx"), held("ailb"), "—",
        "10,000 open, 0 errors", met)
    vals = [get(f"{base}/{p}", "rss_per_stream_kb") for p in ("direct", "nginx", "ailb")]
    a = vals[2]
    row(title, "RSS growth per open stream (KB; direct = the upstream)",
        *(num(v, 1) for v in vals),
        f"{a / vals[1]:.1f} × nginx" if a is not None and vals[1] else "—", "≤ 50 KB",
        verdict(a <= 50 if a is not None else None, f"{num(a, 1)} KB"))
    peaks = [get(f"{base}/{p}", "rss_peak_kb") for p in ("direct", "nginx", "ailb")]
    before = [get(f"{base}/{p}", "rss_before_kb") for p in ("direct", "nginx", "ailb")]
    row(title, "RSS before → peak (MB)",
        *(f"{b / 1024:.1f} → {p / 1024:.1f}" if b is not None and p is not None else "—"
          for b, p in zip(before, peaks)), "—", "(info)", "")
    vals = [get(f"{base}/{p}", "chunk_p99_us") for p in ("direct", "nginx", "ailb")]
    row(title, "per-chunk delay p99 under that load (µs)", *(us(v) for v in vals),
        signed(vals[2] - vals[0]) if None not in (vals[0], vals[2]) else "—", "(info)", "")


def scenario4():
    base = "s4.failover"
    if f"{base}/ailb" not in R:
        return
    title = "4 failover: 1st deployment refuses (200 req/s, new connection each)"
    for key, name in (("lat_p50_us", "p50"), ("lat_p99_us", "p99"), ("lat_max_us", "max")):
        d, n, a = (get(f"{base}/{p}", key) for p in ("direct", "nginx", "ailb"))
        added = a - d if a is not None and d is not None else None
        row(title, f"latency {name} (µs), all requests", with_errors(us(d), f"{base}/direct"),
            with_errors(us(n), f"{base}/nginx"), with_errors(us(a), f"{base}/ailb"),
            signed(added) if added is not None else "—", "(no target)", "")
    two_n = get(f"{base}/ailb", "split_2_n")
    one_p50 = get(f"{base}/ailb", "split_1_p50_us")
    two_p50 = get(f"{base}/ailb", "split_2_p50_us")
    two_max = get(f"{base}/ailb", "split_2_max_us")
    text = (f"{num(two_n)} req: p50 {us(two_p50)}, max {us(two_max)}"
            if two_n else "none seen")
    row(title, "ailb requests that did fail over (x-ailb-attempts: 2)", "—", "—", text,
        f"{signed(two_p50 - one_p50)} vs 1 attempt" if two_n and one_p50 is not None else "—",
        "(no target)", "")


def scenario5():
    chunks = get("s5.query.hybrid/ailb", "chunks")
    title = f"5 memory/RAG ({num(chunks)} chunks)"
    i = "s5.ingest/ailb"
    if i in R:
        row(title, "ingest with `ailb ingest` (this run)", "—", "—",
            f"{num(R[i].get('chunks'))} chunks in {num(R[i].get('seconds'), 1)} s", "—", "(info)", "")
    for mode in ("hybrid", "vector", "lexical"):
        q = f"s5.query.{mode}/ailb"
        if q not in R:
            continue
        p50, p99 = get(q, "p50_ms"), get(q, "p99_ms")
        primary = mode == "hybrid"
        name = "default " if primary else ""
        row(title, f"RAG query p50 / p99 (ms), {name}mode {mode}, top_k 10, one at a time", "—",
            "—", with_errors(f"{num(p50, 2)} / {num(p99, 2)}", q), "—",
            "≤ 2 ms p50" if primary else "(info)",
            verdict(p50 <= 2 if p50 is not None else None, f"{num(p50, 2)} ms") if primary else "")
    r = "s5.recall/ailb"
    if r in R:
        rec = get(r, "recall_at_10")
        row(title, f"vector recall@10 vs exact ({num(get(r, 'queries'))} queries)", "—", "—",
            num(rec, 3), "—", "≥ 0.95", verdict(rec >= 0.95 if rec is not None else None,
                                                 num(rec, 3)))
    plain = get("s5.rate/plain", "lat_p50_us")
    for label, name in (("s5.rate/plain", "plain chat"), ("s5.rate/session", "chat + session_id"),
                        ("s5.rate/rag_half", "chat + rag_collection, half its capacity"),
                        ("s5.rate/rag", "chat + rag_collection")):
        if label not in R:
            continue
        p50, p99 = get(label, "lat_p50_us"), get(label, "lat_p99_us")
        row(title, f"{name}: latency p50 / p99 (µs) at {num(get(label, 'rate'))} req/s", "—", "—",
            with_errors(f"{us(p50)} / {us(p99)}", label),
            f"{signed(p50 - plain)} p50 vs plain"
            if label != "s5.rate/plain" and None not in (p50, plain) else "—", "(info)", "")
    plain = get("s5.max/plain", "rps")
    for label, name in (("s5.max/plain", "plain chat"), ("s5.max/session", "chat + session_id"),
                        ("s5.max/rag", "chat + rag_collection")):
        if label not in R:
            continue
        rps = get(label, "rps")
        row(title, f"{name}: capacity, req/s (closed loop, 8 connections)", "—", "—",
            with_errors(f"{num(rps)} (p50 {dur(get(label, 'lat_p50_us'))})", label),
            f"{rps / plain:.2g} × plain" if label != "s5.max/plain" and rps is not None and plain
            else "—", "(info)", "")


def scenario6():
    label = "s6.startup/ailb"
    if label in R:
        p50 = get(label, "startup_p50_us")
        ms = p50 / 1000 if p50 is not None else None
        row("6 start-up, no RAG data", f"exec → /healthz 200, median of {get(label, 'runs')} (ms)",
            "—", "—", num(ms, 1), "—", "≤ 200 ms",
            verdict(ms <= 200 if ms is not None else None, f"{num(ms, 1)} ms"))
        rss = get(label, "rss_idle_kb_median")
        mb = rss / 1024 if rss is not None else None
        row("6 start-up, no RAG data", f"idle RSS after {get(label, 'idle_ms')} ms (MB)", "—", "—",
            num(mb, 1), "—", "≤ 40 MB", verdict(mb <= 40 if mb is not None else None,
                                                  f"{num(mb, 1)} MB"))
    label = "s6.startup_rag/ailb"
    if label in R:
        p50 = get(label, "startup_p50_us")
        ms = p50 / 1000 if p50 is not None else None
        chunks = num(get("s5.query.hybrid/ailb", "chunks"))
        row(f"6 start-up, {chunks}-chunk collection on disk",
            f"exec → /healthz 200 and collection queryable, median of {get(label, 'runs')} (ms)",
            "—", "—", num(ms, 1), "—", "≤ 2,000 ms",
            verdict(ms <= 2000 if ms is not None else None, f"{num(ms, 1)} ms"))
        rss = get(label, "rss_idle_kb_median")
        chunks = num(get("s5.query.hybrid/ailb", "chunks"))
        row(f"6 start-up, {chunks}-chunk collection on disk", "idle RSS (MB)",
            "—", "—", num(rss / 1024 if rss else None, 1), "—", "(info)", "")


def main():
    global R
    R = load(sys.argv[1] if len(sys.argv) > 1 else "build/bench/results.jsonl")
    meta = R.get("meta", {})
    end = R.get("meta_end", {})
    scenario1()
    scenario2()
    scenario3()
    scenario4()
    scenario5()
    scenario6()
    print(f"Machine: {meta.get('nproc')} cores ({meta.get('cpu')}), {meta.get('mem_gb')} GB, "
          f"kernel {meta.get('kernel')}; nginx {meta.get('nginx')} "
          f"(worker_processes {meta.get('nginx_workers')}); ailb {meta.get('ailb_rev')}; "
          f"mode {meta.get('bench_mode')}; load average {meta.get('load_start')} at start, "
          f"{end.get('load_end')} at end.")
    probe = R.get("keepalive", {}).get("codes")
    if probe and probe.strip() != "200 200 200":
        print(f"\nNote: ailb answered three requests on one kept-alive connection with "
              f"'{probe.strip()}' (expected 200 200 200): its keep-alive rows include that bug.")
    print()
    print("| scenario | metric | direct | nginx | ailb | ailb vs | goal | met? |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
