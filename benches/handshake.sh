#!/usr/bin/env bash
# Handshake benchmark: the callosum-server binary (its real shards, its own process) against
# the reference servers of benches/baselines/ (the C epoll server, the plain tokio server and
# the Node server), all driven by the same client, callosum-loadgen, in one run.
#
# For each server:
#   churn: connect, read the slot line, close; 64 in flight; 200,000 handshakes, the sources
#          spread over 127.0.0.x by the load generator (one address pair has ~28,000
#          ephemeral ports, and TIME_WAIT keeps each for 60 s)
#   hold:  19,000 connections held open at once (server and client are separate processes:
#          each has its own 20,000-descriptor limit), HOLD_REPS times against the same server
#          (one hold lasts under a second, so its p99 is at the mercy of a single scheduler
#          hiccup: the round takes the median of its holds)
# Before each churn the TIME_WAIT sockets of the previous one drain (`ss -Htan state time-wait
# | wc -l`), so every server starts from the same state.
#
# The machine is shared and noisy (the same binary's CPU per handshake drifts by 10-20 % over
# minutes), so the servers are measured in ROUNDS interleaved rounds, each in a rotated order,
# and every ratio to the C server is taken within a round (paired: same minutes, same
# conditions). It prints markdown tables: per server, the median over rounds of handshakes/s,
# p50/p99/p99.9, server CPU per handshake (utime+stime from /proc/PID/stat, over the churn),
# the load generator's own CPU per handshake, the hold's p50/p99/max and server RSS per held
# connection ((RSS at full hold - RSS before the hold) / held, from the first hold, when the
# process is fresh); then the ratios to C, each round's and their median.
#
# SIDE_BY_SIDE=N instead runs Callosum and the C server at the same time, N times: one churn
# of SBS_COUNT split round-robin between them, each server's CPU per handshake from
# /proc/PID/stat, and their ratio per run and its median. Both see the same seconds of the
# machine, so its medians agree within a few percent from one set to the next, where the
# rounds' CPU ratios move by 15 %. It is another operating point, though: each server gets
# half the load, so it makes more trips through its event loop per handshake (README).
#
# BUSY_CORE=K keeps core K busy with a spinning shell for the whole run (bounded by BUSY_SECS,
# default 3600): a shared host, where the server's cores also run other work.
#
# Usage: bash benches/handshake.sh    (about 5 minutes per round, most of it TIME_WAIT drains)
#        SIDE_BY_SIDE=6 bash benches/handshake.sh    (about 5 seconds per run)
# Knobs (environment): SERVERS="callosum c tokio node", ROUNDS=3, CHURN_COUNT=200000, CONCURRENCY=64,
#   HOLD=19000, HOLD_REPS=3, SRC_IPS="" (as many as the load generator picks), SHARDS=<cores>, CALLOSUM_ARGS="" (the defaults), OUT=target/handshake-bench,
#   TW_MAX=1000 (TIME_WAIT sockets tolerated before a churn), TW_WAIT=65 (most seconds to wait; TIME_WAIT lasts 60 s).
# Needs: cargo, cc, node, jq, ss. Loopback only. Every run is bounded: a count, a handshake
# timeout, and bounded waits.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-"callosum c tokio node"}
ROUNDS=${ROUNDS:-3}
CHURN_COUNT=${CHURN_COUNT:-200000}
CONCURRENCY=${CONCURRENCY:-64}
HOLD=${HOLD:-19000}
SRC_IPS=${SRC_IPS:-}
SHARDS=${SHARDS:-$(nproc)}
CALLOSUM_ARGS=${CALLOSUM_ARGS:-}
HOLD_REPS=${HOLD_REPS:-3}
OUT=${OUT:-target/handshake-bench}
TW_MAX=${TW_MAX:-1000}
TW_WAIT=${TW_WAIT:-65}
SIDE_BY_SIDE=${SIDE_BY_SIDE:-0}
SBS_COUNT=${SBS_COUNT:-100000}
BUSY_CORE=${BUSY_CORE:-}
BUSY_SECS=${BUSY_SECS:-3600}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in cargo cc node jq ss ${BUSY_CORE:+taskset timeout}; do
  command -v "$tool" >/dev/null || { echo "handshake.sh: needs $tool" >&2; exit 2; }
done
mkdir -p "$OUT"

# jq: the median of an array, nulls left out (null when nothing is left).
JQ_MED='def med: map(select(. != null)) | sort |
  if length == 0 then null
  elif length % 2 == 1 then .[length / 2 | floor]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;'

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "building callosum-server, callosum-loadgen and the baselines"
cargo build --release --quiet -p callosum-server -p callosum-loadgen
cc -O2 -pthread -o "$OUT/c-server" benches/baselines/c-epoll-server.c
cargo build --release --quiet --manifest-path benches/baselines/tokio-server/Cargo.toml \
  --target-dir "$OUT/tokio-target"
LOADGEN="$TARGET_DIR/release/callosum-loadgen"
CALLOSUM="$TARGET_DIR/release/callosum-server"

SERVER_PID=""
SIDE_PIDS=()
BUSY_PID=""
cleanup() {
  for pid in "$SERVER_PID" "$BUSY_PID" "${SIDE_PIDS[@]}"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT

if [[ -n "$BUSY_CORE" ]]; then
  timeout "$BUSY_SECS" taskset -c "$BUSY_CORE" sh -c 'while :; do :; done' &
  BUSY_PID=$!
  log "core $BUSY_CORE kept busy (pid $BUSY_PID, at most ${BUSY_SECS}s)"
fi

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

# Waits (at most 10 s) until the server holds no established connection on port $1.
wait_closed() {
  for _ in $(seq 200); do
    if ! ss -Htan state established "sport = :$1" | grep -q .; then return; fi
    sleep 0.05
  done
  log "connections to port $1 still open after 10 s; going on"
}

# One round: every server, in the round's rotation of SERVERS.
run_server() {
  local name=$1 round=$2 port
  drain_time_wait
  port=$(free_port)
  start_server "$name" "$port"
  wait_listening "$port"
  log "round $round: $name (pid $SERVER_PID, port $port): churn of $CHURN_COUNT, $CONCURRENCY in flight"
  "$LOADGEN" churn --target "127.0.0.1:$port" --count "$CHURN_COUNT" \
    --concurrency "$CONCURRENCY" ${SRC_IPS:+--src-ips "$SRC_IPS"} --server-pid "$SERVER_PID" --no-progress \
    --json "$OUT/$name-r$round-churn.json" --hgrm "$OUT/$name-r$round-churn.hgrm" \
    >"$OUT/$name-r$round-churn.txt"
  for rep in $(seq "$HOLD_REPS"); do
    log "round $round: $name: hold $rep of $HOLD_REPS, $HOLD connections"
    "$LOADGEN" hold --target "127.0.0.1:$port" --connections "$HOLD" \
      --concurrency "$CONCURRENCY" ${SRC_IPS:+--src-ips "$SRC_IPS"} --server-pid "$SERVER_PID" --no-progress \
      --json "$OUT/$name-r$round-hold$rep.json" --hgrm "$OUT/$name-r$round-hold$rep.hgrm" \
      >"$OUT/$name-r$round-hold$rep.txt"
    wait_closed "$port"
  done
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# Server CPU time (utime + stime) of process $1, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Side by side: Callosum and the C server at once, one churn split round-robin between them
# (the target listed first alternates), so both see the same seconds of this noisy machine;
# their CPU per handshake is compared within each run.
side_by_side() {
  local clk_tck run pc pcc tc tcc order dc dcc per
  clk_tck=$(getconf CLK_TCK)
  per=$((SBS_COUNT / 2))
  # One drain first; between runs the TIME_WAIT sockets pile up, but both servers share them.
  drain_time_wait
  for run in $(seq "$SIDE_BY_SIDE"); do
    pc=$(free_port)
    start_server callosum "$pc"
    SIDE_PIDS=("$SERVER_PID")
    pcc=$(free_port)
    while [[ "$pcc" == "$pc" ]]; do pcc=$(free_port); done
    start_server c "$pcc"
    SIDE_PIDS+=("$SERVER_PID")
    SERVER_PID=""
    wait_listening "$pc"
    wait_listening "$pcc"
    order=("--target" "127.0.0.1:$pc" "--target" "127.0.0.1:$pcc")
    if ((run % 2 == 0)); then order=("--target" "127.0.0.1:$pcc" "--target" "127.0.0.1:$pc"); fi
    tc=$(cpu_ticks "${SIDE_PIDS[0]}")
    tcc=$(cpu_ticks "${SIDE_PIDS[1]}")
    "$LOADGEN" churn "${order[@]}" --count "$SBS_COUNT" --concurrency "$CONCURRENCY" \
      ${SRC_IPS:+--src-ips "$SRC_IPS"} --no-progress --json "$OUT/side-by-side-$run.json" \
      >"$OUT/side-by-side-$run.txt"
    dc=$(($(cpu_ticks "${SIDE_PIDS[0]}") - tc))
    dcc=$(($(cpu_ticks "${SIDE_PIDS[1]}") - tcc))
    kill "${SIDE_PIDS[@]}"
    wait "${SIDE_PIDS[@]}" 2>/dev/null || true
    SIDE_PIDS=()
    jq -n -c --argjson run "$run" --argjson c "$dc" --argjson cc "$dcc" --argjson tck "$clk_tck" \
      --argjson per "$per" --slurpfile r "$OUT/side-by-side-$run.json" '
      {run: $run, errors: $r[0].runs[0].errors.total, hs: $r[0].runs[0].handshakes_per_s,
       callosum_us: ($c * 1e6 / $tck / $per), c_us: ($cc * 1e6 / $tck / $per),
       ratio: (if $cc == 0 then null else $c / $cc end)}'
  done >"$OUT/side-by-side.jsonl"
  echo
  echo "Side by side, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores: Callosum and the C epoll server at once," \
    "one churn of $SBS_COUNT split between them ($CONCURRENCY in flight, ${SRC_IPS:-enough} source addresses)"
  echo
  echo "| run | handshakes/s (both) | errors | Callosum CPU/hs | C CPU/hs | Callosum / C |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  jq -r -s "$JQ_MED"'
    def r2: (. * 100 | round) / 100;
    (.[] | "| \(.run) | \(.hs | round) | \(.errors) | \(.callosum_us * 10 | round / 10) µs | \(.c_us * 10 | round / 10) µs | \(.ratio | r2)× |"),
    "| median | | | | | **\(map(.ratio) | med | r2)×** |"' "$OUT/side-by-side.jsonl"
  echo
  echo "Raw results: $OUT/side-by-side-<run>.{json,txt}, $OUT/side-by-side.jsonl"
}

if ((SIDE_BY_SIDE > 0)); then
  side_by_side
  exit 0
fi

read -r -a servers <<<"$SERVERS"
for round in $(seq "$ROUNDS"); do
  shift_by=$(((round - 1) % ${#servers[@]}))
  for name in "${servers[@]:shift_by}" "${servers[@]:0:shift_by}"; do
    run_server "$name" "$round"
  done
done

# One line of JSON per server and round, the figures the tables need.
for round in $(seq "$ROUNDS"); do
  for name in "${servers[@]}"; do
    holds=()
    for rep in $(seq "$HOLD_REPS"); do holds+=("$OUT/$name-r$round-hold$rep.json"); done
    # The round's hold figures: medians over its holds; RSS from the first (a fresh process).
    jq -s -c --arg name "$name" --argjson round "$round" "$JQ_MED"'
      .[0].runs[0] as $c | [.[1:][] | .runs[0]] as $h |
      {name: $name, round: $round, hs: $c.handshakes_per_s, p50: $c.handshake_us.p50,
       p99: $c.handshake_us.p99, p999: $c.handshake_us.p999,
       cpu: $c.cpu.server_us_per_handshake, lgcpu: $c.cpu.loadgen_us_per_handshake,
       errors: $c.errors.total, hold_p50: ($h | map(.handshake_us.p50) | med),
       hold_p99: ($h | map(.handshake_us.p99) | med), hold_max: ($h | map(.handshake_us.max) | med),
       held: ($h | map(.hold.held) | min), rss: $h[0].hold.rss_per_held_connection_bytes}' \
      "$OUT/$name-r$round-churn.json" "${holds[@]}"
  done
done >"$OUT/summary.jsonl"

echo
echo "Handshake benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; client: callosum-loadgen" \
  "($CONCURRENCY in flight, ${SRC_IPS:-enough} source addresses); churn $CHURN_COUNT handshakes; hold $HOLD connections;" \
  "$ROUNDS interleaved rounds, $HOLD_REPS holds per server and round"
echo
echo "Median over the rounds:"
echo
echo "| server | churn hs/s | churn p50 | churn p99 | churn p99.9 | server CPU/hs | loadgen CPU/hs | churn errors | hold p50 | hold p99 | hold max | held | RSS/held conn |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
jq -r -s --arg servers "$SERVERS" "$JQ_MED"'
  def ms: if . == null then "?" else (. / 10 | round) / 100 | tostring + " ms" end;
  def us: if . == null then "?" else (. * 10 | round) / 10 | tostring + " µs" end;
  . as $all | ($servers | split(" ") | map(select(. != ""))) as $names |
  $names[] as $n | [$all[] | select(.name == $n)] as $r |
  "| \($n) | \($r | map(.hs) | med | round) | \($r | map(.p50) | med | ms) | \($r | map(.p99) | med | ms) | \($r | map(.p999) | med | ms) | \($r | map(.cpu) | med | us) | \($r | map(.lgcpu) | med | us) | \($r | map(.errors) | add) | \($r | map(.hold_p50) | med | ms) | \($r | map(.hold_p99) | med | ms) | \($r | map(.hold_max) | med | ms) | \($r | map(.held) | min) | \($r | map(.rss) | med | if . == null then "?" else (round | tostring) + " B" end) |"
' "$OUT/summary.jsonl"
if [[ " $SERVERS " == *" c "* ]]; then
  echo
  echo "Ratios to the C epoll server, paired within each round (round 1 / round 2 / ...), then their"
  echo "median (hs/s: higher is better; the rest: lower is better):"
  echo
  echo "| server | churn hs/s | churn p99 | server CPU/hs | hold p99 |"
  echo "| --- | --- | --- | --- | --- |"
  jq -r -s --arg servers "$SERVERS" "$JQ_MED"'
    def x: if . == null then "?" else ((. * 100 | round) / 100 | tostring) + "×" end;
    . as $all | ($servers | split(" ") | map(select(. != ""))) as $names |
    def ratios($n; f): [$all[] | select(.name == $n)] | sort_by(.round) | map(
      .round as $k | ($all[] | select(.name == "c" and .round == $k)) as $c |
      if (f) == null or ($c | f) == null or ($c | f) == 0 then null else (f) / ($c | f) end);
    def cell($n; f): ratios($n; f) as $q | "\($q | map(x) | join(" / ")) (median **\($q | med | x)**)";
    $names[] as $n |
    "| \($n) | \(cell($n; .hs)) | \(cell($n; .p99)) | \(cell($n; .cpu)) | \(cell($n; .hold_p99)) |"
  ' "$OUT/summary.jsonl"
fi
echo
echo "Raw results: $OUT/<server>-r<round>-{churn,hold<n>}.{json,hgrm,txt}, $OUT/summary.jsonl"
