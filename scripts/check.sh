#!/usr/bin/env bash
# Run every test in each given build directory (normal, then ASan/UBSan)
# and end with one summary line: "N passed, N failed".
# Usage: scripts/check.sh BUILD_DIR...
set -uo pipefail
passed=0
failed=0
failed_names=()
for b in "$@"; do
    echo "== ctest in $b"
    log=$(mktemp)
    ctest --test-dir "$b" --output-on-failure --timeout 600 2>&1 | tee "$log"
    # ctest prints "NN% tests passed, F tests failed out of T"
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1)
    if [ -z "$line" ]; then
        echo "check: no ctest summary from $b" >&2
        failed=$((failed + 1))
        failed_names+=("$b:ctest")
    else
        f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
        t=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
        passed=$((passed + t - f))
        failed=$((failed + f))
        while read -r name; do
            failed_names+=("$b:$name")
        done < <(sed -nE 's/^[[:space:]]+[0-9]+ - ([^ ]+) .*/\1/p' "$log")
    fi
    rm -f "$log"
done
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
