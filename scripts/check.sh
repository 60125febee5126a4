#!/usr/bin/env bash
# Run every test in each given build directory (normal, then ASan/UBSan,
# then the fuzzers of build-fuzz) and end with one summary line:
# "N passed, N failed, N skipped".  A test that exits with its
# SKIP_RETURN_CODE (it needs something this machine lacks) is skipped, not
# passed, and is listed with its reason (its first "SKIP: ..." line); a
# test that could not run at all is failed.
# Usage: scripts/check.sh BUILD_DIR...
set -uo pipefail
passed=0
failed=0
skipped=0
failed_names=()
skipped_names=()
skip_reasons=()

# The first "SKIP: ..." line test $2 printed in build $1 (ctest keeps every
# test's output in LastTest.log), or a note that it said nothing.
skip_reason() {
    local why
    why=$(awk -v t="$2" '/^[0-9]+\/[0-9]+ Test: / {cur = $3; out = 0; next}
                         /^Output:$/ {out = 1; next}
                         /^<end of output>$/ {out = 0; next}
                         out && cur == t && /SKIP: / {sub(/.*SKIP: /, ""); print; exit}' \
        "$1/Testing/Temporary/LastTest.log" 2>/dev/null)
    echo "${why:-no reason given}"
}

for b in "$@"; do
    echo "== ctest in $b"
    log=$(mktemp)
    # The fuzz build's tests are fuzzers that each run for a fixed time and
    # use one core: two at a time (this machine has two).
    par=()
    if grep -qs '^VHPC_FUZZ:BOOL=ON' "$b/CMakeCache.txt"; then
        par=(-j 2)
    fi
    ctest --test-dir "$b" "${par[@]}" --output-on-failure --timeout 600 2>&1 | tee "$log"
    # ctest prints "NN% tests passed, F tests failed out of T"; skipped tests
    # are in T, not in F, and listed under "The following tests did not run:".
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1)
    if [ -z "$line" ]; then
        echo "check: no ctest summary from $b" >&2
        failed=$((failed + 1))
        failed_names+=("$b:ctest")
    else
        f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
        t=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
        s=0
        while read -r name; do
            skipped_names+=("$b:$name")
            skip_reasons+=("$b:$name: $(skip_reason "$b" "$name")")
            s=$((s + 1))
        done < <(awk '/^The following tests did not run:/ {sec = 1; next}
                      /^The following tests FAILED:/ {sec = 0; next}
                      sec && /^[[:space:]]+[0-9]+ - / {print $3}' "$log")
        while read -r name; do
            failed_names+=("$b:$name")
        done < <(awk '/^The following tests FAILED:/ {sec = 1; next}
                      /^The following tests did not run:/ {sec = 0; next}
                      sec && /^[[:space:]]+[0-9]+ - / {print $3}' "$log")
        passed=$((passed + t - f - s))
        failed=$((failed + f))
        skipped=$((skipped + s))
    fi
    rm -f "$log"
done
if [ ${#skipped_names[@]} -gt 0 ]; then
    echo "skipped: ${skipped_names[*]}"
    printf '  %s\n' "${skip_reasons[@]}"
fi
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
