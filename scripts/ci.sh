#!/usr/bin/env bash
# ci.sh: spargio's CI pipeline. Entry point: `bash .ci/run` (CI=true, no stdin, Linux with io_uring).
#
#   1. fmt     cargo fmt --all --check (and the fuzz crate)
#   2. clippy  cargo clippy --workspace --all-targets -- -D warnings, then again with --all-features
#   3. test    cargo test --workspace --no-fail-fast (installs curl first if missing: tests/examples.rs),
#              then cargo test --workspace --all-features --no-fail-fast (the tokio-io and futures-io
#              adapters: tests/compat.rs; the hyper example: tests/examples.rs)
#   4. tour    cargo run --release --example tour    (the README's first command; must exit 0)
#   5. unsafe  bash scripts/unsafe-audit.sh; bash scripts/layers.sh --quiet (imports of src/ run one way)
#   6. miri    cargo +nightly miri test -p spargio-sys           (the simulated-kernel tests)
#   7. asan    the real-kernel suites under AddressSanitizer (nightly, -Zbuild-std, target/asan):
#              spargio-sys's unit and integration tests, and spargio's tests fs, net, runtime_core,
#              shutdown (and soundness, when tests/soundness.rs exists); no doctests
#   8. fuzz    cargo +nightly fuzz run <target> -- -max_total_time=$FUZZ_SECONDS, every [[bin]] of
#              fuzz/Cargo.toml (new targets are picked up from there), seeded from fuzz/seeds/<target>/
#              when it exists. A long run: scripts/fuzz-long.sh.
#
# Every step runs even when an earlier one failed, so one run reports every problem; the script
# exits 1 if any step failed. A step that cannot run here (no nightly, no miri, no cargo-fuzz)
# prints a line starting with `SKIPPED:` and is listed as such in the summary; it never hides a
# failure: once a tool is available, its failures fail the pipeline.
#
# Environment:
#   FUZZ_SECONDS=20        libFuzzer -max_total_time per target
#   MIRIFLAGS=...          overrides the default Miri flags below
#   PROPTEST_CASES=16      proptest cases per property under Miri (forwarded into the interpreter)
#   CI_FAIL_FAST=1         stop at the first failed step
#   CI_REQUIRE_ALL=1       treat a skipped step as a failure
#   CI_STEPS="miri fuzz"   run only these steps (local use; CI runs them all)

set -euo pipefail
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
exec </dev/null

cd "$(dirname "${BASH_SOURCE[0]}")/.."
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
CI_FAIL_FAST="${CI_FAIL_FAST:-0}"
CI_REQUIRE_ALL="${CI_REQUIRE_ALL:-0}"
CI_STEPS="${CI_STEPS:-fmt clippy test tour unsafe miri asan fuzz}"

state_dir="$(mktemp -d)"
trap 'rm -rf "$state_dir"' EXIT

pipeline_start=$SECONDS
summary=()
failed=()
skipped=()

fmt_time() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

# Called inside a step: print the loud SKIPPED line and leave the step.
skip() {
    local reason="$*"
    reason="${reason//$'\n'/ }"
    echo "$reason" >"$state_dir/skip"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "SKIPPED: $current: $reason"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    exit 0
}

# run_step NAME DESCRIPTION COMMAND...: run COMMAND in a subshell with `set -e` in force, time it,
# and record ok / FAILED / SKIPPED.
run_step() {
    current="$1"
    local desc="$2" start rc dur result
    shift 2
    case " $CI_STEPS " in
        *" $current "*) ;;
        *) return 0 ;;
    esac
    echo
    echo "==> step ${current}: ${desc}"
    start=$SECONDS
    rm -f "$state_dir/skip"
    set +e
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    set -e
    dur=$((SECONDS - start))
    if [ "$rc" -ne 0 ]; then
        result="FAILED (exit $rc)"
        failed+=("$current")
    elif [ -f "$state_dir/skip" ]; then
        result="SKIPPED: $(cat "$state_dir/skip")"
        skipped+=("$current")
    else
        result="ok"
    fi
    echo "<== step ${current}: ${result} in $(fmt_time "$dur")"
    summary+=("$(printf '  %-8s %6s  %s' "$current" "$(fmt_time "$dur")" "$result")")
    if [ "$rc" -ne 0 ] && [ "$CI_FAIL_FAST" = 1 ]; then
        finish
    fi
}

finish() {
    echo
    echo "==> summary"
    printf '%s\n' "${summary[@]}"
    local total
    total="$(fmt_time $((SECONDS - pipeline_start)))"
    if [ "$CI_REQUIRE_ALL" = 1 ] && [ "${#skipped[@]}" -gt 0 ]; then
        failed+=("${skipped[@]/%/ (skipped; CI_REQUIRE_ALL=1)}")
    fi
    if [ "${#failed[@]}" -gt 0 ]; then
        case " ${failed[*]} " in *" test "*) test_failure_digest ;; esac
        echo "CI FAILED in ${total}: failed step(s): ${failed[*]}"
        exit 1
    fi
    if [ "${#skipped[@]}" -gt 0 ]; then
        echo "CI PASSED in ${total}, but SKIPPED step(s): ${skipped[*]} (see the SKIPPED: lines above)"
    else
        echo "CI PASSED in ${total}: all ${#summary[@]} steps ok"
    fi
    exit 0
}

# Make sure the nightly toolchain is there (installing it if need be), or skip the step.
ensure_nightly() {
    command -v rustup >/dev/null 2>&1 || skip "rustup is not on PATH, so there is no nightly toolchain"
    if rustup run nightly rustc --version 2>/dev/null; then
        return 0
    fi
    echo "nightly is not installed; installing it"
    rustup toolchain install nightly --profile minimal ||
        skip "nightly is not installed and 'rustup toolchain install nightly --profile minimal' failed"
}

# --- steps -------------------------------------------------------------------------------------

step_fmt() {
    cargo fmt --all --check -- --color=never
    if [ -f fuzz/Cargo.toml ]; then
        cargo fmt --manifest-path fuzz/Cargo.toml --check -- --color=never
    fi
}

step_clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --all-features -- -D warnings
}

step_test() {
    # tests/examples.rs drives the HTTP examples with curl; without it those checks are skipped.
    if ! command -v curl >/dev/null 2>&1; then
        echo "curl is not installed; installing it"
        { apt-get update -qq && apt-get install -y -qq curl; } ||
            echo "!!! could not install curl: the curl checks of tests/examples.rs print SKIPPED"
    fi
    # --no-fail-fast: run every test binary even after one fails, so every count line appears.
    # The output is also kept, so the summary can repeat what failed (CI shows only the tail).
    # The optional features (tokio-io, futures-io) run in a second pass; both passes run even
    # when the first fails, and both logs feed the summary.
    local rc=0
    cargo test --workspace --no-fail-fast 2>&1 | tee "$state_dir/test.log" || rc=1
    cargo test --workspace --all-features --no-fail-fast 2>&1 | tee -a "$state_dir/test.log" || rc=1
    return "$rc"
}

# What failed in the test step, short enough to survive at the end of a long log: the failing
# test names, their panic lines and the binaries that failed.
test_failure_digest() {
    [ -f "$state_dir/test.log" ] || return 0
    echo
    echo "==> what failed in step test"
    awk '
        /^ *(Running|Doc-tests) / { binary = $0; shown = 0; next }
        /^---- .* stdout ----$|panicked at|^test .* FAILED$|^error: test failed|running for over|timed out/ {
            if (!shown) { print binary; shown = 1 }
            print
        }
    ' "$state_dir/test.log" | tail -n 80
}

step_tour() {
    cargo run --release --example tour
}

step_unsafe() {
    local rc=0
    bash scripts/unsafe-audit.sh || rc=1
    bash scripts/layers.sh --quiet || rc=1
    return "$rc"
}

step_miri() {
    ensure_nightly
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
        echo "installing the miri and rust-src components for nightly"
        rustup component add miri rust-src --toolchain nightly ||
            skip "could not install the miri component (rustup component add miri rust-src --toolchain nightly failed; no miri in today's nightly?)"
    fi
    rustup run nightly cargo miri --version
    # - Isolation stays on (no host files, clock or entropy reach the tests; runs are reproducible).
    #   An isolated operation returns an error instead of aborting: proptest asks for the current
    #   directory to find its regression files and copes with the error.
    # - Permissive provenance: SQEs carry user addresses as u64, exactly as the kernel ABI does, so
    #   the simulated kernel turns integers back into pointers (exposed provenance); say so instead
    #   of warning about it on every run. (-Zmiri-strict-provenance rejects that by design.)
    # - proptest reads PROPTEST_CASES from the environment, which Miri forwards only when asked.
    export PROPTEST_CASES="${PROPTEST_CASES:-16}"
    export MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance -Zmiri-isolation-error=warn-nobacktrace -Zmiri-env-forward=PROPTEST_CASES}"
    echo "MIRIFLAGS=$MIRIFLAGS PROPTEST_CASES=$PROPTEST_CASES"
    # Tests named `intentionally_leaks_*` leak what the kernel may still write (never free it),
    # which Miri's leak check would report: they run in a second pass that ignores leaks.
    cargo +nightly miri test -p spargio-sys -- --skip intentionally_leaks
    MIRIFLAGS="$MIRIFLAGS -Zmiri-ignore-leaks" cargo +nightly miri test -p spargio-sys --test leaked_ops
}

step_asan() {
    ensure_nightly
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        echo "installing the rust-src component for nightly (-Zbuild-std needs it)"
        rustup component add rust-src --toolchain nightly ||
            skip "could not install rust-src for nightly (rustup component add rust-src --toolchain nightly failed)"
    fi
    local host
    host="$(rustup run nightly rustc -vV | sed -n 's/^host: //p')"
    case "$host" in
        x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
        *) skip "AddressSanitizer is not set up for host '$host' here" ;;
    esac
    # - Instrumented code and the standard library are rebuilt for an explicit --target
    #   (-Zbuild-std), so build scripts and proc macros stay uninstrumented and std's own
    #   allocations are checked too. Its own target dir keeps the normal build's cache intact.
    # - Only the suites that drive the real kernel: the simulated kernel is covered by Miri.
    #   No doctests (--lib --tests / --test): they would need their own instrumented build.
    # - Leaks: spargio-sys runs with LeakSanitizer on (it leaks nothing by design: what the
    #   kernel may still use is in mmaps, which LSan does not track), except its
    #   `intentionally_leaks_*` tests (tests/leaked_ops.rs, tests/lifecycle.rs: a dropped op
    #   table leaks what the kernel may still write), which run in a pass of their own without it. The runtime suites run
    #   with detect_leaks=0: at shutdown the runtime deliberately leaks every op the kernel
    #   still holds, buffer included (tests/fs.rs shutdown_with_ops_in_flight does this on
    #   purpose; other shutdown tests can, depending on timing), and LSan would fail those
    #   intentional leaks. Use-after-free, overflows and double frees still fail every suite.
    export RUSTFLAGS="-Zsanitizer=address"
    export RUSTDOCFLAGS="-Zsanitizer=address"
    export CARGO_TARGET_DIR="${ASAN_TARGET_DIR:-target/asan}"
    local common=(-Zbuild-std --target "$host" --no-fail-fast)
    local suites=(--test fs --test net --test runtime_core --test shutdown)
    local extra
    for extra in soundness cancel_safety; do
        if [ -f "tests/$extra.rs" ]; then
            suites+=(--test "$extra")
        fi
    done
    echo "RUSTFLAGS=$RUSTFLAGS CARGO_TARGET_DIR=$CARGO_TARGET_DIR suites: ${suites[*]}"
    local rc=0
    ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        cargo +nightly test "${common[@]}" -p spargio-sys --lib --tests -- --skip intentionally_leaks || rc=1
    ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        cargo +nightly test "${common[@]}" -p spargio-sys --lib --tests -- intentionally_leaks || rc=1
    ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        cargo +nightly test "${common[@]}" -p spargio "${suites[@]}" || rc=1
    return "$rc"
}

fuzz_targets() {
    # The `name = "..."` of every [[bin]] section of fuzz/Cargo.toml.
    awk '
        /^[ \t]*\[\[bin\]\]/ { inbin = 1; next }
        /^[ \t]*\[/ { inbin = 0 }
        inbin && /^[ \t]*name[ \t]*=/ {
            sub(/^[^"]*"/, ""); sub(/".*$/, ""); print
        }
    ' fuzz/Cargo.toml
}

step_fuzz() {
    [ -f fuzz/Cargo.toml ] || skip "there is no fuzz/Cargo.toml"
    local targets target
    ensure_nightly
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "cargo-fuzz is not installed; installing it"
        cargo install cargo-fuzz --locked ||
            skip "could not install cargo-fuzz (cargo install cargo-fuzz --locked failed)"
    fi
    cargo fuzz --version
    # fuzz/ is its own workspace with its own lock file. Unless one is committed, start it from the
    # workspace's, so spargio-sys is fuzzed against the dependency versions it is tested with.
    if [ ! -f fuzz/Cargo.lock ] && [ -f Cargo.lock ]; then
        cp Cargo.lock fuzz/Cargo.lock
        echo "fuzz/Cargo.lock: seeded from the workspace's Cargo.lock"
    fi
    targets="$(fuzz_targets)"
    if [ -z "$targets" ]; then
        echo "fuzz/Cargo.toml has no [[bin]] targets"
        return 1
    fi
    echo "targets: $(echo "$targets" | tr '\n' ' ')(${FUZZ_SECONDS}s each)"
    local failed_targets=()
    for target in $targets; do
        echo "--> fuzz ${target}"
        local t0=$SECONDS
        # A target's committed seeds (fuzz/seeds/<target>/, e.g. the scenarios of the
        # lifecycle issues) are read as a second corpus; new inputs go to fuzz/corpus/<target>/.
        local corpus=()
        if [ -d "fuzz/seeds/$target" ]; then
            mkdir -p "fuzz/corpus/$target"
            corpus=("fuzz/corpus/$target" "fuzz/seeds/$target")
        fi
        if cargo +nightly fuzz run "$target" "${corpus[@]}" -- -max_total_time="$FUZZ_SECONDS"; then
            echo "<-- fuzz ${target}: ok in $(fmt_time $((SECONDS - t0)))"
        else
            echo "<-- fuzz ${target}: FAILED in $(fmt_time $((SECONDS - t0))); input (Base64 above) saved in fuzz/artifacts/${target}/"
            failed_targets+=("$target")
        fi
    done
    if [ "${#failed_targets[@]}" -gt 0 ]; then
        echo "fuzz target(s) failed: ${failed_targets[*]}"
        return 1
    fi
}

# --- pipeline ----------------------------------------------------------------------------------

echo "==> environment"
echo "  repo:   $(pwd) ($(git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
echo "  kernel: $(uname -sr), $(nproc 2>/dev/null || echo '?') cpus"
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
    echo "  kernel.io_uring_disabled = $(cat /proc/sys/kernel/io_uring_disabled)"
fi
echo "  cargo:  $(cargo --version)"
echo "  rustc:  $(rustc --version)"

run_step fmt "cargo fmt --all --check" step_fmt
run_step clippy "cargo clippy --workspace --all-targets [--all-features] -- -D warnings" step_clippy
run_step test "cargo test --workspace [--all-features] --no-fail-fast" step_test
run_step tour "cargo run --release --example tour" step_tour
run_step unsafe "bash scripts/unsafe-audit.sh" step_unsafe
run_step miri "cargo +nightly miri test -p spargio-sys" step_miri
run_step asan "cargo +nightly test -Zsanitizer=address (spargio-sys; fs net runtime_core shutdown)" step_asan
run_step fuzz "cargo +nightly fuzz run <each target> -- -max_total_time=${FUZZ_SECONDS}" step_fuzz
finish
