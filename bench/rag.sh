# Scenario 5 (memory and RAG) and the RAG half of scenario 6; sourced by bench/run.sh, which
# defines the helpers used here (log, lg, start_ailb, stop_pid, free_port, ailb_env, ...).
#
# 1. A synthetic clustered corpus of RAG_CHUNKS one-chunk documents (bench/rag.py corpus), loaded
#    with `ailb ingest` into a collection "bench" (local embedder, 384 dimensions). The loaded
#    data directory is kept in $OUT/rag/ and reused by later runs with the same size and ailb
#    binary (loading 100k chunks takes minutes); each run works on a copy of it.
# 2. Query latency through POST /v1/rag/collections/bench/query, one query at a time, top_k 10,
#    in each mode; recall@10 of mode=vector against exact search over the stored vectors.
# 3. Chat: plain, with session_id (50 sessions that grow a turn per request), and with
#    rag_collection; the user message is a corpus-like query. Open loop at 100 req/s (latency),
#    then closed loop with 8 connections (capacity); a new connection per request.
# 4. Start-up with that data directory: exec -> /healthz 200. The RAG store opens every
#    collection's index (snapshot + catch-up) before the HTTP listener starts (src/bootstrap.cc),
#    so a 200 means the collection is queryable.

rag_dir=$OUT/rag
mkdir -p "$rag_dir"
corpus=$rag_dir/corpus-$RAG_CHUNKS.jsonl
queries=$rag_dir/queries.txt
cached=$rag_dir/data-$RAG_CHUNKS
if [ ! -s "$corpus" ] || [ ! -s "$queries" ]; then
  log "scenario 5: generating a $RAG_CHUNKS-document corpus"
  python3 "$ROOT/bench/rag.py" corpus "$RAG_CHUNKS" "$corpus" "$queries" || die "corpus generation failed"
fi
if [ ! -x "$BIN/rag_exact" ] || [ "$ROOT/bench/rag_exact.cc" -nt "$BIN/rag_exact" ]; then
  g++ -std=c++20 -O2 -o "$BIN/rag_exact" "$ROOT/bench/rag_exact.cc" -lsqlite3 || die "g++ rag_exact failed (libsqlite3-dev?)"
fi

if [ "$(cat "$cached/.complete" 2> /dev/null)" != "$bin_sum" ]; then
  log "scenario 5: loading $RAG_CHUNKS documents with ailb ingest (minutes; kept for later runs)"
  rm -rf "$cached" && mkdir -p "$cached"
  AILB_DATA=$cached start_ailb s5-ingest "${UP_ENV[@]}"
  t0=$(date +%s.%N)
  if "$AILB" ingest --collection bench --create --url "http://127.0.0.1:$AILB_PORT" --batch 500 \
    "$corpus" > "$LOGS/ingest.log" 2>&1; then
    t1=$(date +%s.%N)
    stop_pid "$AILB_PID"  # a clean stop writes the index snapshot
    echo "$bin_sum" > "$cached/.complete"
    chunks=$(awk '/^chunks:/ {print $2}' "$LOGS/ingest.log")
    echo "{\"mode\":\"rag_ingest\",\"label\":\"s5.ingest/ailb\",\"chunks\":${chunks:-null},\"seconds\":$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')}" >> "$RESULTS"
  else
    stop_pid "$AILB_PID"
    log "scenario 5: ingest failed: $(tail -3 "$LOGS/ingest.log")"
  fi
else
  log "scenario 5: reusing the loaded collection in $cached"
fi

if [ -f "$cached/.complete" ]; then
  work=$OUT/data/s5
  rm -rf "$work" && cp -a "$cached" "$work"
  AILB_DATA=$work start_ailb s5 "${UP_ENV[@]}"
  n_queries=100
  [ "$MODE" = quick ] && n_queries=50
  rag_py() {  # label rag.py-args...
    local label=$1 line
    shift
    line=$(python3 "$ROOT/bench/rag.py" "$@" "$label" 2>> "$LOGS/rag.err")
    [ -n "$line" ] || line="{\"mode\":\"failed\",\"label\":\"$label\"}"
    echo "$line" >> "$RESULTS"
    log "$label: $line"
  }
  for qmode in hybrid vector lexical; do
    rag_py "s5.query.$qmode/ailb" query "$AILB_PORT" bench "$queries" "$qmode" "$n_queries"
  done
  rag_py s5.recall/ailb recall "$AILB_PORT" bench "$queries" "$work/ailb.db" "$BIN/rag_exact" 100

  u=$(url "$AILB_PORT")
  # The user message of every chat request is one of the corpus-like queries, so retrieval has
  # real work to do (with the English filler text the lexical half would match nothing).
  # Capacity first (closed loop, 8 connections: never more than 8 requests queued in ailb), then
  # latency at a fixed rate; the RAG path may be overloaded at 100 req/s, so it also runs at half
  # its measured capacity. The overloaded run goes last: ailb keeps working off its backlog.
  q=(--content-file "$queries")
  sess=(--unique-extra '"session_id":"bench-session-%d"' --unique-mod 50)
  rag=(--extra '"rag_collection":"bench"')
  d=$((RATE_D > 10 ? 10 : RATE_D))
  lg s5.max plain max --url "$u" --conns 8 --duration $MAX_D --warmup 1 --close "${q[@]}"
  lg s5.max session max --url "$u" --conns 8 --duration $MAX_D --warmup 1 --close "${q[@]}" "${sess[@]}"
  lg s5.max rag max --url "$u" --conns 8 --duration $MAX_D --warmup 1 --close "${q[@]}" "${rag[@]}"
  lg s5.rate plain rate --url "$u" --rate 100 --duration $d --warmup $RATE_W --close "${q[@]}"
  lg s5.rate session rate --url "$u" --rate 100 --duration $d --warmup $RATE_W --close "${q[@]}" "${sess[@]}"
  half=$(python3 -c 'import json,sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "\"s5.max/rag\"" in l]
print(max(1, int((rows[-1].get("rps") or 0) / 2)) if rows else 0)' "$RESULTS")
  if [ "$half" -gt 0 ] && [ "$half" -lt 100 ]; then
    lg s5.rate rag_half rate --url "$u" --rate "$half" --duration $((d * 2)) --warmup $RATE_W --close \
      "${q[@]}" "${rag[@]}"
  fi
  lg s5.rate rag rate --url "$u" --rate 100 --duration $d --warmup $RATE_W --close "${q[@]}" "${rag[@]}"
  log "scenario 5: $(grep -c warning "$LOGS/ailb-s5.log") warning lines in $LOGS/ailb-s5.log"
  stop_pid "$AILB_PID"

  if want 6; then
    log "scenario 6: start-up with the $RAG_CHUNKS-document collection on disk"
    port=$(free_port)
    # shellcheck disable=SC2046
    lg s6.startup_rag ailb startup --port "$port" --runs $STARTUP_RUNS --idle-ms $IDLE_MS \
      --log "$LOGS/ailb-s6-rag.log" -- $(ailb_env s6-rag "$port" "$work") "${UP_ENV[@]}" "$AILB"
  fi
fi
