#!/usr/bin/env bash
# run_apps.sh BUILD_DIR - real applications over vhpc's libfabric provider
# ivc against Open MPI's own transports, all measured in this one run (the
# machine is shared and noisy, so numbers from different runs are not
# comparable): Debian's LAMMPS (lmp) on its melt (4000 atoms, 250 steps) and
# peptide (2004 atoms, 300 steps) examples, the loop time LAMMPS reports
# ("Loop time of ..."), and Debian's hpcc (N=3000, P=1 Q=2): MPIRandomAccess
# GUP/s, HPL Gflop/s, randomly-ordered ring latency (from its hpccoutf.txt).
#
# Host part, 2 ranks pinned to two CPUs, each application in each of:
#   ivc      pml cm + mtl ofi + provider ivc, both ranks attached to one
#            private ivcd region (started here), so they talk through IVC
#   ivc-tcp  the same with FI_IVC_ENABLE=0: the provider over TCP loopback
#   vader    pml ob1 + btl self,vader: Open MPI's native shared memory
#   tcp      pml ob1 + btl self,tcp over loopback
# in rounds of alternating order; the table shows the median over the rounds.
#
# VM part (BENCH_VMS=0 skips it): LAMMPS in 2 `vhpc run` VMs (TCG when there
# is no KVM) of 1 vCPU and 256 MiB, one rank in each, in the paper's
# configurations: IVC (the image's defaults: provider ivc, both VMs in one
# ivcd region), provider-TCP (the same with FI_IVC_ENABLE=0), No-IVC
# (unmodified Open MPI over TCP between the VMs: pml ob1, btl self,tcp), and
# Native (the host's vader figures of this run).  The image is a full Debian
# one (`vhpc image build --full --package lammps --package lammps-examples
# --with-mpi`, about 3 minutes with the .debs cached): a minimal image with
# `--add /usr/bin/lmp` does not boot in 256 MiB, since lmp's libraries make
# an 84 MB initramfs and the guest kernel unpacks at most about 64 MB of it
# ("Initramfs unpacking failed: write error": its rootfs may take half of the
# memory left while the initramfs is loaded).  A private image store and run
# directory are used and removed at exit (`vhpc gc --all` first).
#
# That IVC carried the ivc runs and nothing else: every provider run logs at
# info level; an ivc run must open an IVC channel ("IVC channel ... up") and
# report bytes sent by IVC, an ivc-tcp / provider-TCP run must open none.
# LAMMPS must report the steps asked for, hpcc its own checks passed.
#
# The raw output of every program is kept in bench/results/.  The last line
# is machine-readable; every ratio is one of time (a rate's inverse), so >1
# means the first configuration is slower:
#   RESULT melt_ivctcp_over_tcp=<host ivc-tcp/tcp> peptide_ivctcp_over_tcp=<..> \
#          hpcc_ivctcp_over_tcp=<worst of the three hpcc figures> \
#          gups_ivc_over_vader=<host ivc/vader> hpl_ivc_over_vader=<..> \
#          ringlat_ivc_over_vader=<..> \
#          vm_melt_ivc_over_noivc=<VMs IVC/No-IVC> vm_peptide_ivc_over_noivc=<..> \
#          vm_melt_ivctcp_over_noivc=<VMs provider-TCP/No-IVC> vm_peptide_ivctcp_over_noivc=<..>
# (the vm_ keys are nan with BENCH_VMS=0).  The goals: *_ivctcp_over_* <=
# 1.05, vm_*_ivc_over_noivc < 1, *_ivc_over_vader <= 1.053 (>= 0.95x vader).
#
# Environment:
#   BENCH_QUICK=1        LAMMPS 50 (melt) and 20 (peptide) steps, hpcc N=1000,
#                        1 round (smoke run)
#   BENCH_VMS=0          skip the VM part
#   BENCH_ROUNDS=N       rounds of the host part (default 3, quick 1)
#   BENCH_TIMEOUT=SEC    bound on each host program run (default 600, quick 120)
#   BENCH_VM_TIMEOUT=SEC bound on each `vhpc run` and the image build (default 900)
#   VHPC_KERNEL_CACHE    guest kernel cache (default /var/cache/vhpc-test/kernels)
#   VHPC_DEB_CACHE       the image build's .deb cache (default
#                        /var/cache/vhpc-test/debs when it exists)
set -euo pipefail

. "$(dirname "$0")/lib.sh" "$@"

with_vms=${BENCH_VMS:-1}
[ "$with_vms" = 0 ] && with_vms=
vm_timeout=${BENCH_VM_TIMEOUT:-900}
if [ -n "$quick" ]; then
    melt_steps=50 peptide_steps=20 hpcc_n=1000
else
    melt_steps=250 peptide_steps=300 hpcc_n=3000
fi

examples=/usr/share/lammps/examples

bench_provider_setup
command -v lmp >/dev/null || die "lmp not found (apt-get install lammps)"
command -v hpcc >/dev/null || die "hpcc not found (apt-get install hpcc)"
for f in "$examples/melt/in.melt" "$examples/peptide/in.peptide" "$examples/peptide/data.peptide"; do
    [ -f "$f" ] || die "$f not found (apt-get install lammps-examples)"
done

# Scratch directory, ivcd, the running program and the VM part's private
# store are always cleaned up, on failure too; the two ranks go on the
# first two CPUs we may use (lib.sh).
bench_scratch apps
bench_pin2

mkdir -p "$here/results"
stamp=$(date +%Y%m%d-%H%M%S)
raw=$here/results/apps-$stamp${quick:+-quick}.txt
bench_raw_header "# run_apps.sh $(date -Is) quick=${quick:-0} rounds=$rounds cpus=$pin vms=${with_vms:-0} melt_steps=$melt_steps peptide_steps=$peptide_steps hpcc_n=$hpcc_n" >"$raw"
{
    echo "# $(lmp -h 2>/dev/null | sed -n 's/^Large-scale Atomic\/Molecular Massively Parallel Simulator - \(.*\)/LAMMPS \1/p' | head -1)"
    echo "# $(dpkg-query -W -f='${Package} ${Version}, ' lammps hpcc openmpi-bin 2>/dev/null)"
} >>"$raw"

# The job's region, private to this run.
job=$((3000000 + $$))
bench_ivcd "$ivcd" "$job" 64M

# lmp_input APP STEPS DIR: a shell command (for the host's sh and the
# guest's) that writes DIR/in.APP: the Debian example with STEPS run steps
# and peptide's data file by its full path, so that lmp runs from any
# directory (only rank 0 reads the input).
lmp_input() {
    echo "sed -e 's/^run[[:space:]].*/run $2/'" \
        "-e 's|^read_data[[:space:]].*|read_data $examples/peptide/data.peptide|'" \
        "$examples/$1/in.$1 >$3/in.$1"
}

# An hpcc input: N=$hpcc_n, NB=80, one 1x2 process grid, else the Debian
# example's settings.
hpccinf() {
    sed -e "6s/^[0-9]*/$hpcc_n/" -e "8s/^[0-9]*/80/" -e "11s/^[0-9]*/1/" -e "12s/^[0-9]*/2/" \
        /usr/share/doc/hpcc/examples/_hpccinf.txt
}

# mpirun options of each host configuration.  The provider logs at info
# level (channel setup and, at exit, bytes by TCP and by IVC; nothing per
# message) so that the run can prove where its data went.
mpi_opts() {
    local ofi="--mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include ivc"
    ofi+=" -x FI_PROVIDER_PATH=$fi_dir -x FI_IVC_JOB=$job -x IVC_SOCKET=$tmp/ivcd.sock"
    ofi+=" -x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc"
    case $1 in
    ivc) echo "$ofi" ;;
    ivc-tcp) echo "$ofi -x FI_IVC_ENABLE=0" ;;
    vader) echo "--mca pml ob1 --mca btl self,vader" ;;
    tcp) echo "--mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include lo" ;;
    esac
}

# ivc_check CFG ERR: where the provider sent the data.  ivc: an IVC channel
# came up and bytes went by IVC; ivc-tcp: no channel, bytes by TCP only;
# other configurations do not load the provider.
ivc_check() {
    awk -v cfg="$1" '
        /IVC channel .* up/ { up++ }
        /^libfabric:.*:ivc:.*sent [0-9]+ bytes by TCP, [0-9]+ by IVC/ {
            s = $0; sub(/.*sent /, "", s); split(s, w, " ")
            peers++; tcp += w[1]; ivc += w[5]
        }
        END {
            if (cfg == "ivc") exit !(up > 0 && ivc > 0)
            if (cfg == "ivc-tcp") exit !(up == 0 && peers > 0 && ivc == 0 && tcp > 0)
            exit 0
        }' "$2"
}

# lmp_loop CFG OUT STEPS APP: "CFG APP SECONDS" from LAMMPS' "Loop time of
# T on 2 procs for N steps" line in OUT, N checked against STEPS.
lmp_loop() {
    awk -v cfg="$1" -v want="$3" -v app="$4" '
        /^Loop time of [0-9.eE+-]+ on [0-9]+ procs for [0-9]+ steps/ {
            if ($6 == 2 && $9 == want) { print cfg, app, $4; found = 1 }
        }
        END { exit !found }' "$2"
}

# hpcc_figures CFG FILE: "CFG gups|hpl|ringlat VALUE" from hpccoutf.txt,
# after hpcc's own checks (its Success flag, every residual check passed,
# MPIRandomAccess errors within its 1% tolerance).
hpcc_figures() {
    awk -v cfg="$1" -F= '
        /FAILED/ || /[1-9][0-9]* tests? completed and failed/ { bad = 1 }
        $1 == "Success" { ok = ($2 == 1) }
        $1 == "MPIRandomAccess_ErrorsFraction" { if ($2 + 0 > 0.01) bad = 1 }
        $1 == "MPIRandomAccess_GUPs" { g = $2 }
        $1 == "HPL_Tflops" { h = $2 * 1000 }
        $1 == "RandomlyOrderedRingLatency_usec" { l = $2 }
        END {
            if (!ok || bad || g == "" || h == "" || l == "") exit 1
            print cfg, "gups", g; print cfg, "hpl", h; print cfg, "ringlat", l
        }' "$2"
}

# run CFG APP ROUND: one host run of APP (melt, peptide or hpcc) in
# configuration CFG, under a timeout; fails loudly.  Figures go to $tmp/all
# as "host CFG METRIC VALUE".
run() {
    local cfg=$1 app=$2 base=$1.$2.$3 rc=0
    local out=$tmp/$base.out err=$tmp/$base.err dir=$tmp/$base cmd opts
    read -r -a opts <<<"$(mpi_opts "$cfg")"
    mkdir -p "$dir"
    if [ "$app" = hpcc ]; then
        hpccinf >"$dir/hpccinf.txt"
        cmd=(hpcc)
    else
        cmd=(lmp -log none -in "$tmp/in.$app")
    fi
    echo "$me: $base" >&2
    bench_wait "$base" "$out" "$err" "$prog_timeout" mpirun -np 2 --wdir "$dir" "${mpi_bind[@]}" \
        "${opts[@]}" -x OMP_NUM_THREADS=1 "${cmd[@]}" || rc=$?
    [ "$app" = hpcc ] && [ -f "$dir/hpccoutf.txt" ] && sed 's/^/# hpccoutf: /' "$dir/hpccoutf.txt" >>"$raw"
    if [ "$rc" -ne 0 ]; then
        echo "--- $base stderr:" >&2
        grep -v '^libfabric:.*<info>' "$err" | tail -n 30 >&2
        die "$base failed (exit status $rc); raw output in $raw"
    fi
    ivc_check "$cfg" "$err" ||
        die "$base: IVC not used by ivc, or used by $cfg (provider log in $raw)"
    if [ "$app" = hpcc ]; then
        hpcc_figures "$cfg" "$dir/hpccoutf.txt" >"$tmp/fig" ||
            die "$base: hpcc failed its checks or printed no figures; raw output in $raw"
    else
        local steps=$melt_steps
        [ "$app" = peptide ] && steps=$peptide_steps
        lmp_loop "$cfg" "$out" "$steps" "$app" >"$tmp/fig" ||
            die "$base: no loop time of $steps steps; raw output in $raw"
    fi
    sed 's/^/host /' "$tmp/fig" >>"$tmp/all"
    rm -rf "$dir"
    bench_ivcd_alive || die "ivcd died during $base"
}

# ---- host part -------------------------------------------------------------
for app in melt peptide; do
    steps=$melt_steps
    [ "$app" = peptide ] && steps=$peptide_steps
    sh -c "$(lmp_input "$app" "$steps" "$tmp")"
done
order=(ivc ivc-tcp vader tcp)
: >"$tmp/all"
t_host=$(date +%s)
for ((round = 1; round <= rounds; round++)); do
    mapfile -t list < <(bench_order "$round" "${order[@]}")
    for c in "${list[@]}"; do
        for app in melt peptide hpcc; do run "$c" "$app" "$round"; done
    done
done
t_host=$(($(date +%s) - t_host))

# The tables and the RESULT line, from $tmp/all ("where config metric value"
# lines; over the host rounds the median is taken).  PART: host, vm or
# result.
report() {
    awk -v part="$1" -v rounds="$rounds" -v pin="$pin" -v accel="${accel:-}" \
        -v secs="$t_host" -v vsecs="${t_vm:-0}" -v melt="$melt_steps" -v pep="$peptide_steps" \
        -v n="$hpcc_n" "$bench_awk"'
function get(where, cfg, m) { return med(where SUBSEP cfg SUBSEP m) }
function fmt(v, m) { return v == "" ? "-" : sprintf(m == "gups" ? "%.5f" : "%.3f", v) }
function num(v) { return v == "" ? "nan" : sprintf("%.3f", v) }
# The time ratio a/b: for rates (GUP/s, Gflop/s) the inverse, so that >1
# always means a is slower.
function slow(a, b, m) {
    if (a == "" || b == "" || a == 0 || b == 0) return ""
    return (m == "gups" || m == "hpl") ? b / a : a / b
}
function goal(label, v, cmp, lim,   ok) {
    ok = (v == "") ? "no figure" : (cmp == "<=" ? v <= lim : v < lim) ? "met" : "NOT met"
    printf "  %-58s %8s  (%s %s) %s\n", label, num(v), cmp, lim, ok
}
{ key = $1 SUBSEP $2 SUBSEP $3; val[key, ++cnt[key]] = $4 }
END {
    split("melt peptide gups hpl ringlat", ms, " ")
    lab["melt"] = sprintf("LAMMPS melt, %d steps: loop time (s)", melt)
    lab["peptide"] = sprintf("LAMMPS peptide, %d steps: loop time (s)", pep)
    lab["gups"] = "hpcc MPIRandomAccess (GUP/s)"
    lab["hpl"] = sprintf("hpcc HPL, N=%d (Gflop/s)", n)
    lab["ringlat"] = "hpcc random-ring latency (usec)"
    if (part == "host") {
        printf "Real applications, host: 2 ranks pinned to CPUs %s; median of %d round(s); took %d s\n", pin, rounds, secs
        printf "ivc = provider ivc over IVC, ivc-tcp = provider ivc with FI_IVC_ENABLE=0 (TCP), vader/tcp = Open MPI btl\n"
        printf "Ratios are of time (a rate'"'"'s inverse): >1 = the first is slower\n"
        printf "  %-40s %10s %10s %10s %10s %10s %12s\n", "", "ivc", "ivc-tcp", "vader", "tcp", "ivc/vader", "ivc-tcp/tcp"
        for (i = 1; i <= 5; i++) {
            m = ms[i]
            a = get("host", "ivc", m); b = get("host", "ivc-tcp", m)
            c = get("host", "vader", m); d = get("host", "tcp", m)
            printf "  %-40s %10s %10s %10s %10s %10s %12s\n", lab[m], fmt(a, m), fmt(b, m), fmt(c, m),
                fmt(d, m), fmt(slow(a, c, m)), fmt(slow(b, d, m))
        }
    } else if (part == "vm") {
        printf "\nReal applications, VMs (%s, 2 VMs x 1 vCPU, 256 MiB, one rank each); took %d s\n", accel, vsecs
        printf "IVC = provider ivc between the VMs, provider-TCP = it with FI_IVC_ENABLE=0, No-IVC = Open MPI btl tcp,\n"
        printf "Native = host vader above.  Loop time (s); ratios of time, >1 = the first is slower\n"
        printf "  %-40s %8s %12s %8s %8s %11s %14s %11s\n", "", "IVC", "provider-TCP", "No-IVC", "Native",
            "IVC/No-IVC", "prov-TCP/NoIVC", "IVC/Native"
        for (i = 1; i <= 2; i++) {
            m = ms[i]
            a = get("vm", "ivc", m); b = get("vm", "ivc-tcp", m); c = get("vm", "noivc", m)
            d = get("host", "vader", m)
            printf "  %-40s %8s %12s %8s %8s %11s %14s %11s\n", lab[m], fmt(a, m), fmt(b, m), fmt(c, m),
                fmt(d, m), fmt(slow(a, c, m)), fmt(slow(b, c, m)), fmt(slow(a, d, m))
        }
    } else if (part == "goals") {
        printf "\nGoals (this run)\n"
        for (i = 1; i <= 5; i++) {
            m = ms[i]
            goal("host: provider over TCP within 1.05x btl tcp, " m,
                slow(get("host", "ivc-tcp", m), get("host", "tcp", m), m), "<=", 1.05)
        }
        for (i = 3; i <= 5; i++) {
            m = ms[i]
            goal("host: hpcc >= 0.95x vader (time ratio), " m,
                slow(get("host", "ivc", m), get("host", "vader", m), m), "<=", 1.053)
        }
        for (i = 1; i <= 2; i++) {
            m = ms[i]
            goal("VMs: IVC faster than No-IVC, " m, slow(get("vm", "ivc", m), get("vm", "noivc", m), m), "<", 1)
            goal("VMs: provider-TCP within 1.05x No-IVC, " m,
                slow(get("vm", "ivc-tcp", m), get("vm", "noivc", m), m), "<=", 1.05)
        }
    } else {
        w = ""
        for (i = 3; i <= 5; i++) {
            r = slow(get("host", "ivc-tcp", ms[i]), get("host", "tcp", ms[i]), ms[i])
            if (r == "") { w = ""; break }
            if (w == "" || r > w) w = r
        }
        printf "RESULT melt_ivctcp_over_tcp=%s peptide_ivctcp_over_tcp=%s hpcc_ivctcp_over_tcp=%s",
            num(slow(get("host", "ivc-tcp", "melt"), get("host", "tcp", "melt"), "melt")),
            num(slow(get("host", "ivc-tcp", "peptide"), get("host", "tcp", "peptide"), "peptide")), num(w)
        printf " gups_ivc_over_vader=%s hpl_ivc_over_vader=%s ringlat_ivc_over_vader=%s",
            num(slow(get("host", "ivc", "gups"), get("host", "vader", "gups"), "gups")),
            num(slow(get("host", "ivc", "hpl"), get("host", "vader", "hpl"), "hpl")),
            num(slow(get("host", "ivc", "ringlat"), get("host", "vader", "ringlat"), "ringlat"))
        printf " vm_melt_ivc_over_noivc=%s vm_peptide_ivc_over_noivc=%s",
            num(slow(get("vm", "ivc", "melt"), get("vm", "noivc", "melt"), "melt")),
            num(slow(get("vm", "ivc", "peptide"), get("vm", "noivc", "peptide"), "peptide"))
        printf " vm_melt_ivctcp_over_noivc=%s vm_peptide_ivctcp_over_noivc=%s\n",
            num(slow(get("vm", "ivc-tcp", "melt"), get("vm", "noivc", "melt"), "melt")),
            num(slow(get("vm", "ivc-tcp", "peptide"), get("vm", "noivc", "peptide"), "peptide"))
    }
}' "$tmp/all"
}

report host | tee -a "$raw"

# ---- VM part ---------------------------------------------------------------
# vm_run APP STEPS: one `vhpc run` of 2 VMs whose vm0 runs lmp on APP in the
# three VM configurations, each preceded by a marker line on stdout and
# stderr.  Figures go to $tmp/all as "vm ivc|ivc-tcp|noivc APP SECONDS".
vm_run() {
    local app=$1 steps=$2 rc=0 v
    local out=$tmp/vm.$app.out err=$tmp/vm.$app.err
    local lmp_cmd="-x OMP_NUM_THREADS=1 lmp -log none -in /tmp/in.$app"
    local log="-x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc"
    local script
    script="cd /tmp; $(lmp_input "$app" "$steps" /tmp);"
    script+=" echo '### ivc'; echo '### ivc' >&2; mpirun -np 2 $log $lmp_cmd;"
    script+=" echo '### ivc-tcp'; echo '### ivc-tcp' >&2; mpirun -np 2 $log -x FI_IVC_ENABLE=0 $lmp_cmd;"
    script+=" echo '### noivc'; echo '### noivc' >&2; mpirun -np 2 $log --mca pml ob1 --mca btl self,tcp $lmp_cmd"
    echo "$me: VMs: $app" >&2
    VHPC_HOME=$vm_home VHPC_RUN_DIR=$vm_run bench_wait "vm.$app" "$out" "$err" "$vm_timeout" \
        "$vhpc" run --vms 2 --vcpus 1 --mem 256 --image bench-apps -- sh -ec "$script" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "--- vhpc run ($app) stderr:" >&2
        grep -v '^libfabric:.*<info>' "$err" | tail -n 40 >&2
        die "VMs: $app failed (exit status $rc); raw output in $raw"
    fi
    accel=$(sed -n 's/^vhpc run: .*MiB, \([a-z]*\), image.*/\1/p' "$err" | head -1)
    for v in ivc ivc-tcp noivc; do
        awk -v v="$v" '/^### / { on = ($2 == v); next } on' "$out" >"$tmp/vm.part.out"
        awk -v v="$v" '/^### / { on = ($2 == v); next } on' "$err" >"$tmp/vm.part.err"
        ivc_check "$v" "$tmp/vm.part.err" ||
            die "VMs: $app: IVC not used by the IVC variant, or used by $v; raw output in $raw"
        if [ "$v" = noivc ] && grep -q 'IVC channel .* up' "$tmp/vm.part.err"; then
            die "VMs: $app: the No-IVC variant opened an IVC channel; raw output in $raw"
        fi
        lmp_loop "$v" "$tmp/vm.part.out" "$steps" "$app" >"$tmp/fig" ||
            die "VMs: $app ($v): no loop time of $steps steps; raw output in $raw"
        sed 's/^/vm /' "$tmp/fig" >>"$tmp/all"
    done
}

accel=
if [ -n "$with_vms" ]; then
    t_vm=$(date +%s)
    bench_vm_store
    [ -d /var/cache/vhpc-test/debs ] && export VHPC_DEB_CACHE=${VHPC_DEB_CACHE:-/var/cache/vhpc-test/debs}
    echo "$me: VMs: building image bench-apps (full Debian + lammps)" >&2
    VHPC_HOME=$vm_home VHPC_RUN_DIR=$vm_run VHPC_PROGRESS=0 timeout -k 5 "$vm_timeout" "$vhpc" image build \
        --full --name bench-apps --package lammps --package lammps-examples --with-mpi \
        >"$tmp/image.log" 2>&1 || {
        cat "$tmp/image.log" >&2
        die "vhpc image build failed"
    }
    cat "$tmp/image.log" >>"$raw"
    vm_run melt "$melt_steps"
    vm_run peptide "$peptide_steps"
    t_vm=$(($(date +%s) - t_vm))
    report vm | tee -a "$raw"
fi

report goals | tee -a "$raw"
result=$(report result)
echo "$result" >>"$raw"
echo
echo "(raw output: ${raw#"$(dirname "$here")/"})"
echo "$result"

num='[0-9]+\.[0-9]{3}'
vnum=$num
[ -z "$with_vms" ] && vnum=nan
[[ $result =~ ^RESULT\ melt_ivctcp_over_tcp=$num\ peptide_ivctcp_over_tcp=$num\ hpcc_ivctcp_over_tcp=$num\ gups_ivc_over_vader=$num\ hpl_ivc_over_vader=$num\ ringlat_ivc_over_vader=$num\ vm_melt_ivc_over_noivc=$vnum\ vm_peptide_ivc_over_noivc=$vnum\ vm_melt_ivctcp_over_noivc=$vnum\ vm_peptide_ivctcp_over_noivc=$vnum$ ]] ||
    die "RESULT line has missing values"
