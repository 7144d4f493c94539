#!/usr/bin/env bash
# grpcurl's way of working, against the real ailb binary: a client that has no .proto file lists
# the services through reflection, describes SetTrafficWeight, calls it, and sees the effect.
# Usage: real_binary_reflection_test.sh <path to ailb> <path to reflection_client.py>
set -euo pipefail
ailb=$1
client=$2
python=/usr/bin/python3
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/ailb.yaml" <<YAML
model_list:
  - {model_name: m, provider: openai, model: m, id: blue, version: v1, api_base: "http://127.0.0.1:9/v1"}
  - {model_name: m, provider: openai, model: m, id: green, version: v2, api_base: "http://127.0.0.1:9/v1"}
YAML
HOST=127.0.0.1 HTTP_PORT=0 GRPC_PORT=0 AILB_DATA_DIR="$work/data" AILB_CONFIG="$work/ailb.yaml" \
  "$ailb" > "$work/log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/.*listening: http=[^ ]* grpc=[^ ]*:\([0-9]*\).*/\1/p' "$work/log" | head -n1)
  [ -n "$port" ] && break
  sleep 0.05
done
if [ -z "$port" ]; then
  echo "ailb did not start:"; cat "$work/log"; exit 1
fi
target=127.0.0.1:$port

fail() { echo "FAIL: $*"; exit 1; }
services=$("$python" "$client" "$target" list)
for service in marchproxy.ModuleService grpc.health.v1.Health; do
  grep -q "$service" <<<"$services" || fail "reflection does not list $service: $services"
done
described=$("$python" "$client" "$target" describe marchproxy.ModuleService)
grep -q SetTrafficWeight <<<"$described" || fail "SetTrafficWeight not described: $described"
set_reply=$("$python" "$client" "$target" call marchproxy.ModuleService/SetTrafficWeight \
  '{"version": "v2", "weight": 10}')
grep -q '"success": true' <<<"$set_reply" || fail "SetTrafficWeight failed: $set_reply"
active=$("$python" "$client" "$target" call marchproxy.ModuleService/GetActiveVersion '{}')
"$python" - "$active" <<'PY' || fail "weights not applied: $active"
import json, sys
reply = json.loads(sys.argv[1])["response"]
weights = reply.get("version_weights", reply.get("versionWeights", {}))
assert weights == {"v1": 90, "v2": 10}, weights
PY
if "$python" "$client" "$target" call marchproxy.ModuleService/SetTrafficWeight \
    '{"version": "v2", "weight": 101}' > "$work/bad" 2>&1; then
  fail "weight 101 was accepted: $(cat "$work/bad")"
fi
grep -q INVALID_ARGUMENT "$work/bad" || fail "weight 101 did not give INVALID_ARGUMENT: $(cat "$work/bad")"
echo "1 passed, 0 failed"
