#!/usr/bin/env bash
# bench-http.sh: requests/s, latency and CPU time per request of five HTTP/1.1 "Hello, world!"
# servers under the same keep-alive load, in one run:
#
#   hyper_hello          hyper 1.x on spargio (io_uring), through spargio::compat::Io
#   hyper_hello_tokio    the same hyper service and glue on Tokio
#   http_hello           spargio's own minimal responder, io_uring backend
#   http_hello_queue     the same, on the Queue fallback backend (--backend queue)
#   http_hello_tokio     the same responder (same parser) on Tokio
#
# Each server is started on a free loopback port, warmed up, then loaded by examples/http_load.rs
# (CONNECTIONS keep-alive connections, one thread and one outstanding request each, no
# pipelining) for DURATION seconds. CPU per request is the server process's utime+stime
# (/proc/PID/stat, before and after the measured run) divided by the requests served. The load
# generator shares the machine's CPUs with the server: on a small machine the numbers compare
# servers under the same conditions, not their ceilings. Run it on a quiet machine.
#
# Output: a Markdown table on stdout; the raw http_load lines in target/bench-http/.
#
# Usage: scripts/bench-http.sh
# Environment: DURATION=10 WARMUP=2 CONNECTIONS=32 SERVERS="hyper_hello ..." (a subset, in order)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
unset CARGO_TARGET_DIR

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
SERVERS="${SERVERS:-hyper_hello hyper_hello_tokio http_hello http_hello_queue http_hello_tokio}"
out_dir=target/bench-http
mkdir -p "$out_dir"

echo "building (release): hyper_hello hyper_hello_tokio http_hello http_hello_tokio http_load" >&2
cargo build --release --features tokio-io \
    --example hyper_hello --example hyper_hello_tokio --example http_hello \
    --example http_hello_tokio --example http_load >&2
bin=target/release/examples
clk_tck="$(getconf CLK_TCK)"

server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# utime + stime of process $1, in clock ticks (fields 14 and 15 of /proc/PID/stat; the command
# name, field 2, is in parentheses and may hold spaces, so count from the last ')').
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat")"
    stat="${stat##*) }"
    # After "comm) ", field 3 (state) is the first: utime is the 12th, stime the 13th.
    echo "$stat" | awk '{ print $12 + $13 }'
}

# The value of key $2 in a `key=value ...` line $1.
field() {
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

echo "| server | requests/s | p50 µs | p99 µs | server CPU µs/request | requests |"
echo "|---|---:|---:|---:|---:|---:|"
for name in $SERVERS; do
    case "$name" in
        hyper_hello) cmd=("$bin/hyper_hello") ;;
        hyper_hello_tokio) cmd=("$bin/hyper_hello_tokio") ;;
        http_hello) cmd=("$bin/http_hello" --backend io_uring) ;;
        http_hello_queue) cmd=("$bin/http_hello" --backend queue) ;;
        http_hello_tokio) cmd=("$bin/http_hello_tokio") ;;
        *)
            echo "unknown server: $name" >&2
            exit 2
            ;;
    esac
    stdout_file="$out_dir/$name.stdout"
    # Created here, so the polling below never reads a file the server's
    # shell has not opened yet.
    : >"$stdout_file"
    "${cmd[@]}" --addr 127.0.0.1:0 >"$stdout_file" 2>"$out_dir/$name.stderr" &
    server_pid=$!
    addr=""
    for _ in $(seq 1 100); do
        addr="$(sed -n '1s|.*http://\([0-9.]*:[0-9]*\).*|\1|p' "$stdout_file")"
        [ -n "$addr" ] && break
        sleep 0.05
    done
    if [ -z "$addr" ]; then
        echo "$name did not start: $(cat "$out_dir/$name.stderr")" >&2
        exit 1
    fi
    "$bin/http_load" --addr "$addr" --connections "$CONNECTIONS" --duration "$WARMUP" >/dev/null
    before="$(cpu_ticks "$server_pid")"
    line="$("$bin/http_load" --addr "$addr" --connections "$CONNECTIONS" --duration "$DURATION")"
    after="$(cpu_ticks "$server_pid")"
    echo "$line" >"$out_dir/$name.txt"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    requests="$(field "$line" requests)"
    cpu_us="$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(field "$line" rps)" "$(field "$line" p50_us)" \
        "$(field "$line" p99_us)" "$cpu_us" "$requests"
done
echo
echo "($CONNECTIONS keep-alive connections, no pipelining, ${DURATION} s per server after ${WARMUP} s of warm-up;" \
    "$(nproc) CPUs shared by the server and the load generator; CPU per request: server utime+stime)"
