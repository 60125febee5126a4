#!/usr/bin/env bash
# Run a fuzzer's corpus regression driver (fuzz_regress_<target>) with
# $TMPDIR in a directory of its own, removed afterwards whatever happens:
# what the harness creates (fuzz_util.h) never outlives the test.
# Usage: regress.sh DRIVER DIR...
set -uo pipefail
work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-regress.XXXXXX")
trap 'rm -rf "$work"' EXIT
TMPDIR=$work "$@"
