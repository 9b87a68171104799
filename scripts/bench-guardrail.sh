#!/usr/bin/env bash
# bench-guardrail.sh: fail when spargio falls behind Tokio by more than the floors below.
#
# Reads criterion's results (target/criterion/<group>/<function>/new/estimates.json, median per
# iteration) left by a previous `cargo bench` or scripts/bench-report.sh run; it runs nothing itself.
# For each label: ratio = spargio median / Tokio median (lower is better). Exit 1 when
#   - a ratio is above its floor (spargio slower than allowed), or
#   - a listed label is missing (no estimates for one side): a missing benchmark is a failure.
#
# Usage: scripts/bench-guardrail.sh [CRITERION_DIR]      (default target/criterion)
#
# Floors. The machine is a shared 2-vCPU VM whose ratios move by 20-40 % between runs, so each
# floor sits well above (worse than) what was measured, to catch regressions (a lost fast path, a
# shard that parks when it should spin) rather than noise. They are NOT the targets of the project
# benchmark brief; where spargio meets a target with room, the floor says so.
#
# label                                      floor  measured (ratio, date, notes)
FLOORS='
steady_ping_pong_rtt/tokio_two_thread        0.50   0.15-0.21 (2026-05, 1.1-1.4 us per round trip vs 7-8 us); target <= 0.25
steady_ping_pong_rtt                         5.00   2.4-3.3 (tokio keeps both tasks on one worker: same-thread hand-off)
steady_one_way_send_drain                    3.00   1.6-1.9 (spargio pays one MSG_RING SQE + CQE per message)
steady_one_way_send_drain/tokio_two_thread   3.00   1.5-1.7
cold_start_ping_pong                         1.50   0.53-0.69 (three ring setups vs epoll + eventfd)
fanout_fanin_balanced                        1.60   0.92-1.12 (4 shards on 2 vCPUs)
fanout_fanin_skewed                          1.60   0.94-1.09
'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python3 - "${1:-target/criterion}" "$FLOORS" <<'PY'
import json, os, sys

crit, floors_text = sys.argv[1], sys.argv[2]

def median(group, function):
    path = os.path.join(crit, group, function, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, ValueError, KeyError):
        return None

failures = 0
for line in floors_text.strip().splitlines():
    parts = line.split()
    label, floor = parts[0], float(parts[1])
    # "group" compares spargio with tokio; "group/tokio_x" with the tokio_x function.
    group, _, tokio_fn = label.partition("/")
    tokio_fn = tokio_fn or "tokio"
    t, s = median(group, tokio_fn), median(group, "spargio")
    if t is None or s is None:
        missing = [n for n, v in ((tokio_fn, t), ("spargio", s)) if v is None]
        print(f"FAIL  {label:<44} missing: {', '.join(f'{group}/{m}' for m in missing)}")
        failures += 1
        continue
    r = s / t
    ok = r <= floor
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'}  {label:<44} spargio/tokio {r:6.2f}  (floor {floor:.2f}; "
          f"tokio {t / 1e3:.1f} us, spargio {s / 1e3:.1f} us)")

if failures:
    print(f"bench guardrail: {failures} failure(s)")
    sys.exit(1)
print("bench guardrail: all ratios within their floors")
PY
