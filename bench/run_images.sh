#!/usr/bin/env bash
# run_images.sh BUILD_DIR - `make bench-images`: the image manager's two
# tables in one run.
#   1. management (run_images_mgmt.sh): image size, boot to agent ready,
#      idle guest memory and shutdown time, minimal vs full Debian image
#      with the same software (the ICS'06 table);
#   2. distribution (run_dist.sh): a 100 MB image to 1, 2, 4, 8 namespace
#      nodes on 1 Gbit/s links, pipelined tree vs binomial tree vs one
#      central server.
# Ends with one line:
#   RESULT full_over_min_boot=.. min_mem_mib=.. push8_over_p2p=.. central8_over_push8=..
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

mkdir -p "$here/results"
mgmt_log=$here/results/images_mgmt.log
dist_log=$here/results/images_dist.log

echo "== 1. images: minimal vs full Debian (same software)"
"$here/run_images_mgmt.sh" "$build" | tee "$mgmt_log"
echo
echo "== 2. distribution of a 100 MB image"
"$here/run_dist.sh" "$build" | tee "$dist_log"

# The value of KEY on the last RESULT line of a log.
result() { # LOG KEY
    grep '^RESULT ' "$1" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}
fb=$(result "$mgmt_log" full_over_min_boot)
mm=$(result "$mgmt_log" min_mem_mib)
pp=$(result "$dist_log" push8_over_p2p)
cp=$(result "$dist_log" central8_over_push8)
[ -n "$fb" ] && [ -n "$mm" ] && [ -n "$pp" ] && [ -n "$cp" ] || die "a part printed no RESULT"
echo
echo "RESULT full_over_min_boot=$fb min_mem_mib=$mm push8_over_p2p=$pp central8_over_push8=$cp"
