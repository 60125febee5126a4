# free_port.sh - sourced: free_port prints a TCP port nobody listens on,
# below the kernel's range of ephemeral ports (which any outgoing
# connection may take between this check and a bind).  Shared by the
# benchmarks (bench/lib.sh) and the tests that start fi_pingpong.
free_port() {
    local p lo
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
    while :; do
        p=$((10000 + RANDOM % (lo > 12000 ? lo - 10000 : 2000)))
        ss -ltn | grep -q ":$p " || { echo "$p"; return; }
    done
}
