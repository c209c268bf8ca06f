#!/usr/bin/env bash
# Handshake benchmark: the callosum-server binary (its real shards, its own process) against
# the reference servers of benches/baselines/ (the C epoll server, the plain tokio server and
# the Node server), all driven by the same client, callosum-loadgen, in one run.
#
# For each server:
#   churn: connect, read the slot line, close; 64 in flight; 200,000 handshakes, the sources
#          spread over 127.0.0.1 ... 127.0.0.16 (one address pair has ~28,000 ephemeral ports)
#   hold:  19,000 connections held open at once (server and client are separate processes:
#          each has its own 20,000-descriptor limit)
# and it prints one markdown table: handshakes/s, p50/p99/p99.9, server CPU per handshake
# (utime+stime from /proc/PID/stat, over the churn), the load generator's own CPU per
# handshake, the hold's p50/p99/max, and server RSS per held connection ((RSS at full hold -
# RSS before the hold) / held). Before each churn the TIME_WAIT sockets of the previous one
# drain (`ss -Htan state time-wait | wc -l`), so every server starts from the same state.
#
# Usage: bash benches/handshake.sh            (about 4-5 minutes, most of it TIME_WAIT drains)
# Knobs (environment): SERVERS="callosum c tokio node", CHURN_COUNT=200000, CONCURRENCY=64,
#   HOLD=19000, SRC_IPS=16, SHARDS=<cores>, CALLOSUM_ARGS="--no-pin", OUT=target/handshake-bench,
#   TW_MAX=1000 (TIME_WAIT sockets tolerated before a churn), TW_WAIT=65 (most seconds to wait; TIME_WAIT lasts 60 s).
# Needs: cargo, cc, node, jq, ss. Loopback only. Every run is bounded: a count, a handshake
# timeout, and bounded waits.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-"callosum c tokio node"}
CHURN_COUNT=${CHURN_COUNT:-200000}
CONCURRENCY=${CONCURRENCY:-64}
HOLD=${HOLD:-19000}
SRC_IPS=${SRC_IPS:-16}
SHARDS=${SHARDS:-$(nproc)}
CALLOSUM_ARGS=${CALLOSUM_ARGS:---no-pin}
OUT=${OUT:-target/handshake-bench}
TW_MAX=${TW_MAX:-1000}
TW_WAIT=${TW_WAIT:-65}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in cargo cc node jq ss; do
  command -v "$tool" >/dev/null || { echo "handshake.sh: needs $tool" >&2; exit 2; }
done
mkdir -p "$OUT"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "building callosum-server, callosum-loadgen and the baselines"
cargo build --release --quiet -p callosum-server -p callosum-loadgen
cc -O2 -pthread -o "$OUT/c-server" benches/baselines/c-epoll-server.c
cargo build --release --quiet --manifest-path benches/baselines/tokio-server/Cargo.toml \
  --target-dir "$OUT/tokio-target"
LOADGEN="$TARGET_DIR/release/callosum-loadgen"
CALLOSUM="$TARGET_DIR/release/callosum-server"

SERVER_PID=""
cleanup() { if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# A port nothing listens on (from the range below the ephemeral ports).
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 10000))
    if ! ss -Htln "sport = :$port" | grep -q .; then echo "$port"; return; fi
  done
  echo "handshake.sh: no free port found" >&2
  exit 1
}

# Waits (at most 10 s) until the server accepts on 127.0.0.1:$1.
wait_listening() {
  for _ in $(seq 200); do
    if ss -Htln "sport = :$1" | grep -q .; then return; fi
    sleep 0.05
  done
  echo "handshake.sh: the server did not listen on port $1" >&2
  exit 1
}

# Waits (at most TW_WAIT s) until at most TW_MAX sockets are in TIME_WAIT.
drain_time_wait() {
  local n
  for _ in $(seq "$TW_WAIT"); do
    n=$(ss -Htan state time-wait | wc -l)
    if ((n <= TW_MAX)); then return; fi
    sleep 1
  done
  log "still $(ss -Htan state time-wait | wc -l) sockets in TIME_WAIT after ${TW_WAIT}s; going on"
}

start_server() {
  local name=$1 port=$2
  case "$name" in
    callosum)
      # shellcheck disable=SC2086 # CALLOSUM_ARGS is a list of options
      "$CALLOSUM" --host 127.0.0.1 --port "$port" --shards "$SHARDS" --mode hold \
        $CALLOSUM_ARGS 2>"$OUT/$name.log" >/dev/null &
      ;;
    c) "$OUT/c-server" --port "$port" --threads "$SHARDS" 2>"$OUT/$name.log" & ;;
    tokio)
      "$OUT/tokio-target/release/callosum-tokio-anchor" --port "$port" --threads "$SHARDS" \
        2>"$OUT/$name.log" &
      ;;
    node) node client/tests/fixtures/node-server.js --port "$port" 2>"$OUT/$name.log" & ;;
    *) echo "handshake.sh: unknown server $name" >&2; exit 2 ;;
  esac
  SERVER_PID=$!
}

for name in $SERVERS; do
  drain_time_wait
  port=$(free_port)
  start_server "$name" "$port"
  wait_listening "$port"
  log "$name (pid $SERVER_PID, port $port): churn of $CHURN_COUNT, $CONCURRENCY in flight"
  "$LOADGEN" churn --target "127.0.0.1:$port" --count "$CHURN_COUNT" \
    --concurrency "$CONCURRENCY" --src-ips "$SRC_IPS" --server-pid "$SERVER_PID" \
    --no-progress --json "$OUT/$name-churn.json" --hgrm "$OUT/$name-churn.hgrm" >"$OUT/$name-churn.txt"
  log "$name: hold of $HOLD connections"
  "$LOADGEN" hold --target "127.0.0.1:$port" --connections "$HOLD" \
    --concurrency "$CONCURRENCY" --src-ips "$SRC_IPS" --server-pid "$SERVER_PID" \
    --no-progress --json "$OUT/$name-hold.json" --hgrm "$OUT/$name-hold.hgrm" >"$OUT/$name-hold.txt"
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
done

echo
echo "Handshake benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; client: callosum-loadgen" \
  "($CONCURRENCY in flight, $SRC_IPS source addresses); churn $CHURN_COUNT handshakes; hold $HOLD connections"
echo
echo "| server | churn hs/s | churn p50 | churn p99 | churn p99.9 | server CPU/hs | loadgen CPU/hs | churn errors | hold p50 | hold p99 | hold max | held | RSS/held conn |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in $SERVERS; do
  c="$OUT/$name-churn.json" h="$OUT/$name-hold.json"
  jq -r --arg name "$name" --slurpfile h "$h" '
    def ms: (. / 10 | round) / 100 | tostring + " ms";
    def us: if . == null then "?" else (. * 10 | round) / 10 | tostring + " µs" end;
    .runs[0] as $c | $h[0].runs[0] as $h |
    "| \($name) | \($c.handshakes_per_s | round) | \($c.handshake_us.p50 | ms) | \($c.handshake_us.p99 | ms) | \($c.handshake_us.p999 | ms) | \($c.cpu.server_us_per_handshake | us) | \($c.cpu.loadgen_us_per_handshake | us) | \($c.errors.total) | \($h.handshake_us.p50 | ms) | \($h.handshake_us.p99 | ms) | \($h.handshake_us.max | ms) | \($h.hold.held) | \(if $h.hold.rss_per_held_connection_bytes == null then "?" else ($h.hold.rss_per_held_connection_bytes | round | tostring) + " B" end) |"
  ' "$c"
done
if [[ " $SERVERS " == *" c "* ]]; then
  echo
  echo "Ratios to the C epoll server, measured in this run (hs/s: higher is better; the rest: lower is better):"
  echo
  echo "| server | churn hs/s | churn p99 | server CPU/hs | hold p99 |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for name in $SERVERS; do
    jq -r -n --arg name "$name" \
      --slurpfile c "$OUT/$name-churn.json" --slurpfile h "$OUT/$name-hold.json" \
      --slurpfile cc "$OUT/c-churn.json" --slurpfile ch "$OUT/c-hold.json" '
      def r(a; b): if a == null or b == null or b == 0 then "?" else ((a / b * 100 | round) / 100 | tostring) + "×" end;
      $c[0].runs[0] as $c | $h[0].runs[0] as $h | $cc[0].runs[0] as $cc | $ch[0].runs[0] as $ch |
      "| \($name) | \(r($c.handshakes_per_s; $cc.handshakes_per_s)) | \(r($c.handshake_us.p99; $cc.handshake_us.p99)) | \(r($c.cpu.server_us_per_handshake; $cc.cpu.server_us_per_handshake)) | \(r($h.handshake_us.p99; $ch.handshake_us.p99)) |"'
  done
fi
echo
echo "Raw results: $OUT/<server>-{churn,hold}.{json,hgrm,txt}"
