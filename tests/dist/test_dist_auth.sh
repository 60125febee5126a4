#!/usr/bin/env bash
# test_dist_auth.sh BUILD_DIR - who may do what on `vhpc node serve`
# (issue 9 finding 2): every request carries a munge credential (the
# test's own munged, lib.sh); a request without one, with one made for
# another request, or replayed is refused; an unprivileged user (created
# here) may push only names in its namespace (USER.NAME), not minimal:1000
# over root's minimal; an existing name:version is never rebound; a node
# forwards a user's push on its behalf; pulls and queries see only what the
# uid may read; --allow-user trusts a user like root; a second user can
# neither write into the first one's namespace nor read its images.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

user=vhpct$(printf %x $$) user2=vhpcu$(printf %x $$)
useradd -M -r -s /usr/sbin/nologin "$user" && useradd -M -r -s /usr/sbin/nologin "$user2" ||
    { echo "FAIL: useradd"; userdel "$user" 2>/dev/null; exit 1; }
trap 'dist_cleanup; userdel "$user" 2>/dev/null; userdel "$user2" 2>/dev/null' EXIT
chmod 711 "$tmp" # the user reaches munged's socket and its own store in there
dist_setup 2 || { echo "FAIL: setting up namespaces"; exit 1; }
start_node 1 && start_node 2 --allow-user "$user" || { echo "FAIL: starting the nodes"; show_logs; exit 1; }
n1=$(node_list 1) n2=$(node_list 2)
ustore=$tmp/ustore
mkdir -p "$ustore" && chown "$user" "$ustore"
asuser() { ip netns exec "$(ns_of src)" runuser -u "$user" -- env VHPC_HOME="$ustore" VHPC_PROGRESS=0 \
    VHPC_MUNGE_SOCKET="$VHPC_MUNGE_SOCKET" "$@"; }
digest_on() { "$tool" verify "$(store_of "$1")" "$2" 2>/dev/null; }

root_min=$("$tool" mkimage "$(store_of src)" minimal 2M 1)
check "root pushes minimal:1" push minimal --nodes "$n1,$n2"

# ---- a user may not write root's names ----
asuser "$tool" mkimage "$ustore" minimal 1M 3 >/dev/null || fail "the user's mkimage"
asuser "$vhpc" image tag minimal minimal:1000 >/dev/null || fail "the user's tag"
out=$(asuser "$vhpc" image push minimal:1000 --nodes "$n1" 2>&1)
rc=$?
echo "$out"
check "user $user pushing minimal:1000: refused (exit 1)" [ $rc -eq 1 ]
check "... saying which names it may push" grep -q "may push only names in its namespace, $user.NAME" <<<"$out"
check "... node 1's minimal is still root's" [ "$(digest_on 1 minimal)" = "$root_min" ]
check "... and it has no minimal:1000" sh -c "! '$tool' verify '$(store_of 1)' minimal:1000 >/dev/null 2>&1"

asuser "$vhpc" image tag minimal "$user.img" >/dev/null || fail "tag $user.img"
out=$(asuser "$vhpc" image push "$user.img" --nodes "$n1" 2>&1)
check "the user pushes $user.img (its namespace): $out" verify_on 1 "$user.img"
out=$(asuser "$tool" claim "$n1" 2M 1M 1M 2>&1)
check "the user's made-up push of 'claim' (not its namespace) is refused" grep -q "ERROR.*namespace" <<<"$out"
out=$(DIST_TOOL_UID=0 asuser env DIST_TOOL_UID=0 "$tool" claim "$n1" 2M 1M 1M 2>&1)
check "the user cannot claim to push on behalf of root" grep -q "ERROR.*may not act on behalf of uid 0" <<<"$out"

# ---- a node forwards a user's push on the user's behalf ----
asuser "$tool" mkimage "$ustore" "$user.chain" 1M 4 >/dev/null
out=$(asuser "$vhpc" image push "$user.chain" --nodes "$n1,$n2" 2>&1)
echo "$out"
check "a user's push down a chain of 2: both nodes have it" sh -c "'$tool' verify '$(store_of 1)' $user.chain >/dev/null && '$tool' verify '$(store_of 2)' $user.chain >/dev/null"

# ---- never rebind a name:version ----
mkdir -p "$tmp/src2"
other=$("$tool" mkimage "$tmp/src2" minimal 2M 2) # also minimal:1, another image
out=$(in_ns src env VHPC_HOME="$tmp/src2" "$vhpc" image push minimal:1 --nodes "$n1" 2>&1)
rc=$?
echo "$out"
check "root pushing another image as minimal:1: refused" [ $rc -eq 1 ]
check "... naming the digest minimal:1 has" grep -q "minimal:1 is already image ${root_min:0:12}" <<<"$out"
check "... minimal:1 is unchanged" [ "$(digest_on 1 minimal:1)" = "$root_min" ]
out=$(push minimal:1 --nodes "$n1" 2>&1)
check "the same image as minimal:1 again: a no-op" grep -q "(had it)" <<<"$out"

# ---- a trusted user (--allow-user) may write any name ----
out=$(asuser "$vhpc" image push minimal:1000 --nodes "$n2" 2>&1)
check "with --allow-user $user, node 2 takes minimal:1000 from it: $out" verify_on 2 minimal:1000

# ---- requests without a good credential ----
out=$(in_ns src env DIST_TOOL_CRED=none "$tool" query "$n1" minimal 2>&1)
check "a QUERY without a credential is refused: $out" grep -q "ERROR.*carries no credential" <<<"$out"
out=$(in_ns src env DIST_TOOL_CRED=other "$tool" query "$n1" minimal 2>&1)
check "a credential made for another request is refused: $out" grep -q "ERROR.*made for another request" <<<"$out"
out=$(in_ns src env DIST_TOOL_CRED=replay "$tool" query "$n1" minimal 2>&1)
both() { grep -q "first: 10 " <<<"$1" && grep -q "ERROR.*Replayed credential" <<<"$1"; }
check "a replayed credential is refused (the first use answered): $out" both "$out"
out=$(in_ns src env DIST_TOOL_CRED=none "$tool" claim "$n1" 2M 2>&1)
check "a PUSH without a credential is refused: $out" grep -q "ERROR.*carries no credential" <<<"$out"
out=$(ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/nomunge" VHPC_MUNGE_SOCKET="$tmp/no-such-socket" \
    "$vhpc" image pull minimal --from "$n1" 2>&1)
check "a puller without munged: a clear error: $out" grep -q "cannot make a munge credential" <<<"$out"

# ---- who may read what ----
"$tool" mkimage "$(store_of src)" root.secret 1M 9 >/dev/null
push root.secret --nodes "$n1" >/dev/null || fail "push root.secret"
out=$(asuser "$tool" query "$n1" root.secret 2>&1)
check "the user cannot see root.secret: $out" grep -q '"have": *false.*may read' <<<"$out"
out=$(asuser env VHPC_HOME="$ustore" "$vhpc" image pull root.secret --from "$n1" 2>&1)
check "... nor pull it: $out" grep -q "no image 'root.secret' that uid $(id -u "$user") may read" <<<"$out"
out=$(asuser "$tool" query "$n1" minimal 2>&1)
check "the user sees root's minimal (outside every namespace)" grep -q '"have": *true' <<<"$out"
mkdir -p "$tmp/ustore2" && chown "$user" "$tmp/ustore2"
out=$(asuser env VHPC_HOME="$tmp/ustore2" "$vhpc" image pull "$user.chain" --from "$n1" 2>&1)
check "the user pulls its own image: $out" grep -q "pulled $user.chain:1" <<<"$out"
out=$(ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/rootpull" "$vhpc" image pull root.secret --from "$n1" 2>&1)
check "root pulls root.secret: $out" grep -q "pulled root.secret:1" <<<"$out"

# ---- one user against another ----
ustore3=$tmp/ustore3
mkdir -p "$ustore3" && chown "$user2" "$ustore3"
asuser2() { ip netns exec "$(ns_of src)" runuser -u "$user2" -- env VHPC_HOME="$ustore3" VHPC_PROGRESS=0 \
    VHPC_MUNGE_SOCKET="$VHPC_MUNGE_SOCKET" "$@"; }
before=$(digest_on 1 "$user.img")
asuser2 "$tool" mkimage "$ustore3" "$user.img" 1M 7 >/dev/null || fail "the second user's mkimage"
out=$(asuser2 "$vhpc" image push "$user.img" --nodes "$n1" 2>&1)
rc=$?
refused_ns() { [ "$1" -eq 1 ] && grep -q "may push only names in its namespace, $user2.NAME" <<<"$2"; }
check "$user2 pushing $user.img (the other user's namespace): refused: $out" refused_ns "$rc" "$out"
check "... node 1's $user.img is still $user's" test -n "$before" -a "$(digest_on 1 "$user.img")" = "$before"
out=$(asuser2 "$tool" query "$n1" "$user.chain" 2>&1)
check "$user2 cannot see $user's images: $out" grep -q '"have": *false.*may read' <<<"$out"
out=$(asuser2 "$vhpc" image pull "$user.chain" --from "$n1" 2>&1)
check "... nor pull them: $out" grep -q "no image '$user.chain' that uid $(id -u "$user2") may read" <<<"$out"

[ "$fails" -eq 0 ] || show_logs
finish
