#!/bin/sh
# Run every cmocka test executable of a build under valgrind memcheck.
#   valgrind-suite.sh BUILD_DIR
# Heap, stack and mmap must live above 4 GB, where no emulated x86 address can be
# (DESIGN.md, "Addresses"): --aspace-minaddr puts them there. valgrind still loads the
# executable itself near 1 MB; ptelab recognises that island (src/machine.c).
set -u
build=$1
export PTELAB_SOURCE_DIR="$(cd "$(dirname "$0")/.." && pwd)"
pass=0
fail=0
for t in "$build"/tests/test-*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    log="$build/valgrind-$name.log"
    if valgrind -q --aspace-minaddr=0x100000000 --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        "$t" >"$log" 2>&1; then
        pass=$((pass + 1))
        echo "valgrind: $name ok"
    else
        fail=$((fail + 1))
        echo "valgrind: $name FAILED (log: $log)"
        tail -n 30 "$log"
    fi
done
echo "valgrind: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
