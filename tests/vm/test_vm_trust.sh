#!/usr/bin/env bash
# test_vm_trust.sh BUILD_DIR - issue 9, finding 1: nobody outside a job gets
# into its VMs, and its VMs get into nothing of the host.  Runs itself in a
# private network namespace.  Two VMs as root, in the job's own network
# namespace; a second local user (made here, removed at exit) and root's
# own host processes try the agents' TCP port and vhpc-rsh, from the host
# and from inside the job's namespace; the VMs try a service listening on
# every address there.  VM-to-VM traffic and vhpc-rsh between the VMs
# still work, and the namespace (bridge, taps, nftables table) goes with
# the cluster.  test_vm_user.sh does the same between two normal users.
set -uo pipefail
if [ -z "${VHPC_TEST_NETNS:-}" ]; then
    exec env VHPC_TEST_NETNS=1 unshare --net -- bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
. "$(dirname "$0")/lib.sh" "$1" trust
user=vhpct$$
cleanup_trust() {
    [ -n "${serve:-}" ] && kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
    userdel "$user" >/dev/null 2>&1
    cleanup
}
trap cleanup_trust EXIT
useradd -M -r -s /bin/sh "$user" || { echo "FAIL useradd"; exit 1; }

"$vhpc" image build >/dev/null || { echo "FAIL image build"; exit 1; }

"$vhpc" vm start victim --vms 2 >/dev/null || { echo "FAIL vm start"; exit 1; }
cl=$VHPC_RUN_DIR/clusters/victim
br=$(cat "$cl/bridge") keeper=$(cat "$cl/netns.pid")
injob() { nsenter -t "$keeper" -n "$@"; } # root, inside the job's network namespace
ip0=$(injob ip -4 -o addr show dev "$br" | awk '{print $4}' | cut -d/ -f1 | sed 's/\.1$/.10/')
host_ip=${ip0%.10}.1
check "the job's bridge is in its own network namespace, not the host's" \
    sh -c "[ -n '$ip0' ] && ! ip link show '$br' >/dev/null 2>&1 && [ \"\$(readlink /proc/$keeper/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]"

check "job key is 0600 in a 0700 directory" \
    test "$(stat -c %a "$cl/job.key")" = 600 -a "$(stat -c %a "$cl")" = 700
# Finding 6: QEMU holds no capability, cannot gain one, runs under seccomp.
qpid=$(cat "$cl/vm0/qemu.pid")
st=$(cat "/proc/$qpid/status")
caps=$(awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ {print $2}' <<<"$st" | sort -u)
[ "$caps" = 0000000000000000 ] && grep -q '^NoNewPrivs:[[:space:]]*1' <<<"$st" && grep -q '^Seccomp:[[:space:]]*2' <<<"$st" &&
    pass "QEMU runs with no capabilities, no_new_privs and seccomp" ||
    fail "QEMU privileges: $(grep -E '^(Cap|NoNewPrivs|Seccomp)' <<<"$st" | tr '\n' ' ')"
# ... and its command line, which every user sees, names neither the job
# nor its files (they are in the 0600 qemu.cfg).
job=$(cat "$cl/job")
cmdl=$(tr '\0' ' ' <"/proc/$qpid/cmdline")
! grep -q -e "$job" -e victim -e "$VHPC_RUN_DIR" <<<"$cmdl" && [ "$(stat -c %a "$cl/vm0/qemu.cfg")" = 600 ] &&
    pass "QEMU's command line tells nothing of the job: $cmdl" || fail "QEMU's command line: $cmdl"
check "nftables table inet vhpc_$br exists in the job's namespace" injob nft list table inet "vhpc_$br" >/dev/null
check "another user cannot enter the job's namespace" sh -c "! runuser -u '$user' -- nsenter -t '$keeper' -n true 2>/dev/null"

# The reproduction of finding 1: another user runs vhpc-rsh against a VM.
out=$(runuser -u "$user" -- "$build/src/agent/vhpc-rsh" "$ip0" id 2>&1); st=$?
[ $st -ne 0 ] && ! grep -q 'uid=0' <<<"$out" && pass "another user's vhpc-rsh gets nothing: $out" ||
    fail "another user's vhpc-rsh: status $st '$out'"
# ... even with a key file of its own making, and the port itself is closed
# to every host process (root's too): no TCP connection from the host, nor
# from inside the job's namespace (nftables output).
runuser -u "$user" -- sh -c "head -c 32 /dev/urandom > /tmp/$user.key"
out=$(runuser -u "$user" -- env VHPC_KEY_FILE=/tmp/$user.key "$build/src/agent/vhpc-rsh" "$ip0" id 2>&1); st=$?
rm -f "/tmp/$user.key"
[ $st -ne 0 ] && ! grep -q 'uid=0' <<<"$out" && pass "a made-up key gets nothing: $out" ||
    fail "made-up key: status $st '$out'"
if timeout 5 bash -c "exec 3<>/dev/tcp/$ip0/7420" 2>/dev/null; then
    fail "root on the host connects to the agent's TCP port"
else
    pass "no host process connects to a VM's agent port (the VMs are not on the host's network)"
fi
if injob timeout 5 bash -c "exec 3<>/dev/tcp/$ip0/7420" 2>/dev/null; then
    fail "root inside the job's namespace connects to the agent's TCP port"
else
    pass "no process inside the job's namespace connects to a VM's agent port (nftables output)"
fi
if runuser -u "$user" -- timeout 5 bash -c "exec 3<>/dev/tcp/$ip0/7420" 2>/dev/null; then
    fail "another user connects to the agent's TCP port"
else
    pass "another user cannot connect to the agent's TCP port"
fi

# The VMs reach no service: a TCP service listening on every address of the
# job's namespace, the bridge's included (an agent, which answers any
# connection with its CHALLENGE).
nsenter -t "$keeper" -n "$build/src/agent/vhpc-agent" --no-port --tcp-port 7999 --tcp-any --key-file "$tmp/host.key" >"$tmp/serve.log" 2>&1 &
serve=$!
up=
for _ in $(seq 1 50); do injob timeout 1 bash -c "</dev/tcp/$host_ip/7999" 2>/dev/null && up=1 && break; sleep 0.1; done
[ -n "$up" ] || fail "the service did not listen: $(cat "$tmp/serve.log")"
out=$("$vhpc" vm exec victim --vm 0 -- sh -c "nc -w 3 $host_ip 7999 </dev/null && echo CONNECTED; echo done" 2>&1)
grep -q done <<<"$out" && ! grep -q CONNECTED <<<"$out" && pass "a VM cannot reach a service on the bridge address (nftables input)" ||
    fail "VM to service: '$out'"
kill "$serve"; wait "$serve" 2>/dev/null
check "the test's service is gone" sh -c "! kill -0 $serve 2>/dev/null"
serve=

# What the job needs still works: the VMs talk to each other, vhpc-rsh between them.
out=$("$vhpc" vm exec victim --vm 0 -- vhpc-rsh vm1 'hostname; id -u'); st=$?
[ "$out" = $'vm1\n0' ] && [ $st -eq 0 ] && pass "vhpc-rsh between the job's VMs works" || fail "rsh in the job: '$out' $st"

"$vhpc" vm stop victim >/dev/null
for _ in $(seq 1 50); do kill -0 "$keeper" 2>/dev/null || break; sleep 0.1; done
check "vm stop ends the job's namespace (its keeper)" sh -c "! kill -0 $keeper 2>/dev/null"

# Finding 12: two clusters started at the same moment never share a
# network: each has a namespace of its own.
"$vhpc" vm start twin1 >/dev/null 2>"$tmp/twin1.err" & t1=$!
"$vhpc" vm start twin2 >/dev/null 2>"$tmp/twin2.err" & t2=$!
wait $t1; s1=$?; wait $t2; s2=$?
n1=$(readlink "/proc/$(cat "$VHPC_RUN_DIR/clusters/twin1/netns.pid" 2>/dev/null)/ns/net" 2>/dev/null)
n2=$(readlink "/proc/$(cat "$VHPC_RUN_DIR/clusters/twin2/netns.pid" 2>/dev/null)/ns/net" 2>/dev/null)
keepers="$(cat "$VHPC_RUN_DIR"/clusters/twin*/netns.pid 2>/dev/null | tr '\n' ' ')"
[ $s1 -eq 0 ] && [ $s2 -eq 0 ] && [ -n "$n1" ] && [ -n "$n2" ] && [ "$n1" != "$n2" ] &&
    pass "clusters started together: network namespaces $n1 and $n2" ||
    fail "clusters started together: $s1 $s2 '$n1' '$n2' $(cat "$tmp"/twin*.err)"
"$vhpc" vm stop twin1 >/dev/null; "$vhpc" vm stop twin2 >/dev/null

# Finding 14: a chatty guest does not fill /run: console.log is capped and
# rotated once (the newest output in console.log).
VHPC_CONSOLE_MAX=8192 "$vhpc" vm start chatty >/dev/null || fail "vm start chatty"
keepers="$keepers $(cat "$VHPC_RUN_DIR/clusters/chatty/netns.pid")"
"$vhpc" vm exec chatty -- sh -c 'i=0; while [ $i -lt 2000 ]; do echo "line $i of a chatty guest"; i=$((i+1)); done > /dev/ttyS0; echo END-MARK > /dev/ttyS0'
c=$VHPC_RUN_DIR/clusters/chatty/vm0/console.log
for _ in $(seq 1 50); do grep -q END-MARK "$c" 2>/dev/null && break; sleep 0.2; done
size=$(stat -c %s "$c" 2>/dev/null || echo 0); size1=$(stat -c %s "$c.1" 2>/dev/null || echo 0)
[ "$size" -le 8192 ] && [ "$size1" -gt 0 ] && [ "$size1" -le 8192 ] && grep -q END-MARK "$c" &&
    pass "console.log capped at 8192 bytes ($size + $size1 in console.log.1, newest kept)" ||
    fail "console cap: console.log $size, .1 $size1 bytes, END-MARK $(grep -c END-MARK "$c")"
"$vhpc" vm stop chatty >/dev/null
# The logger is a fork of that `vhpc vm start` (named vhpc-console).
logger() { pgrep -x vhpc-console | while read -r p; do grep -q "vm.start.chatty" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; done; }
for _ in $(seq 1 25); do [ -z "$(logger)" ] && break; sleep 0.2; done
[ -z "$(logger)" ] && pass "console logger gone with its VM" || fail "console logger left running: $(logger)"
sleep 0.5
check "no keeper of the test's clusters is left" sh -c "! kill -0 $keepers 2>/dev/null"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
