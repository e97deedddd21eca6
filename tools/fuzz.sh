#!/bin/sh
# Run libFuzzer targets for a while and report what they did.
#   fuzz.sh BUILD_DIR SECONDS [TARGET...]
# TARGET is fuzz_ddi, fuzz_reg, fuzz_kd or fuzz_lua; all four when none is named, one after
# another. FUZZ_RUNS=N also stops a target after N executions (libFuzzer's -runs).
# Seeds come from fuzz/corpus/<target>; new inputs go to BUILD_DIR/corpus/<target> so the
# repository's corpus only grows by hand. A crash, leak, hang or sanitizer report fails.
set -u
build=$1
seconds=$2
shift 2
targets=${*:-fuzz_ddi fuzz_reg fuzz_kd fuzz_lua}
runs=${FUZZ_RUNS:+-runs=$FUZZ_RUNS}
src="$(cd "$(dirname "$0")/.." && pwd)"
status=0
for t in $targets; do
    if [ ! -x "$build/fuzz/$t" ]; then
        echo "fuzz: $t: no such target in $build/fuzz (built with -DPTELAB_FUZZ=ON?)" >&2
        status=1
        continue
    fi
    name=${t#fuzz_}
    work="$build/corpus/$name"
    mkdir -p "$work" "$build/artifacts"
    log="$build/$t.log"
    # shellcheck disable=SC2086 # $runs is one option or nothing
    # -close_fd_mask=1: what the inputs print (a script's print()) stays out of the log;
    # libFuzzer and the sanitizers report on stderr, which stays open.
    "$build/fuzz/$t" -max_total_time="$seconds" $runs -timeout=10 -rss_limit_mb=4096 \
        -close_fd_mask=1 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        "$work" "$src/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    secs=$(grep -a -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1 | awk '{print $5}')
    if [ $rc -eq 0 ]; then
        echo "fuzz: $t: ${execs:-?} executions in ${secs:-$seconds}s (${rate:-?}/s), 0 crashes"
    else
        status=1
        echo "fuzz: $t: FAILED after ${execs:-?} executions (log $log)"
        grep -a -E "ERROR|SUMMARY|abort|deadly" "$log" | head -n 20
    fi
done
exit $status
