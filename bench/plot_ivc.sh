#!/usr/bin/env bash
# plot_ivc.sh RAW OUT.png - draw the two tables of a bench-ivc run (the raw
# file run_ivc.sh keeps in bench/results/) as curves: one-way latency and
# streaming bandwidth against message size, log-log, for IVC, vader,
# vader2, TCP and (bandwidth) memcpy.  Needs gnuplot (apt-get install
# gnuplot-nox); the benchmark itself does not.
set -euo pipefail
raw=${1:?usage: plot_ivc.sh RAW OUT.png}
out=${2:?usage: plot_ivc.sh RAW OUT.png}
command -v gnuplot >/dev/null || {
    echo "plot_ivc.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2
    exit 1
}
[ -r "$raw" ] || {
    echo "plot_ivc.sh: cannot read $raw" >&2
    exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The table after each title: size in bytes, then the columns as printed
# ("-" for none).
table() { # TITLE-PREFIX OUT
    awk -v want="$1" '
        function bytes(s) { return s ~ /M$/ ? s * 1048576 : s ~ /K$/ ? s * 1024 : s + 0 }
        index($0, want) == 1 { on = 1; next }
        on && /^ +size/ { next }
        on && NF == 0 { on = 0 }
        on { $1 = bytes($1); gsub(/ -( |$)/, " NaN "); print }
    ' "$raw" >"$2"
    [ -s "$2" ] || {
        echo "plot_ivc.sh: no \"$1\" table in $raw" >&2
        exit 1
    }
}
table "One-way latency" "$tmp/lat"
table "Streaming bandwidth" "$tmp/bw"
title=$(grep -m1 '^IVC benchmark:' "$raw" | sed 's/"//g')

gnuplot <<EOF
set terminal pngcairo size 1200,480 font ",10"
set output "$out"
set multiplot layout 1,2 title "$title" font ",9" noenhanced
set logscale xy 2
set logscale y 10
set format x "%.0b%B"
set xlabel "message size (bytes)"
set grid
set key top left
set datafile missing "NaN"
set title "One-way latency (us, lower is better)"
plot "$tmp/lat" u 1:2 w lp lw 2 t "IVC", "" u 1:3 w lp t "vader", "" u 1:4 w lp t "vader2", \
     "" u 1:6 w lp t "TCP"
set key bottom right
set title "Streaming bandwidth (MB/s, higher is better)"
set format y "%.0f"
plot "$tmp/bw" u 1:2 w lp lw 2 t "IVC", "" u 1:3 w lp t "vader", "" u 1:4 w lp t "vader2", \
     "" u 1:6 w lp t "TCP", "" u 1:8 w l dt 2 t "memcpy (one core)"
unset multiplot
EOF
echo "plot_ivc.sh: wrote $out"
