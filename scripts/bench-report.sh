#!/usr/bin/env bash
# bench-report.sh: run a short profile of the benchmark suites and write one Markdown table of
# spargio against Tokio (and compio) into docs/BENCHMARKS.md, between
#   <!-- bench-table:begin -->  and  <!-- bench-table:end -->
#
# Usage: scripts/bench-report.sh [--no-run]
#   --no-run   do not run anything; only rebuild the table from the results already in
#              target/criterion (criterion estimates, cpu.json, latency.json) and the last
#              idle-CPU output (target/bench-report/idle_cpu.txt).
#
# What it runs (about 4-5 minutes on a 2-vCPU machine):
#   1. every criterion suite in BENCH_SUITES (default: ping_pong fanout_fanin, plus fs_api,
#      net_api and time_boundary when their files exist) with a short profile:
#      --warm-up-time $WARM_UP --measurement-time $MEASURE --sample-size $SAMPLES
#   2. the latency harness (cargo bench --bench latency -- $LATENCY_SECS): per-round-trip
#      p50/p99 of steady_ping_pong_rtt and net_echo_rtt_256b
#   3. the idle-CPU example (cargo run --release --example idle_cpu)
#
# The table is generic over criterion's output: for every group directory
# target/criterion/<group>/ holding a baseline (`tokio*` or `compio*`) and a `spargio*` function
# with new/estimates.json, it emits one row per (baseline, spargio*) pair. Time is criterion's
# median per iteration; ratio = spargio time / baseline time (below 1: spargio faster). CPU per iteration comes
# from <group>/<function>/cpu.json (written by the benches' iter_custom wrapper, see
# benches/common/harness.rs), p50 / p99 per round trip from <group>/<function>/latency.json
# (latency harness; any group it writes). A latency.json of a function that is none of `tokio*`,
# `compio*`, `spargio*` (the `std_blocking` floor of net_echo_rtt_256b) is listed under the table
# as a floor.
# A group left over from an earlier run of a suite not run now still appears (with its date).
#
# Environment: WARM_UP=1 MEASURE=3 SAMPLES=30 LATENCY_SECS=0.7 BENCH_SUITES="ping_pong ..."
#              REPORT_FROM=dir   (with --no-run: read results from dir instead of target/criterion)
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

out_dir=target/bench-report
mkdir -p "$out_dir"
run=1
[ "${1:-}" = "--no-run" ] && run=0

if [ "$run" = 1 ]; then
    for suite in $BENCH_SUITES; do
        echo "==> cargo bench --bench $suite (warm-up ${WARM_UP}s, measurement ${MEASURE}s, ${SAMPLES} samples)"
        cargo bench --bench "$suite" -- --warm-up-time "$WARM_UP" --measurement-time "$MEASURE" \
            --sample-size "$SAMPLES" --noplot 2>&1 | tee "$out_dir/$suite.log"
    done
    echo "==> cargo bench --bench latency -- $LATENCY_SECS"
    cargo bench --bench latency -- "$LATENCY_SECS" 2>&1 | tee "$out_dir/latency.log"
    echo "==> cargo run --release --example idle_cpu"
    # A failing idle check is reported in the table, not here.
    cargo run --release --example idle_cpu 2>&1 | tee "$out_dir/idle_cpu.txt" || true
fi

python3 - "$out_dir/idle_cpu.txt" "${REPORT_FROM:-target/criterion}" <<'PY'
import datetime, json, os, platform, re, subprocess, sys

idle_file, crit = sys.argv[1], sys.argv[2]
doc = "docs/BENCHMARKS.md"
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"

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

rows = []
floors = []
groups = sorted(d for d in os.listdir(crit) if os.path.isdir(os.path.join(crit, d))) if os.path.isdir(crit) else []
for group in groups:
    functions = {}
    for fn in sorted(os.listdir(os.path.join(crit, group))):
        est_path = os.path.join(crit, group, fn, "new", "estimates.json")
        est = load(est_path)
        if not fn.startswith(("tokio", "compio", "spargio")):
            lat_path = os.path.join(crit, group, fn, "latency.json")
            lat = load(lat_path)
            if lat:
                when = datetime.datetime.fromtimestamp(os.path.getmtime(lat_path)).strftime("%Y-%m-%d %H:%M")
                floors.append(f"`{group}/{fn}` p50 / p99 {fmt_lat(lat)} ({when})")
        if est is None:
            continue
        functions[fn] = {
            "median": est["median"]["point_estimate"],
            "mtime": os.path.getmtime(est_path),
            "cpu": load(os.path.join(crit, group, fn, "cpu.json")),
            "lat": load(os.path.join(crit, group, fn, "latency.json")),
        }
    baselines = [f for f in functions if f.startswith(("tokio", "compio"))]
    spargios = [f for f in functions if f.startswith("spargio")]
    for t in baselines:
        for s in spargios:
            label = group
            if t != "tokio":
                label += f" (vs {t})"
            if s != "spargio":
                label += f" [{s}]"
            ft, fs = functions[t], functions[s]
            cpu_t = ft["cpu"]["cpu_ns_per_iter"] if ft["cpu"] else None
            cpu_s = fs["cpu"]["cpu_ns_per_iter"] if fs["cpu"] else None
            when = datetime.datetime.fromtimestamp(min(ft["mtime"], fs["mtime"])).strftime("%Y-%m-%d %H:%M")
            rows.append(
                f"| `{label}` | {fmt_ns(ft['median'])} | {fmt_ns(fs['median'])} | **{ratio(fs['median'], ft['median'])}** "
                f"| {fmt_ns(cpu_t)} | {fmt_ns(cpu_s)} | {ratio(cpu_s, cpu_t)} | {fmt_lat(ft['lat'])} | {fmt_lat(fs['lat'])} | {when} |"
            )

idle = None
try:
    with open(idle_file) as f:
        m = re.search(r"IDLE_CPU_PERCENT tokio=([\d.]+) spargio=([\d.]+)", f.read())
        if m:
            idle = (float(m.group(1)), float(m.group(2)), os.path.getmtime(idle_file))
except OSError:
    pass
if idle:
    when = datetime.datetime.fromtimestamp(idle[2]).strftime("%Y-%m-%d %H:%M")
    rows.append(f"| idle CPU, 2 shards / 2 workers (% of one core) | {idle[0]:.2f} % | {idle[1]:.2f} % | – | – | – | – | – | – | {when} |")
# The time_boundary suite prints the idle CPU of runtimes holding 10k pending timers.
timers_log = os.path.join(os.path.dirname(idle_file), "time_boundary.log")
try:
    with open(timers_log) as f:
        m = re.search(r"IDLE_TIMERS_CPU_PERCENT tokio=([\d.]+) spargio=([\d.]+)", f.read())
    if m:
        when = datetime.datetime.fromtimestamp(os.path.getmtime(timers_log)).strftime("%Y-%m-%d %H:%M")
        rows.append(f"| idle CPU with 10k pending timers (% of one core) | {float(m.group(1)):.2f} % | {float(m.group(2)):.2f} % | – | – | – | – | – | – | {when} |")
except OSError:
    pass

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"

cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip() or "?"
table = [
    BEGIN,
    "",
    f"Generated by `scripts/bench-report.sh` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: "
    f"{sh('nproc')} CPUs ({cpu_model}), Linux {platform.release()}, "
    f"commit `{sh('git rev-parse --short HEAD') or '?'}`{' (dirty tree)' if sh('git status --porcelain --untracked-files=no') else ''}.",
    "",
    "| benchmark | baseline | spargio | spargio ÷ baseline time | baseline CPU/iter | spargio CPU/iter | CPU ratio "
    "| baseline p50 / p99 RTT | spargio p50 / p99 RTT | measured |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    *rows,
    "",
    "Times are criterion medians per iteration (one iteration = one batch, see the method above). "
    "Ratios below 1 mean spargio is faster. The baseline is Tokio (2 workers) unless the label says "
    "`(vs …)`: `(vs tokio_two_thread)` is Tokio forced across two threads, `(vs compio)` compio "
    "(one runtime per thread). p50 / p99 are per round trip, from the latency harness.",
    *(["", "Floors from the latency harness (no runtime): " + "; ".join(floors) + "."] if floors else []),
    "",
    END,
]

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
if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    text = head + "\n".join(table) + tail
else:
    text = text.rstrip("\n") + "\n\n" + "\n".join(table) + "\n"
os.makedirs(os.path.dirname(doc), exist_ok=True)
with open(doc, "w") as f:
    f.write(text)
print("\n".join(table))
print(f"\nwrote {len(rows)} rows to {doc}")
PY
