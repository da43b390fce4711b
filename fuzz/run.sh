#!/usr/bin/env bash
# fuzz/run.sh: runs every libFuzzer target for FUZZ_SECONDS (default 30) from its committed
# seeds in fuzz/corpus/<target>/, and exits non-zero if any target crashed, leaked, hit a
# sanitizer report, timed out on one input, or failed to run.
#
#   FUZZ_SECONDS=20 fuzz/run.sh                 # every target
#   fuzz/run.sh fuzz_range fuzz_multipart       # some targets
#
# Environment:
#   FUZZ_SECONDS  per-target budget in seconds (default 30)
#   FUZZ_BIN      where the fuzz_* binaries are (default: build-fuzz/fuzz beside or inside the
#                 repo; see README.md for the build)
#   FUZZ_WORK     scratch: grown corpora and crash artifacts (default /tmp/quaver-fuzz);
#                 the committed seeds are only read
#   FUZZ_JOBS     targets run at once (default: number of CPUs, at most 2)
#   FUZZ_REPLAY_CRASHES=1  also replay fuzz/crashes/*.bin first (each must not crash)
# Exit: 0 all clean; 1 a target failed (its log and reproducer are named); 77 binaries not
# built (a test runner may count that as skipped).
# Bounded: each target gets -max_total_time, -timeout=10 per input, and a hard `timeout` 30 s
# after its budget, so the whole run takes about ceil(targets / FUZZ_JOBS) * FUZZ_SECONDS plus
# start-up, and never more than ceil(targets / FUZZ_JOBS) * (FUZZ_SECONDS + 40).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
secs=${FUZZ_SECONDS:-30}
work=${FUZZ_WORK:-/tmp/quaver-fuzz}
ncpu=$(nproc 2>/dev/null || echo 1)
jobs=${FUZZ_JOBS:-$(( ncpu < 2 ? ncpu : 2 ))}

if [ -z "${FUZZ_BIN:-}" ]; then
    for d in "$repo/build-fuzz/fuzz" "$(dirname "$repo")/build-fuzz/fuzz"; do
        [ -x "$d/fuzz_range" ] && FUZZ_BIN=$d && break
    done
fi
if [ -z "${FUZZ_BIN:-}" ] || [ ! -d "$FUZZ_BIN" ]; then
    echo "fuzz/run.sh: no fuzz binaries (set FUZZ_BIN, or build: CC=clang cmake -S . -B build-fuzz -DQV_FUZZ=ON && make -C build-fuzz fuzz-all)" >&2
    exit 77
fi

# target  max_len  extra libFuzzer flags
targets_table="
fuzz_rpc_dispatch  8192
fuzz_config_file   4096
fuzz_range         256
fuzz_multipart     16384
fuzz_json_body     8192
fuzz_stream_probe  16384
fuzz_mon_bus       8192
fuzz_mdp_broker    1024   -detect_leaks=0
fuzz_msgpack_value 4096
fuzz_dbopt_text    8192
"
# fuzz_mdp_broker: the broker thread allocates and frees while an input runs, so libFuzzer's
# per-input leak check would blame inputs for the broker's in-flight state.

want=("$@")
selected() {
    [ ${#want[@]} -eq 0 ] && return 0
    local w
    for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}

mkdir -p "$work"
rc=0

run_one() {   # target max_len flags...
    local t=$1 maxlen=$2; shift 2
    local bin="$FUZZ_BIN/$t" log="$work/$t.log"
    mkdir -p "$work/corpus/$t" "$work/artifacts"
    if [ ! -x "$bin" ]; then
        echo "FAIL $t: $bin not built" > "$work/$t.result"
        return
    fi
    # -error_exitcode/-timeout_exitcode explicit so that 77 stays "not built" above.
    timeout -k 10 $((secs + 30)) "$bin" "$work/corpus/$t" "$here/corpus/$t" \
        -max_total_time="$secs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
        -error_exitcode=1 -timeout_exitcode=2 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t-" "$@" > "$log" 2>&1
    local st=$?
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    local cov
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ $st -eq 0 ]; then
        echo "ok   $t: ${secs}s, ${execs:-?} runs, ${cov:-cov: ?}" > "$work/$t.result"
    else
        local art
        art=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //')
        echo "FAIL $t: exit $st; log $log${art:+; reproducer $art}" > "$work/$t.result"
        grep -m3 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz_[a-z_]+: )' "$log" | sed 's/^/     /' >> "$work/$t.result"
    fi
}

if [ "${FUZZ_REPLAY_CRASHES:-0}" = 1 ]; then
    for f in "$here"/crashes/*.bin; do
        [ -e "$f" ] || continue
        t=$(basename "$f" | sed -E 's/^(fuzz_[a-z_]+)-.*/\1/')
        selected "$t" || continue
        if ! timeout 60 "$FUZZ_BIN/$t" -runs=1 "$f" > "$work/replay-$(basename "$f").log" 2>&1; then
            echo "FAIL replay $f (log $work/replay-$(basename "$f").log)"
            rc=1
        else
            echo "ok   replay $f"
        fi
    done
fi

start=$(date +%s)
running=0
while read -r t maxlen extra; do
    [ -n "$t" ] || continue
    selected "$t" || continue
    rm -f "$work/$t.result"
    # shellcheck disable=SC2086
    run_one "$t" "$maxlen" $extra &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done <<< "$targets_table"
wait

while read -r t _; do
    [ -n "$t" ] || continue
    selected "$t" || continue
    if [ -f "$work/$t.result" ]; then
        cat "$work/$t.result"
        grep -q '^FAIL' "$work/$t.result" && rc=1
    else
        echo "FAIL $t: no result"
        rc=1
    fi
done <<< "$targets_table"
echo "fuzz/run.sh: $(( $(date +%s) - start ))s total, ${secs}s per target, $jobs at a time; work dir $work"
exit $rc
