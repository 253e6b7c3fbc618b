#!/bin/bash
# tests/e2e/containment-tests.sh - what an emulator and a keeper hold (issue 18), in the test VM.
#
#   containment-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM, in the hardening suite's boot (tests/e2e/run.sh hardening).
# Judged from outside, on a live container's processes:
#  1 inventory-runc, inventory-crun   the emulator and the keeper run as the emulator user
#         (never root), with no capability, no_new_privs and seccomp; the emulator's root is
#         its state dir (0700, the emulator user's), the keeper's the empty dir; every fd each
#         holds is on its list (no cgroup file but the keeper's read-only cgroup.events, no
#         directory but the emulator's own state dir, nothing writable but its own state, its
#         log pipe (the keeper relays it: the emulator holds no log file), its socket and its
#         device)
#  2 host-nodes   the host's /dev/tpmN and /dev/tpmrmN of a vTPM are root:root 0600 after
#         setup, and stay so when udev applies Debian's tpm-udev rules (tss, 0660) together
#         with the rule the install ships (udev/70-vtpm-hook.rules); without that rule the
#         same udev run gives them to tss (the precondition), and a tss process cannot open
#         them with it
#  3 emulator-user-root   --emulator-user root is refused with one error line, nothing left
# Prints PASS:/FAIL: lines and "N passed, M failed". CONT_ONLY=regex selects scenarios.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
E2E_WORK=/run/vtpm-cont
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
ONLY=${CONT_ONLY:-.}
preflight runc crun jq stat readlink setpriv udevadm python3
echo "# $(runc --version | head -n1), $(crun --version | head -n1), hook $HOOK"
rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES"
EMU_UID=$(id -u vtpm-hook 2>/dev/null) || fatal "no user vtpm-hook (scripts/install-deps.sh creates it)"
EMU_GID=$(id -g vtpm-hook)


# confined PID KIND ROOT: runs as the emulator user, no capability, no_new_privs, seccomp, root ROOT
confined() {
    local pid=$1 kind=$2 root=$3 uids gids
    uids=$(grep '^Uid:' "/proc/$pid/status" | tr -s '\t ' ' ')
    gids=$(grep '^Gid:' "/proc/$pid/status" | tr -s '\t ' ' ')
    [ "$uids" = "Uid: $EMU_UID $EMU_UID $EMU_UID $EMU_UID" ] || { why "$kind $pid: $uids, not the emulator user $EMU_UID"; return 1; }
    [ "$gids" = "Gid: $EMU_GID $EMU_GID $EMU_GID $EMU_GID" ] || { why "$kind $pid: $gids"; return 1; }
    [ "$(status_field "$pid" CapEff)$(status_field "$pid" CapPrm)$(status_field "$pid" CapBnd)" = \
      000000000000000000000000000000000000000000000000 ] || { why "$kind $pid has capabilities"; return 1; }
    [ "$(status_field "$pid" NoNewPrivs)" = 1 ] || { why "$kind $pid: no_new_privs not set"; return 1; }
    [ "$(status_field "$pid" Seccomp)" = 2 ] || { why "$kind $pid: no seccomp filter"; return 1; }
    [ "$(readlink "/proc/$pid/root")" = "$root" ] || { why "$kind $pid: root $(readlink "/proc/$pid/root"), not $root"; return 1; }
}

# fd_inventory PID KIND STATEDIR: every fd on its kind's list; prints the inventory as a note
fd_inventory() {
    local pid=$1 kind=$2 dir=$3 fd t flags acc bad="" list=""
    for fd in /proc/"$pid"/fd/*; do
        t=$(readlink "$fd") || continue
        flags=$(awk '/^flags:/{print $2}' "/proc/$pid/fdinfo/${fd##*/}")
        acc=$(( 8#$flags & 3 ))           # 0 read-only, 1 write-only, 2 read-write
        list+="${fd##*/}=$t(${acc}) "
        case "$kind:$t" in
            *:/dev/null|*:anon_inode:\[pidfd\]|*:anon_inode:\[signalfd\]|*:anon_inode:\[vtpms\]) ;;
            keeper:"$LOG") [ "$acc" = 1 ] || bad+="$t open for reading; " ;;
            emulator:pipe:\[*\]) [ "$acc" = 1 ] || bad+="$t (its log pipe) readable; " ;;
            keeper:pipe:\[*\]) [ "$acc" = 0 ] || bad+="$t (a log pipe) writable; " ;;
            emulator:socket:\[*\]) ;;
            emulator:"$dir") [ "$acc" = 0 ] || bad+="state dir writable fd; " ;;
            emulator:"$dir"/*) [ ! -d "$fd" ] || bad+="a directory below the state dir: $t; " ;;
            keeper:/sys/fs/cgroup/*/cgroup.events) [ "$acc" = 0 ] || bad+="$t writable; " ;;
            *) bad+="$t; " ;;
        esac
    done
    note "$kind $pid fds: $list"
    [ -z "$bad" ] || { why "$kind $pid holds what it must not: ${bad%; }"; return 1; }
}

# holds_device PID: whether PID holds a vTPM proxy server fd
holds_device() { local fd; for fd in /proc/"$1"/fd/*; do [ "$(readlink "$fd")" = 'anon_inode:[vtpms]' ] && return 0; done; return 1; }

t_inventory() {
    local rt=$1 id=cont-inv-$1 emu keeper dir
    make_bundle "$rt" "$id" "" 'sleep 600' || return 1
    CLEANUP+=("$rt $id")
    timeout 120 "$rt" create --bundle "$BUNDLE" "$id" > "$BUNDLE/out" 2>&1 ||
        { why "$rt create failed: $(tail -c 300 "$BUNDLE/out")"; return 1; }
    emu=$(jq -r '.vtpms[0].emulatorPid // empty' "$RUN_ROOT/$id.json" 2>/dev/null)
    [ -n "$emu" ] && [ -d "/proc/$emu" ] || { why "no live emulator in the run record"; return 1; }
    keeper=$(live_keepers)
    [ "$(wc -w <<< "$keeper")" = 1 ] || { why "want one live keeper, found '${keeper//$'\n'/ }'"; return 1; }
    # the keeper is the process holding a copy of this container's device: not just its name
    holds_device "$keeper" || { why "keeper $keeper holds no proxy device fd"; return 1; }
    dir=$STATE_ROOT/$id
    [ "$(stat -c '%u:%g %a' "$dir")" = "$EMU_UID:$EMU_GID 700" ] ||
        { why "state dir $dir is $(stat -c '%U:%G %a' "$dir"), not the emulator user's 0700"; return 1; }
    confined "$emu" emulator "$dir" || return 1
    confined "$keeper" keeper "$RUN_ROOT/empty" || return 1
    fd_inventory "$emu" emulator "$dir" || return 1
    fd_inventory "$keeper" keeper "" || return 1
    timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
    expect_clean "$id" "$rt delete -f"
}

# node_mode PATH -> "uid:gid mode"
node_mode() { stat -c '%u:%g %a' "$1"; }
# udev_apply N: udev's add event for tpmN and tpmrmN, as udevd would run it
udev_apply() { timeout 60 udevadm test --action=add "/sys/class/tpm/tpm$1" > /dev/null 2>&1; timeout 60 udevadm test --action=add "/sys/class/tpmrm/tpmrm$1" > /dev/null 2>&1; }
# tss_opens PATH: whether a process of user and group tss opens it
tss_opens() { setpriv --reuid=tss --regid=tss --clear-groups python3 -c 'import os,sys; os.open(sys.argv[1], os.O_RDWR)' "$1" 2> /dev/null; }

t_host_nodes() {
    local id=cont-nodes n tss_uid tss_gid
    tss_uid=$(id -u tss 2>/dev/null) || { why "no user tss (Debian's tpm-udev, with tpm2-tools)"; return 1; }
    tss_gid=$(id -g tss)
    [ -e /usr/lib/udev/rules.d/60-tpm-udev.rules ] || { why "Debian's 60-tpm-udev.rules missing"; return 1; }
    make_bundle crun "$id" "" 'sleep 600' || return 1
    CLEANUP+=("crun $id")
    timeout 120 crun create --bundle "$BUNDLE" "$id" > "$BUNDLE/out" 2>&1 ||
        { why "crun create failed: $(tail -c 300 "$BUNDLE/out")"; return 1; }
    n=$(jq -r '.vtpms[0].hostTpmNum // empty' "$RUN_ROOT/$id.json" 2>/dev/null)
    [ -n "$n" ] || n=$(tpm_chips); n=${n#tpm}
    [ -c "/dev/tpm$n" ] && [ -c "/dev/tpmrm$n" ] || { why "no host nodes /dev/tpm$n, /dev/tpmrm$n"; return 1; }
    [ "$(node_mode "/dev/tpm$n")" = "0:0 600" ] && [ "$(node_mode "/dev/tpmrm$n")" = "0:0 600" ] ||
        { why "after setup: /dev/tpm$n $(node_mode "/dev/tpm$n"), /dev/tpmrm$n $(node_mode "/dev/tpmrm$n")"; return 1; }
    # precondition: Debian's rules alone give the nodes to tss, and tss then opens the TPM
    rm -f /etc/udev/rules.d/70-vtpm-hook.rules
    udev_apply "$n"
    [ "$(node_mode "/dev/tpmrm$n")" = "$tss_uid:$tss_gid 660" ] ||
        { why "precondition: Debian's rules alone left /dev/tpmrm$n $(node_mode "/dev/tpmrm$n"), not tss 0660"; return 1; }
    tss_opens "/dev/tpmrm$n" || { why "precondition: tss cannot open /dev/tpmrm$n even with tss 0660"; return 1; }
    # with the shipped rule (a later file: its assignments win)
    mkdir -p /etc/udev/rules.d && cp "$ROOT/udev/70-vtpm-hook.rules" /etc/udev/rules.d/ ||
        { why "cannot install the rule"; return 1; }
    udev_apply "$n"
    [ "$(node_mode "/dev/tpm$n")" = "0:0 600" ] && [ "$(node_mode "/dev/tpmrm$n")" = "0:0 600" ] ||
        { why "with the rule: /dev/tpm$n $(node_mode "/dev/tpm$n"), /dev/tpmrm$n $(node_mode "/dev/tpmrm$n")"; return 1; }
    ! tss_opens "/dev/tpm$n" && ! tss_opens "/dev/tpmrm$n" || { why "tss opens the vTPM's node with the rule"; return 1; }
    rm -f /etc/udev/rules.d/70-vtpm-hook.rules
    timeout 60 crun delete -f "$id" > /dev/null 2>&1
    expect_clean "$id" "crun delete -f"
}

t_emulator_user_root() {
    local id=cont-root err lines
    make_bundle runc "$id" "" 'true' || return 1
    # the administrator's option: a hook command line naming root
    jq '.hooks.prestart[0].args |= (.[0:1] + ["--emulator-user", "root"] + .[1:])' "$BUNDLE/config.json" > "$BUNDLE/c.new" &&
        mv "$BUNDLE/c.new" "$BUNDLE/config.json" || { why "jq failed"; return 1; }
    container_run runc "$id" || return 1
    [ "$RC" != 0 ] || { why "runc run succeeded with --emulator-user root"; return 1; }
    err=$(grep -c 'vtpm-hook' "$BUNDLE/err")
    lines=$(grep -c -- '--emulator-user root is root: emulators never run as root' "$LOG")
    [ "$lines" = 1 ] || { why "the hook log has $lines lines of the refusal (err: $(tail -c 300 "$BUNDLE/err"))"; return 1; }
    [ "$err" -ge 1 ] || { why "runc's stderr does not name the hook's failure"; return 1; }
    [ ! -e "$STATE_ROOT/$id" ] || { why "state dir created although refused"; return 1; }
    expect_clean "$id" "the refused setup"
}

run_if() { [[ $1 =~ $ONLY ]] && scenario "$@"; }
run_if inventory-runc t_inventory runc
run_if inventory-crun t_inventory crun
run_if host-nodes t_host_nodes
run_if emulator-user-root t_emulator_user_root
finish
