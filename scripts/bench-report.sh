#!/usr/bin/env bash
# bench-report.sh: run a short profile of the benchmark suites twice, on a quiet machine and with
# the CPUs kept busy, and write one Markdown table per condition of spargio against its baselines
# (Tokio, and compio where a suite has it) into docs/BENCHMARKS.md, between
#   <!-- bench-table:begin -->       and  <!-- bench-table:end -->        (quiet)
#   <!-- bench-table-busy:begin -->  and  <!-- bench-table-busy:end -->   (CPUs kept busy)
#
# Why two conditions: on this kind of VM a halted vCPU takes ~10-15 us to wake, which hides per-op
# costs in every latency figure taken on a quiet machine. In the busy pass, BUSY_LOOPS (default 2)
# `nice -n 19` busy loops run beside the benchmarks, started and stopped by this script; the
# runtimes still get the CPUs whenever they want them, but no vCPU ever halts.
#
# Usage: scripts/bench-report.sh [--no-run]
#   --no-run   do not run anything; only rebuild the tables from the results already saved in
#              target/bench-report/<condition>/criterion (criterion estimates, cpu.json,
#              latency.json) and the last idle-CPU output (target/bench-report/idle_cpu.txt).
#
# What it runs (about 4-5 minutes on a 2-vCPU machine):
#   1. every criterion suite in BENCH_SUITES (default: ping_pong fanout_fanin, plus fs_api,
#      net_api and time_boundary when their files exist) with a short profile:
#      --warm-up-time $WARM_UP --measurement-time $MEASURE --sample-size $SAMPLES
#   2. the latency harness (cargo bench --bench latency -- $LATENCY_SECS): per-round-trip
#      p50/p99 of steady_ping_pong_rtt and net_echo_rtt_256b
#   3. scripts/bench-http.sh when it exists (HTTP servers under a load generator)
#   4. the idle-CPU example (cargo run --release --example idle_cpu), quiet pass only
# Steps 1-3 run once per condition in CONDITIONS; criterion's results of each pass are copied to
# target/bench-report/<condition>/criterion before the next pass overwrites them.
#
# The table is generic over criterion's output: for every group directory
# target/criterion/<group>/ holding a `tokio*` and a `spargio*` function with
# new/estimates.json, it emits one row per (baseline, spargio*) pair, where a baseline is a `tokio*`
# or `compio*` function. Time is criterion's median per iteration; ratio = spargio time / baseline
# time (below 1: spargio faster). CPU per iteration comes
# from <group>/<function>/cpu.json (written by the benches' iter_custom wrapper, see
# benches/common/harness.rs), p50 / p99 per round trip from <group>/<function>/latency.json
# (latency harness; any group it writes). A latency.json of a function that is neither `tokio*` nor
# `spargio*` nor a baseline (the `std_blocking` floor of net_echo_rtt_256b) is listed under the
# table as a floor.
# A group left over from an earlier run of a suite not run now still appears (with its date).
#
# Environment: WARM_UP=1 MEASURE=3 SAMPLES=30 LATENCY_SECS=0.7 BENCH_SUITES="ping_pong ..."
#              CONDITIONS="quiet busy" (run only one with CONDITIONS=quiet) BUSY_LOOPS=2
#              BENCH_FEATURES=tokio-io (cargo features of the benches: `spargio_compat` needs tokio-io)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
# Scripts use the default target directory, so criterion's results land in target/criterion.
unset CARGO_TARGET_DIR CRITERION_HOME

WARM_UP="${WARM_UP:-1}"
MEASURE="${MEASURE:-3}"
SAMPLES="${SAMPLES:-30}"
LATENCY_SECS="${LATENCY_SECS:-0.7}"
if [ -z "${BENCH_SUITES:-}" ]; then
    BENCH_SUITES="ping_pong fanout_fanin"
    for extra in fs_api net_api time_boundary; do
        [ -f "benches/$extra.rs" ] && BENCH_SUITES="$BENCH_SUITES $extra"
    done
fi

CONDITIONS="${CONDITIONS:-quiet busy}"
BUSY_LOOPS="${BUSY_LOOPS:-2}"
BENCH_FEATURES="${BENCH_FEATURES-tokio-io}"

out_dir=target/bench-report
mkdir -p "$out_dir"
run=1
[ "${1:-}" = "--no-run" ] && run=0

busy_pids=()
stop_busy() {
    if [ "${#busy_pids[@]}" -gt 0 ]; then
        kill "${busy_pids[@]}" 2>/dev/null || true
        wait "${busy_pids[@]}" 2>/dev/null || true
    fi
    busy_pids=()
}
trap stop_busy EXIT
start_busy() {
    local i
    for ((i = 0; i < BUSY_LOOPS; i++)); do
        nice -n 19 bash -c 'while :; do :; done' &
        busy_pids+=("$!")
    done
    echo "==> ${BUSY_LOOPS} nice -n 19 busy loops running: ${busy_pids[*]}"
}

run_pass() {
    local cond="$1" suite
    local dir="$out_dir/$cond"
    mkdir -p "$dir"
    [ "$cond" = busy ] && start_busy
    for suite in $BENCH_SUITES; do
        echo "==> [$cond] cargo bench --bench $suite (warm-up ${WARM_UP}s, measurement ${MEASURE}s, ${SAMPLES} samples)"
        cargo bench --features "$BENCH_FEATURES" --bench "$suite" -- --warm-up-time "$WARM_UP" --measurement-time "$MEASURE" \
            --sample-size "$SAMPLES" --noplot 2>&1 | tee "$dir/$suite.log"
    done
    echo "==> [$cond] cargo bench --bench latency -- $LATENCY_SECS"
    cargo bench --features "$BENCH_FEATURES" --bench latency -- "$LATENCY_SECS" 2>&1 | tee "$dir/latency.log"
    if [ -f scripts/bench-http.sh ]; then
        echo "==> [$cond] scripts/bench-http.sh"
        bash scripts/bench-http.sh 2>&1 | tee "$dir/http.txt" || true
    fi
    stop_busy
    rm -rf "$dir/criterion"
    cp -r target/criterion "$dir/criterion"
}

if [ "$run" = 1 ]; then
    for cond in $CONDITIONS; do
        run_pass "$cond"
    done
    if [ -f "$out_dir/quiet/time_boundary.log" ]; then
        cp "$out_dir/quiet/time_boundary.log" "$out_dir/time_boundary.log"
    fi
    echo "==> cargo run --release --example idle_cpu"
    # A failing idle check is reported in the table, not here.
    cargo run --release --example idle_cpu 2>&1 | tee "$out_dir/idle_cpu.txt" || true
fi

python3 - "$out_dir" "$CONDITIONS" <<'PY'
import datetime, json, os, platform, re, subprocess, sys

out_dir, conditions = sys.argv[1], sys.argv[2].split()
idle_file = os.path.join(out_dir, "idle_cpu.txt")
doc = "docs/BENCHMARKS.md"
BASELINES = ("tokio", "compio")
CONDITION_TEXT = {
    "quiet": ("", "a quiet machine"),
    "busy": ("-busy", "two `nice -n 19` busy loops beside the benchmarks (no vCPU halts)"),
}

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def fmt_ns(ns):
    if ns is None:
        return "–"
    for unit, scale in (("ns", 1), ("µs", 1e3), ("ms", 1e6), ("s", 1e9)):
        if ns < scale * 1000 or unit == "s":
            v = ns / scale
            digits = 0 if unit == "ns" or v >= 100 else 1 if v >= 10 else 2
            return f"{v:.{digits}f} {unit}"

def fmt_lat(lat):
    """p50 / p99 of a latency.json, or a dash."""
    if not lat:
        return "–"
    return f"{fmt_ns(lat.get('p50_ns'))} / {fmt_ns(lat.get('p99_ns'))}"

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"

def stamp(path):
    return datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M")

def criterion_rows(crit):
    """One row per (baseline, spargio*) pair of every group, and the floors."""
    rows, floors = [], []
    groups = sorted(d for d in os.listdir(crit) if os.path.isdir(os.path.join(crit, d))) if os.path.isdir(crit) else []
    for group in groups:
        functions = {}
        for fn in sorted(os.listdir(os.path.join(crit, group))):
            est_path = os.path.join(crit, group, fn, "new", "estimates.json")
            est = load(est_path)
            if not fn.startswith(BASELINES + ("spargio",)):
                lat_path = os.path.join(crit, group, fn, "latency.json")
                lat = load(lat_path)
                if lat:
                    floors.append(f"`{group}/{fn}` p50 / p99 {fmt_lat(lat)} ({stamp(lat_path)})")
            if est is None:
                continue
            functions[fn] = {
                "median": est["median"]["point_estimate"],
                "mtime": os.path.getmtime(est_path),
                "cpu": load(os.path.join(crit, group, fn, "cpu.json")),
                "lat": load(os.path.join(crit, group, fn, "latency.json")),
            }
        baselines = [f for f in functions if f.startswith(BASELINES)]
        spargios = [f for f in functions if f.startswith("spargio")]
        for b in baselines:
            for s in spargios:
                label = group if b == "tokio" else f"{group} (vs {b})"
                if s != "spargio":
                    label += f" [{s}]"
                fb, fs = functions[b], functions[s]
                cpu_b = fb["cpu"]["cpu_ns_per_iter"] if fb["cpu"] else None
                cpu_s = fs["cpu"]["cpu_ns_per_iter"] if fs["cpu"] else None
                when = datetime.datetime.fromtimestamp(min(fb["mtime"], fs["mtime"])).strftime("%Y-%m-%d %H:%M")
                rows.append(
                    f"| `{label}` | {fmt_ns(fb['median'])} | {fmt_ns(fs['median'])} | **{ratio(fs['median'], fb['median'])}** "
                    f"| {fmt_ns(cpu_b)} | {fmt_ns(cpu_s)} | {ratio(cpu_s, cpu_b)} | {fmt_lat(fb['lat'])} | {fmt_lat(fs['lat'])} | {when} |"
                )
    return rows, floors

def idle_rows():
    rows = []
    try:
        with open(idle_file) as f:
            m = re.search(r"IDLE_CPU_PERCENT tokio=([\d.]+) spargio=([\d.]+)", f.read())
        if m:
            rows.append(f"| idle CPU, 2 shards / 2 workers (% of one core) | {float(m.group(1)):.2f} % | {float(m.group(2)):.2f} % | – | – | – | – | – | – | {stamp(idle_file)} |")
    except OSError:
        pass
    # The time_boundary suite prints the idle CPU of runtimes holding 10k pending timers.
    timers_log = os.path.join(out_dir, "time_boundary.log")
    try:
        with open(timers_log) as f:
            m = re.search(r"IDLE_TIMERS_CPU_PERCENT tokio=([\d.]+) spargio=([\d.]+)", f.read())
        if m:
            rows.append(f"| idle CPU with 10k pending timers (% of one core) | {float(m.group(1)):.2f} % | {float(m.group(2)):.2f} % | – | – | – | – | – | – | {stamp(timers_log)} |")
    except OSError:
        pass
    return rows

def http_lines(cond):
    """The Markdown table lines scripts/bench-http.sh printed in this pass, if it ran."""
    path = os.path.join(out_dir, cond, "http.txt")
    try:
        with open(path) as f:
            lines = [l.rstrip("\n") for l in f if l.startswith("|")]
    except OSError:
        return []
    return ["", f"HTTP under a load generator (`scripts/bench-http.sh`, {stamp(path)}):", "", *lines] if lines else []

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"

cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip() or "?"

def table(cond):
    suffix, what = CONDITION_TEXT[cond]
    begin, end = f"<!-- bench-table{suffix}:begin -->", f"<!-- bench-table{suffix}:end -->"
    rows, floors = criterion_rows(os.path.join(out_dir, cond, "criterion"))
    if cond == "quiet":
        rows += idle_rows()
    lines = [
        begin,
        "",
        f"Generated by `scripts/bench-report.sh` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {what}: "
        f"{sh('nproc')} CPUs ({cpu_model}), Linux {platform.release()}, "
        f"commit `{sh('git rev-parse --short HEAD') or '?'}`{' (dirty tree)' if sh('git status --porcelain --untracked-files=no') else ''}.",
        "",
        "| benchmark | baseline | spargio | spargio ÷ baseline time | baseline CPU/iter | spargio CPU/iter | CPU ratio "
        "| baseline p50 / p99 RTT | spargio p50 / p99 RTT | measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "Times are criterion medians per iteration (one iteration = one batch, see the method above). "
        "The baseline is Tokio unless the row says `(vs …)` (another Tokio shape, or compio). "
        "Ratios below 1 mean spargio is faster. p50 / p99 are per round trip, from the latency harness.",
        *(["", "Floors from the latency harness (no runtime): " + "; ".join(floors) + "."] if floors else []),
        *http_lines(cond),
        "",
        end,
    ]
    return begin, end, lines, len(rows)

if os.path.exists(doc):
    with open(doc) as f:
        text = f.read()
else:
    text = """# Benchmarks

spargio against Tokio on the same machine, in the same run. Workloads, targets and the floors they are
judged against: see the project's benchmark brief (`BENCHMARKS.md` of the shared notes).

## Method

- `cargo bench --bench ping_pong` / `fanout_fanin` (criterion 0.5). Each runtime is built once per
  benchmark and driven by commands from the bench thread (`benches/common/harness.rs`); one
  criterion iteration is one batch: 256 round trips, 2048 one-way sends + drain, one cold
  start (build + 64 round trips + shutdown), or 64 fan-out/fan-in requests of 16 tasks.
- spargio runs 2 shards (4 for fan-out); Tokio a multi-thread runtime with as many workers.
  `tokio_two_thread` is Tokio with the driver and responder on two current-thread runtimes on
  two threads, so every message crosses threads.
- CPU per iteration: process user + sys time (`getrusage`) around every criterion sample, divided
  by its iterations (`cpu.json` beside criterion's estimates). A CPU/wall ratio near the number
  of shards means the runtime spins.
- `cargo bench --bench latency`: per-round-trip latency histogram (log buckets, ±3 %) of the
  ping-pong for each harness: p50/p95/p99/p99.9 and CPU per round trip.
- `cargo run --release --example idle_cpu`: CPU of an idle 2-shard runtime over 2 s.
- `scripts/bench-guardrail.sh` fails when a ratio is worse than its floor.

The machine is a shared, noisy 2-vCPU VM: ratios move by 20–40 % between runs; only ratios from
the same run are comparable.

## Results

"""

for cond in conditions:
    if cond not in CONDITION_TEXT:
        sys.exit(f"unknown condition {cond!r} (known: {' '.join(CONDITION_TEXT)})")
    begin, end, lines, n = table(cond)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + "\n".join(lines) + tail
    elif "<!-- bench-table:end -->" in text:
        # A new condition's table goes right after the quiet one.
        head, tail = text.split("<!-- bench-table:end -->", 1)
        text = head + "<!-- bench-table:end -->\n\n" + "\n".join(lines) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    print("\n".join(lines))
    print(f"\n{cond}: {n} rows")
os.makedirs(os.path.dirname(doc), exist_ok=True)
with open(doc, "w") as f:
    f.write(text)
print(f"wrote {doc}")
PY
