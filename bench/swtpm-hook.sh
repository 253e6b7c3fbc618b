#!/bin/bash
# bench/swtpm-hook.sh - the swtpm-based counterpart of vtpm-hook in bench/vmbench.py's
# `runc run` comparison: an OCI hook that gives the container a TPM with swtpm, written
# plainly, as an administrator would (bash, the OCI state on stdin).
#
#   swtpm-hook.sh STATE_ROOT create    as createRuntime (or prestart) hook
#   swtpm-hook.sh STATE_ROOT delete    as poststop hook
#
# create: starts `swtpm chardev --vtpm-proxy --tpm2 --tpmstate dir=STATE_ROOT/<id>
# --flags startup-clear` in the background (its output and pid in that directory), reads
# the device it made from its output ("New TPM device: /dev/tpmN (major/minor = M/m)"),
# waits for /dev/tpmrmN, and makes /dev/tpm0 and /dev/tpmrm0 in the container's /dev
# (mknod through /proc/PID/root: before pivot_root the rootfs sits at its host path in the
# container's mount namespace). It does not touch cgroups: the container's config.json must
# allow them (linux.resources.devices: 10:224 for the first TPM, the tpm major for the
# others and for every /dev/tpmrmN).
# delete: SIGTERM to that swtpm, then waits until its /dev/tpmrmN is gone.
# Every wait is bounded (WAIT_S, 30 s); a failure is one line on stderr and exit 1.
set -euo pipefail
root=${1:?usage: swtpm-hook.sh STATE_ROOT create|delete}
what=${2:?usage: swtpm-hook.sh STATE_ROOT create|delete}
WAIT_S=${WAIT_S:-30}

die() { echo "swtpm-hook: $*" >&2; exit 1; }

# The OCI state is one JSON object; its id, pid and bundle are plain values.
read -r -d '' state || true
[[ $state =~ \"id\":\ *\"([^\"]+)\" ]] || die "no id in the OCI state"
id=${BASH_REMATCH[1]}
[[ $id != */* && $id != .* ]] || die "bad container id: $id"
dir=$root/$id

# sleep without starting a process: read with a timeout on a pipe nobody writes to
exec {nap}<> <(:)
nap() { read -r -t "$1" -u "$nap" _ || true; }
deadline() { end=$(( ${EPOCHREALTIME/./} + WAIT_S * 1000000 )); }
late() { (( ${EPOCHREALTIME/./} >= end )); }

case $what in
create)
    [[ $state =~ \"pid\":\ *([0-9]+) ]] || die "no pid in the OCI state"
    pid=${BASH_REMATCH[1]}
    [[ $state =~ \"bundle\":\ *\"([^\"]+)\" ]] || die "no bundle in the OCI state"
    bundle=${BASH_REMATCH[1]}
    read -r -d '' config < "$bundle/config.json" || true
    [[ $config =~ \"root\":\ *\{[^}]*\"path\":\ *\"([^\"]+)\" ]] || die "no root.path in $bundle/config.json"
    rootfs=${BASH_REMATCH[1]}
    [[ $rootfs = /* ]] || rootfs=$bundle/$rootfs

    mkdir -p "$dir"
    swtpm chardev --vtpm-proxy --tpm2 --tpmstate "dir=$dir" --flags startup-clear \
        < /dev/null > "$dir/swtpm.out" 2>&1 {nap}<&- &
    sw=$!
    echo "$sw" > "$dir/swtpm.pid"    # (swtpm 0.7.1's --pid file= wrote none here)
    deadline
    num=""
    while :; do
        mapfile -t out < "$dir/swtpm.out"
        for line in "${out[@]}"; do
            [[ $line =~ New\ TPM\ device:\ /dev/tpm([0-9]+)\ \(major/minor\ =\ ([0-9]+)/([0-9]+)\) ]] &&
                { num=${BASH_REMATCH[1]}; break; }
        done
        [ -n "$num" ] && [ -c "/dev/tpmrm$num" ] && break
        read -r st < "/proc/$sw/stat" || st="gone"
        if [[ $st == gone || $st == *") Z "* ]] || late; then
            kill "$sw" 2> /dev/null || true
            die "swtpm did not come up within ${WAIT_S}s: ${out[*]:-no output}"
        fi
        nap 0.002
    done
    echo "$num" > "$dir/swtpm.dev"
    # the container's nodes, with the numbers of the host's /dev/tpmN and /dev/tpmrmN
    read -r tpm < "/sys/class/tpm/tpm$num/dev" && read -r tpmrm < "/sys/class/tpmrm/tpmrm$num/dev" ||
        { kill "$sw"; die "no device numbers for tpm$num in /sys/class"; }
    mknod -m 600 "/proc/$pid/root$rootfs/dev/tpm0" c "${tpm%:*}" "${tpm#*:}" &&
        mknod -m 600 "/proc/$pid/root$rootfs/dev/tpmrm0" c "${tpmrm%:*}" "${tpmrm#*:}" ||
        { kill "$sw"; die "mknod of /dev/tpm0, /dev/tpmrm0 in the container failed"; }
    ;;
delete)
    [ -d "$dir" ] || exit 0            # create never ran (or failed early)
    read -r sw < "$dir/swtpm.pid" 2> /dev/null || die "no pid file $dir/swtpm.pid"
    read -r num < "$dir/swtpm.dev" 2> /dev/null || num=""
    kill -TERM "$sw" 2> /dev/null || true
    # swtpm may be a zombie of the runtime for a while: its device going is what counts
    deadline
    while [ -n "$num" ] && [ -e "/dev/tpmrm$num" ]; do
        ! late || die "/dev/tpmrm$num still there ${WAIT_S}s after SIGTERM to swtpm $sw"
        nap 0.002
    done
    ;;
*) die "unknown action: $what (create or delete)" ;;
esac
