#!/usr/bin/env bash
# fuzz-long.sh: the long ("weekly") fuzz run: every cargo-fuzz target in turn, one at a time.
#
#   FUZZ_SECONDS=3600 bash scripts/fuzz-long.sh              # every [[bin]] of fuzz/Cargo.toml
#   FUZZ_SECONDS=1800 bash scripts/fuzz-long.sh op_lifecycle # only the named targets
#
# Each target runs for FUZZ_SECONDS (default 3600) as one process (libFuzzer's default: no -jobs,
# which would fork workers logging to ./fuzz-N.log) at low priority (nice 10), from
# its corpus fuzz/corpus/<target>/ plus its committed seeds fuzz/seeds/<target>/ when present, so
# a long run continues where the previous one (or CI's short run) stopped. Its log goes to
# fuzz/logs/<target>.log; at the end a table gives, per target, the runs, the coverage (libFuzzer's
# `cov:` edges and `ft:` features), the corpus size and the outcome. A crashing input is saved in
# fuzz/artifacts/<target>/ by libFuzzer; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<crash-file>
# and turn it into a regression test (the targets call `spargio_sys::check` functions, so a crash
# is one call away from a test in sys/tests/). Exits 1 if any target failed.
#
# Environment: FUZZ_SECONDS (3600), FUZZ_NICE (10), FUZZ_RSS_MB (2048: libFuzzer -rss_limit_mb).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

FUZZ_SECONDS="${FUZZ_SECONDS:-3600}"
FUZZ_NICE="${FUZZ_NICE:-10}"
FUZZ_RSS_MB="${FUZZ_RSS_MB:-2048}"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(awk '
        /^[ \t]*\[\[bin\]\]/ { inbin = 1; next }
        /^[ \t]*\[/ { inbin = 0 }
        inbin && /^[ \t]*name[ \t]*=/ { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print }
    ' fuzz/Cargo.toml)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "no fuzz targets found in fuzz/Cargo.toml"; exit 1; }
if [ ! -f fuzz/Cargo.lock ] && [ -f Cargo.lock ]; then
    cp Cargo.lock fuzz/Cargo.lock
fi
mkdir -p fuzz/logs

echo "fuzz-long: ${targets[*]} (${FUZZ_SECONDS}s each, one job, nice ${FUZZ_NICE})"
results=()
failed=0
for target in "${targets[@]}"; do
    corpus=("fuzz/corpus/$target")
    mkdir -p "fuzz/corpus/$target"
    [ -d "fuzz/seeds/$target" ] && corpus+=("fuzz/seeds/$target")
    log="fuzz/logs/$target.log"
    echo "--> $target: log in $log"
    start=$SECONDS
    set +e
    nice -n "$FUZZ_NICE" cargo +nightly fuzz run "$target" "${corpus[@]}" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$FUZZ_RSS_MB" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    # The last status line: "#<runs> <kind> cov: <edges> ft: <features> corp: <n>/<size> ..."
    status="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    [ -n "$runs" ] || runs="$(echo "$status" | sed -n 's/^#\([0-9]*\).*/\1/p')"
    cov="$(echo "$status" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')"
    ft="$(echo "$status" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')"
    corp="$(echo "$status" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')"
    if [ "$rc" -eq 0 ]; then
        outcome="ok"
    else
        outcome="FAILED (exit $rc; see $log and fuzz/artifacts/$target/)"
        failed=1
    fi
    results+=("$(printf '%-14s %8ss %12s runs  cov %6s  ft %6s  corpus %-12s %s' \
        "$target" $((SECONDS - start)) "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$outcome")")
    echo "<-- ${results[-1]}"
done
echo
echo "==> fuzz-long summary"
printf '%s\n' "${results[@]}"
exit "$failed"
