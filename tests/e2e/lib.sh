# shellcheck shell=bash
# tests/e2e/lib.sh - helpers for the end-to-end container tests.
# Sourced by container-tests.sh, which runs as root INSIDE the test VM
# (tests/vm/run-vm.sh): a kernel with tpm_vtpm_proxy, runc, crun, tpm2-tools.
# Every wait is bounded with `timeout`; no helper depends on the network.

# ---------------------------------------------------------------- settings
E2E_WORK=${E2E_WORK:-/run/vtpm-e2e}       # everything the tests create lives here
STATE_ROOT=$E2E_WORK/state                # --state-root S
RUN_ROOT=$E2E_WORK/run                    # --run-root R
LOG_DIR=$E2E_WORK/logs                    # one hook log per container
BUNDLES=$E2E_WORK/bundles
RUN_TIMEOUT=${RUN_TIMEOUT:-150}           # s, one container lifetime
HOOK_TIMEOUT=${HOOK_TIMEOUT:-30}          # s, one hook run by hand
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-5}       # s, for leftovers to go after teardown

# counters, pass/fail, fatal, finish, at_exit, now_ms, median, stand-ins
# shellcheck source=../lib/harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"

WHY=""              # reason of the current scenario's failure
CLEANUP=()          # "runtime id" pairs the current scenario created
DIAG=()             # files to show when the current scenario fails
NOTES=()            # informational lines of the current scenario

# (helpers avoid spawning processes where they can: under TCG each costs ~50-300 ms)
why()    { WHY="$*"; return 1; }            # use as: cond || { why "..."; return 1; }
note()   { NOTES+=("$*"); }
indent() { sed 's/^/    | /'; }

# ---------------------------------------------------------------- environment
# preflight TOOL...: this guest can run a test script (root, /dev/vtpmx, the tools, no TPM chip
# yet). Makes HOOK absolute and sets TPM_MAJOR.
preflight() {
    local t
    case "$HOOK" in /*) ;; *) HOOK=$(cd "$(dirname "$HOOK")" 2>/dev/null && pwd)/$(basename "$HOOK") ;; esac
    [ -x "$HOOK" ] || fatal "vtpm-hook binary not found or not executable: $HOOK"
    [ "$(id -u)" = 0 ] || fatal "must run as root (inside the test VM)"
    [ -c /dev/vtpmx ] || fatal "/dev/vtpmx missing: is tpm_vtpm_proxy loaded? (run the tests through tests/e2e/run.sh SUITE)"
    for t in "$@"; do command -v "$t" > /dev/null || fatal "'$t' not installed"; done
    TPM_MAJOR=$(tpm_major)
    [ -n "$TPM_MAJOR" ] || fatal "no 'tpm' line in /proc/devices"
    [ -z "$(tpm_chips)" ] || fatal "a TPM chip exists before any test: $(tpm_chips)"
}

tpm_major() { local n name; while read -r n name; do [ "$name" = tpm ] && { echo "$n"; return; }; done < /proc/devices; }

# pids of live processes named NAME (zombies are not counted); a /proc scan in
# bash, like `pgrep -x NAME` but without starting a process
live_named() {
    local f comm stat rest
    for f in /proc/[0-9]*/comm; do
        read -r comm 2>/dev/null < "$f" || continue
        [ "$comm" = "$1" ] || continue
        read -r stat < "${f%comm}stat" 2>/dev/null || continue
        rest=${stat##*) }                  # "S ppid ..." after "pid (comm) "
        [ "${rest%% *}" = Z ] || echo "${f//[^0-9]/}"
    done
}
# alive PID: a live process (a zombie is not)
alive() { local st; [ -n "$1" ] && { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1; st=${st##*) }; [ "${st%% *}" != Z ]; }
# status_field PID NAME: the value of NAME: in /proc/PID/status (all of it: Uid has four)
status_field() { local k v; while read -r k v; do [ "$k" = "$2:" ] && { echo "$v"; return; }; done < "/proc/$1/status"; } 2>/dev/null
# wait_grep PATTERN FILE SECONDS: bounded wait until FILE has a line matching PATTERN
wait_grep() {
    local t0; t0=$(now_ms)
    until grep -q -- "$1" "$2" 2>/dev/null; do
        [ $(( $(now_ms) - t0 )) -lt $(( $3 * 1000 )) ] || return 1
        sleep 0.2
    done
}
# tree_fp DIR: names, types, modes, owners, sizes, mtimes, inodes, link targets, contents
tree_fp() {
    [ -e "$1" ] || [ -L "$1" ] || { echo MISSING; return; }
    if [ -d "$1" ] && [ ! -L "$1" ]; then
        ( cd "$1" || exit
          find . -printf '%p|%y|%m|%U:%G|%s|%T@|%i|%l\n' | sort
          find . -type f -exec md5sum {} + | sort -k2 )
    else
        find "$1" -maxdepth 0 -printf '%p|%y|%m|%U:%G|%s|%T@|%i|%l\n'
        [ -f "$1" ] && md5sum < "$1"
    fi
}
gen_secret() { head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n'; }   # 16 hex characters
# hexof TEXT: its bytes in hex
hexof() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
live_emulators() { live_named vtpm-emu; }
# keepers: one per container, holding its device numbers until its cgroup is empty
live_keepers() { live_named vtpm-keep; }

# proxy_holders: pids of the processes that hold a vTPM proxy server fd (anon_inode:[vtpms]),
# whatever they call themselves: emulators and keepers (one find, no process per /proc entry)
proxy_holders() {
    find /proc/[0-9]*/fd -maxdepth 1 -lname 'anon_inode:\[vtpms\]' 2>/dev/null |
        sed 's,^/proc/\([0-9]*\)/.*,\1,' | sort -u
}
# keepers_of EMU: the keeper of the emulator EMU, found by what it holds, not by its name: a
# process other than EMU holding a proxy server fd and a pidfd of EMU (fdinfo "Pid: EMU")
keepers_of() {
    local emu=$1 p f k v
    for p in $(proxy_holders); do
        [ "$p" = "$emu" ] && continue
        while read -r f; do
            while read -r k v; do
                [ "$k" = Pid: ] && [ "$v" = "$emu" ] && { echo "$p"; break 2; }
            done < "/proc/$p/fdinfo/${f##*/}" 2>/dev/null
        done < <(find "/proc/$p/fd" -maxdepth 1 -lname 'anon_inode:\[pidfd\]' 2>/dev/null)
    done
}
# expect_keeper EMU WHAT: exactly one keeper of EMU, and it is what live_keepers sees (the
# name-based absence checks look for it by name); sets KEEPER
# shellcheck disable=SC2034  # (KEEPER is for the caller)
expect_keeper() {
    local emu=$1 ctx=$2 k
    [ -n "$emu" ] || { why "no emulator to find the keeper of ($ctx)"; return 1; }
    k=$(keepers_of "$emu")
    [ -n "$k" ] && [ "$(wc -w <<< "$k")" = 1 ] ||
        { why "wanted one keeper of emulator $emu (a process holding a [vtpms] fd and a pidfd of it) $ctx, found '${k//$'\n'/ }' (proxy fd holders: $(proxy_holders | tr '\n' ' '))"; return 1; }
    grep -qx "$k" <<< "$(live_keepers)" ||
        { why "the keeper $k of emulator $emu is not named vtpm-keep ($(cat "/proc/$k/comm" 2>/dev/null)): the name-based checks miss it"; return 1; }
    KEEPER=$k
}

tpm_chips() {
    local c out=""
    for c in /sys/class/tpm/*; do [ -e "$c" ] && out+="${c##*/} "; done
    printf '%s' "${out% }"
}

# run_records: what is in the run root, one name a line, except the keepers' empty chroot
# directory `empty` and the measured launches' logs directory `measurements` (each reported
# with its contents if it is not empty: measurements/<id> of a container still there), and the
# template process's socket and lock (template.sock, template.lock: no container's)
run_records() {
    local f n
    for f in "$RUN_ROOT"/* "$RUN_ROOT"/.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        n=${f##*/}
        case $n in template.sock|template.lock) continue ;; esac
        if { [ "$n" = empty ] || [ "$n" = measurements ]; } && [ -d "$f" ] && [ ! -L "$f" ]; then
            [ -z "$(ls -A "$f")" ] || ls -A "$f" | sed "s,^,$n/,"
        else
            echo "${f##*/}"
        fi
    done
}

# leftovers "$id": prints what is left behind (empty when clean)
leftovers() {
    local id=$1 out="" e c
    e=$(live_emulators | tr '\n' ' ')
    [ -n "$e" ] && out+="vtpm-emu process(es) alive: ${e% }; "
    e=$(live_keepers | tr '\n' ' ')
    [ -n "$e" ] && out+="vtpm-keep process(es) alive: ${e% }; "
    # whatever its name: a process still holding a proxy server fd keeps a device number taken
    e=$(proxy_holders | tr '\n' ' ')
    [ -n "$e" ] && out+="process(es) holding a vTPM proxy fd: ${e% }; "
    c=$(tpm_chips)
    [ -n "$c" ] && out+="/sys/class/tpm has: $c; "
    [ -n "$id" ] && [ -e "$RUN_ROOT/$id.json" ] && out+="run record $RUN_ROOT/$id.json exists; "
    # runc's and crun's cgroup (v2, cgroupfs driver) of a stopped container, left when an
    # emulator charged to it still sat there while the runtime removed it
    [ -n "$id" ] && [ -d "/sys/fs/cgroup/$id" ] && [ -z "$(runtime_status runc "$id")$(runtime_status crun "$id")" ] &&
        out+="cgroup /sys/fs/cgroup/$id is left; "
    printf '%s' "${out%; }"
}

# podman_hooksd DIR LOG: a fresh DIR with rootfs/ and hooks.d/ holding the shipped hooks.d file,
# with the hook's binary, this suite's roots and LOG as its log file (podman --hooks-dir DIR/hooks.d)
podman_hooksd() {
    rm -rf "$1"; mkdir -p "$1/hooks.d"
    make_rootfs "$1/rootfs"
    sed "s#@VTPM_HOOK_PATH@#$HOOK#" "$(dirname "${BASH_SOURCE[0]}")/../../examples/hooks.d/vtpm-hook.json.in" |
        jq --arg S "$STATE_ROOT" --arg R "$RUN_ROOT" --arg L "$2" \
           '.hook.args = (.hook.args[0:-1] + ["--state-root", $S, "--run-root", $R, "--log-file", $L] + .hook.args[-1:])' \
        > "$1/hooks.d/vtpm-hook.json" || { why "cannot make the hooks.d file"; return 1; }
    [ "$(jq -r '.hook.args[-1]' "$1/hooks.d/vtpm-hook.json")" = hook ] ||
        { why "hooks.d file: last arg is not 'hook': $(jq -c .hook.args "$1/hooks.d/vtpm-hook.json")"; return 1; }
}

# wait_file FILE SECONDS: bounded wait until FILE exists and is not empty
wait_file() {
    local t0; t0=$(now_ms)
    while [ ! -s "$1" ]; do
        [ $(( $(now_ms) - t0 )) -lt $(( $2 * 1000 )) ] || return 1
        sleep 0.2
    done
}

# expect_clean "$id" "what just happened": bounded wait until nothing is left
expect_clean() {
    local id=$1 ctx=$2 t0 left waited first
    left=$(leftovers "$id")
    [ -z "$left" ] && return 0
    first=$left; t0=$(now_ms)
    while [ -n "$left" ] && [ $(( $(now_ms) - t0 )) -lt $((SETTLE_TIMEOUT * 1000)) ]; do
        sleep 0.1; left=$(leftovers "$id")
    done
    waited=$(( $(now_ms) - t0 ))
    if [ -n "$left" ]; then
        why "after $ctx (waited ${SETTLE_TIMEOUT}s): $left"; return 1
    fi
    note "NOTE: not clean at once after $ctx; clean ${waited} ms later (first seen: $first)"
    return 0
}

# force everything back to a clean slate (used between and after scenarios)
force_clean() {
    local p t0
    [ -z "$(live_emulators)$(live_keepers)$(tpm_chips)$(proxy_holders)" ] || {
        for p in $(live_emulators); do kill -TERM "$p" 2>/dev/null; done
        t0=$(now_ms)
        while [ -n "$(live_emulators)" ] && [ $(( $(now_ms) - t0 )) -lt 5000 ]; do sleep 0.1; done
        for p in $(live_emulators) $(live_keepers) $(proxy_holders); do kill -KILL "$p" 2>/dev/null; done
        while [ -n "$(tpm_chips)" ] && [ $(( $(now_ms) - t0 )) -lt 10000 ]; do sleep 0.1; done
    }
    rm -f "$RUN_ROOT"/*.json
}

# nv_script INDEX SECRET: a container script that reads NV index INDEX ("NV-READ <secret>") or,
# when it does not exist yet, defines it and writes SECRET ("NV-WRITTEN")
nv_script() {
    printf '%s' "if tpm2_nvread -T device:/dev/tpmrm0 $1 -C o -s ${#2} -o /tmp/r 2>/dev/null; then
  echo \"NV-READ \$(cat /tmp/r)\"
else
  tpm2_nvdefine -T device:/dev/tpmrm0 $1 -C o -s ${#2} -a \"ownerread|ownerwrite|authread|authwrite\" > /dev/null || exit 6
  printf '%s' '$2' > /tmp/d
  tpm2_nvwrite -T device:/dev/tpmrm0 $1 -C o -i /tmp/d || exit 7
  echo NV-WRITTEN
fi"
}

# ---------------------------------------------------------------- engine daemons
# wait_daemon PID NAME LOG CLIENT...: until CLIENT answers (120 s at most)
wait_daemon() {
    local pid=$1 name=$2 log=$3 t0; shift 3
    t0=$(now_ms)
    until timeout 10 "$@" > /dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { why "$name exited: $(tail -n 3 "$log")"; return 1; }
        [ $(( $(now_ms) - t0 )) -lt 120000 ] || { why "$name did not answer within 120 s"; return 1; }
        sleep 0.5
    done
    note "$name answered after $(( $(now_ms) - t0 )) ms"
}
stop_daemon() {   # stop_daemon PID NAME: SIGTERM, 60 s, SIGKILL
    local pid=$1 t0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"; t0=$(now_ms)
    while kill -0 "$pid" 2>/dev/null && [ $(( $(now_ms) - t0 )) -lt 60000 ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    # its shims and (dockerd's) containerd go with it (engine_processes)
    t0=$(now_ms)
    while [ -n "$(engine_processes)" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do sleep 0.2; done
    [ -z "$(engine_processes)" ] || { why "after stopping $2: still alive: $(engine_processes)"; return 1; }
}
engine_processes() {
    local n
    for n in dockerd containerd containerd-shim; do
        [ -z "$(live_named "$n")" ] || printf '%s(%s) ' "$n" "$(live_named "$n" | tr '\n' ' ')"
    done
}

# ---------------------------------------------------------------- rootfs + bundle
# make_rootfs DIR: a rootfs without any files of its own; /usr and /etc come
# from read-only bind mounts of the host's (declared in config.json).
make_rootfs() {
    local r=$1
    mkdir -p "$r"/{usr,etc,dev,proc,sys,tmp,root}
    ln -sfn usr/bin "$r/bin"
    ln -sfn usr/lib "$r/lib"
    ln -sfn usr/lib64 "$r/lib64"
    ln -sfn usr/sbin "$r/sbin"
}

# make_bundle RUNTIME NAME VTPMS_JSON SCRIPT [EXTRA_JQ]
#   creates $BUNDLES/NAME (config.json from `RUNTIME spec`, edited with jq).
#   VTPMS_JSON: "" for no linux.vtpms, else a JSON array.
#   SCRIPT: /bin/sh script the container runs.
#   EXTRA_JQ: a jq filter applied last (e.g. $USERNS_JQ).
# The config is the runtime's STOCK one plus the two hooks and the /usr, /etc,
# /tmp mounts: no linux.resources.devices rule (the hook grants the device
# cgroup access itself). DEVICE_RULE=1 adds the old manual rule for the TPMs.
# POLICY=FILE adds `--policy FILE` to both hooks' options (the administrator's policy:
# statePathRoots, annotationFields; write it with write_policy).
# Sets BUNDLE and LOG (the hook's log file for this bundle).
make_bundle() {
    local rt=$1 name=$2 vtpms=$3 script=$4 extra=${5:-.} major
    BUNDLE=$BUNDLES/$name
    LOG=$LOG_DIR/$name.log
    rm -rf "$BUNDLE"; mkdir -p "$BUNDLE"
    make_rootfs "$BUNDLE/rootfs"
    # the runtime's own default config, made once per runtime and copied
    if [ ! -s "$E2E_WORK/spec-$rt/config.json" ]; then
        mkdir -p "$E2E_WORK/spec-$rt"
        ( cd "$E2E_WORK/spec-$rt" && timeout 60 "$rt" spec ) > "$E2E_WORK/spec-$rt.err" 2>&1 ||
            { why "$rt spec failed: $(head -c 300 "$E2E_WORK/spec-$rt.err")"; return 1; }
    fi
    cp "$E2E_WORK/spec-$rt/config.json" "$BUNDLE/config.json"
    major=$TPM_MAJOR
    jq --arg hook "$HOOK" --arg S "$STATE_ROOT" --arg R "$RUN_ROOT" --arg L "$LOG" \
       --arg script "$script" --arg name "$name" --argjson major "$major" --arg P "${POLICY:-}" \
       --argjson vtpms "${vtpms:-null}" --argjson devrule "${DEVICE_RULE:-0}" '
        .process.terminal = false
      | .process.args = ["/bin/sh", "-c", $script]
      | .process.cwd = "/"
      | .root = {"path": "rootfs", "readonly": true}
      | .hostname = $name
      | .mounts += [
          {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]},
          {"destination": "/etc", "type": "bind", "source": "/etc", "options": ["rbind", "ro", "nosuid", "nodev"]},
          {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}]
      | (if $P == "" then [] else ["--policy", $P] end) as $pol
      | .hooks = {
          "prestart": [{"path": $hook, "timeout": 60, "args": (["vtpm-hook"] + $pol +
              ["--state-root", $S, "--run-root", $R, "--log-file", $L, "--log-level", "debug", "setup"])}],
          "poststop": [{"path": $hook, "timeout": 60, "args": (["vtpm-hook"] + $pol +
              ["--state-root", $S, "--run-root", $R, "--log-file", $L, "teardown"])}]}
      | if $devrule == 1 then .linux.resources.devices = ((.linux.resources.devices // []) + [
          {"allow": true, "type": "c", "major": 10, "minor": 224, "access": "rwm"},
          {"allow": true, "type": "c", "major": $major, "access": "rwm"}]) else . end
      | if $vtpms == null then . else .linux.vtpms = $vtpms end
      | '"$extra"'
    ' "$BUNDLE/config.json" > "$BUNDLE/config.json.new" ||
        { why "jq edit of config.json failed"; return 1; }
    mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"
    DIAG+=("$LOG")
}

# write_policy FILE JSON: a policy file as the hook accepts it (regular, root's, mode 0644)
write_policy() {
    printf '%s\n' "$2" > "$1" && chown 0:0 "$1" && chmod 0644 "$1" ||
        { why "cannot write the policy file $1"; return 1; }
}

# ---------------------------------------------------------------- running containers
# container_run RT ID: foreground `RT run`, stdout/stderr to $BUNDLE/out, err.
# Sets RC. Fails on time-out (the runtime hanging is a real finding).
container_run() {
    local rt=$1 id=$2 t0
    CLEANUP+=("$rt $id")
    DIAG+=("$BUNDLE/out" "$BUNDLE/err")
    t0=$(now_ms)
    # (in a subshell whose stderr is dropped: no "Killed" message from bash)
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run --bundle "$BUNDLE" "$id" \
        < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null
    RC=$?
    note "FIGURE: ${rt}_run_ms=$(( $(now_ms) - t0 )) ($id)"
    if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        why "'$rt run' did not finish within ${RUN_TIMEOUT}s (live vtpm-emu: $(live_emulators | tr '\n' ' '))"
        return 1
    fi
    return 0
}

# runtime_status RT ID -> status string ("" if the container is unknown)
runtime_status() {
    local j
    j=$(timeout 20 "$1" state "$2" 2>/dev/null) || return 0
    [[ $j =~ \"status\":\ *\"([a-z]+)\" ]] && echo "${BASH_REMATCH[1]}"
}

# wait_status RT ID STATUS SECONDS
wait_status() {
    local rt=$1 id=$2 want=$3 secs=$4 t0 s
    t0=$(now_ms)
    while :; do
        s=$(runtime_status "$rt" "$id")
        [ "$s" = "$want" ] && return 0
        if [ $(( $(now_ms) - t0 )) -ge $((secs * 1000)) ]; then
            why "$rt container $id: status '${s:-unknown}', wanted '$want' within ${secs}s"
            return 1
        fi
        sleep 0.2
    done
}

# cleanup_containers: force-delete what the scenario created, then make the VM clean
cleanup_containers() {
    local e rt id
    for e in "${CLEANUP[@]}"; do
        rt=${e%% *}; id=${e#* }
        if [ -n "$(runtime_status "$rt" "$id")" ]; then
            timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
        fi
    done
    force_clean
}

# ---------------------------------------------------------------- output checks
# check_tpm2_output FILE: tpm2_getrandom --hex 8 + tpm2_pcrread sha256:0,7 results
check_tpm2_output() {
    local f=$1
    grep -q '^DEV /dev/tpm0 c' "$f" || { why "no character device /dev/tpm0 in the container"; return 1; }
    grep -q '^DEV /dev/tpmrm0 c' "$f" || { why "no character device /dev/tpmrm0 in the container"; return 1; }
    grep -Eq '^RANDOM [0-9a-fA-F]{16}$' "$f" ||
        { why "tpm2_getrandom output is not 16 hex digits: $(grep -m1 '^RANDOM' "$f" || echo none)"; return 1; }
    grep -Eq '^ *sha256:' "$f" || { why "tpm2_pcrread printed no 'sha256:' bank line"; return 1; }
    grep -Eq '^ *0 *: *0x[0-9A-Fa-f]{64}$' "$f" || { why "tpm2_pcrread printed no PCR 0 value"; return 1; }
    grep -Eq '^ *7 *: *0x[0-9A-Fa-f]{64}$' "$f" || { why "tpm2_pcrread printed no PCR 7 value"; return 1; }
    grep -q '^TPM-OK' "$f" || { why "the container script did not reach its end"; return 1; }
}

# jq filter for make_bundle: a user namespace, container root = host uid/gid 100000
# (works with the stock spec's mounts, /sys and the cgroup mount included, in runc and crun)
# shellcheck disable=SC2034
USERNS_JQ='.linux.namespaces += [{"type": "user"}]
  | .linux.uidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]
  | .linux.gidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]'

# host device number "M:m" of /sys/class/tpm/tpmN (tpm) or /sys/class/tpmrm/tpmrmN (tpmrm)
sysfs_dev() { local v; read -r v < "/sys/class/$1/$1$2/dev" 2>/dev/null && echo "$v"; }

# find_desc PID COMM: pid of the first descendant of PID (or PID itself) named COMM
find_desc() {
    local todo=("$1") p comm c kids
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}; todo=("${todo[@]:1}")
        { read -r comm < "/proc/$p/comm"; } 2>/dev/null || continue
        [ "$comm" = "$2" ] && { echo "$p"; return 0; }
        for c in /proc/"$p"/task/*/children; do
            kids=()
            { read -r -a kids < "$c"; } 2>/dev/null     # (no newline at the end: status 1)
            todo+=("${kids[@]}")
        done
    done
    return 1
}

# kernel messages about TPMs (for failure diagnostics)
# (without the normal "self test"/"starting up the TPM manually" lines of every new chip)
tpm_dmesg() {
    dmesg 2>/dev/null | grep -iE 'tpm|vtpm' |
        grep -vE 'occurred attempting the self test|starting up the TPM manually' | tail -n "${1:-20}"
}

# the in-container script for TPM 2 checks (used by container-tests.sh)
# shellcheck disable=SC2016,SC2034
TPM2_SCRIPT='for d in /dev/tpm0 /dev/tpmrm0; do
  if [ -c $d ]; then echo "DEV $d c $(stat -c %t:%T $d)"; else echo "NODEV $d"; fi; done
r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) || { echo "getrandom failed rc=$?"; exit 3; }
echo "RANDOM $r"
tpm2_pcrread -T device:/dev/tpmrm0 sha256:0,7 || { echo "pcrread failed rc=$?"; exit 4; }
echo TPM-OK'

# a python3 script for TPM 1.2 checks: raw TPM_GetCapability(TPM_CAP_VERSION_VAL) on
# /dev/tpm0, prints TPM12-OK (exit 7 on a bad answer)
# shellcheck disable=SC2034
TPM12_PY='import os, struct, sys
fd = os.open("/dev/tpm0", os.O_RDWR)
# TPM_GetCapability: tag TPM_TAG_RQU_COMMAND, size 18, ordinal 0x65,
# capArea TPM_CAP_VERSION_VAL (0x1A), subCapSize 0
os.write(fd, struct.pack(">HIIII", 0x00C1, 18, 0x65, 0x1A, 0))
r = os.read(fd, 4096)
print("RESP", r.hex())
tag, size, rc = struct.unpack(">HII", r[:10])
print("TAG 0x%04X RC %d" % (tag, rc))
if tag != 0x00C4 or rc != 0 or size != len(r):
    sys.exit(7)
n = struct.unpack(">I", r[10:14])[0]
info = r[14:14 + n]        # TPM_CAP_VERSION_INFO: tag(2) version(4) ...
print("VERSION %d.%d" % (info[2], info[3]))
print("TPM12-OK")'

# ---------------------------------------------------------------- scenario runner
# scenario NAME FUNCTION [ARGS...]: runs one scenario, prints PASS/FAIL, cleans up
scenario() {
    local name=$1 t0 f n; shift
    WHY=""; CLEANUP=(); DIAG=(); NOTES=()
    t0=$(now_ms)
    force_clean
    if "$@" && [ -z "$WHY" ]; then
        pass "$name"
    else
        fail "$name" "${WHY:-failed without a reason}"
        for f in "${DIAG[@]}"; do
            [ -s "$f" ] || continue
            n=$(wc -l < "$f")
            echo "    --- $f ($n lines, last 25) ---"
            tail -n 25 "$f" | indent
        done
    fi
    for n in "${NOTES[@]}"; do echo "    $n"; done
    echo "    time: $(( $(now_ms) - t0 )) ms"
    cleanup_containers
}

# ---------------------------------------------------------------- measured launch (issue 20)
# the verifier, independent of the hook's code (python3 standard library)
VERIFY_PY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/verify_measurements.py
MEASURE_PCR=21

# in_container DIR OUT SCRIPT CMD...: SCRIPT (sh) in a running container through the exec
# command CMD... (`runc exec ID`, `docker exec ID`, ...), its output in DIR/OUT; its status
in_container() {
    local x=$1 out=$2 script=$3; shift 3
    ( timeout -k 5 120 "$@" /bin/sh -c "$script" < /dev/null > "$x/$out" 2>&1 ) 2> /dev/null
}

# measured_quote DIR [--credential] CMD...: what a verifier does with a running container's
# TPM, ECC keys only (no RSA key generation under TCG). DIR is the container's /x; CMD... runs a
# command inside (in_container). Container: an EK (tpm2_createek -G ecc) and an ECDSA AK under
# it, then tpm2_quote over sha256:MEASURE_PCR with a fresh nonce; host: tpm2_checkquote (its
# output, the quoted PCR values, in DIR/q.check), refused with another nonce. --credential: in
# between, the host's tpm2_makecredential with that EK and the AK's name and the container's
# tpm2_activatecredential (binds the AK to the EK; 2 s more under TCG).
measured_quote() {
    local x=$1 nonce cred=""; shift
    [ "$1" = --credential ] && { cred=1; shift; }
    nonce=$(head -c 16 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    local quote="tpm2_quote -T \$T -c /tmp/mq-ak.ctx -l sha256:$MEASURE_PCR -q $nonce -m /x/q.msg -s /x/q.sig -o /x/q.pcrs -g sha256 > /dev/null"
    if [ -z "$cred" ]; then
        # one exec; the resource manager flushes the transient objects after each tool
        in_container "$x" mq-a.out "T=device:/dev/tpmrm0; set -e
          tpm2_createek -T \$T -c /tmp/mq-ek.ctx -G ecc -u /x/ek.pem -f pem > /dev/null
          tpm2_createak -T \$T -C /tmp/mq-ek.ctx -c /tmp/mq-ak.ctx -G ecc -g sha256 -s ecdsa -u /x/ak.pem -f pem -n /x/ak.name > /dev/null
          $quote
          echo STEP-A-OK" "$@" || { why "ECC EK/AK + quote in the container failed: $(tail -n 2 "$x/mq-a.out" | tr '\n' ' ')"; return 1; }
    else
        in_container "$x" mq-a.out 'T=device:/dev/tpm0; set -e
          tpm2_createek -T $T -c /tmp/mq-ek.ctx -G ecc -u /x/ek.pem -f pem > /dev/null
          tpm2_createak -T $T -C /tmp/mq-ek.ctx -c /tmp/mq-ak.ctx -G ecc -g sha256 -s ecdsa -u /x/ak.pem -f pem -n /x/ak.name > /dev/null
          tpm2_flushcontext -T $T -t
          echo STEP-A-OK' "$@" || { why "ECC EK/AK in the container failed: $(tail -n 2 "$x/mq-a.out" | tr '\n' ' ')"; return 1; }
        head -c 32 /dev/urandom > "$x/secret.bin"
        tpm2_makecredential -T none -G ecc -u "$x/ek.pem" -s "$x/secret.bin" -n "$(od -An -v -tx1 "$x/ak.name" | tr -d ' \n')" \
            -o "$x/cred.out" > "$x/mq-host.out" 2>&1 ||
            { why "host tpm2_makecredential (ECC EK) failed: $(tail -n 2 "$x/mq-host.out" | tr '\n' ' ')"; return 1; }
        # /dev/tpm0 (no resource manager): the policy session outlives one tool's connection
        in_container "$x" mq-b.out "T=device:/dev/tpm0; set -e
          tpm2_startauthsession -T \$T --policy-session -S /tmp/mq-s.ctx
          tpm2_policysecret -T \$T -S /tmp/mq-s.ctx -c e
          tpm2_activatecredential -T \$T -c /tmp/mq-ak.ctx -C /tmp/mq-ek.ctx -i /x/cred.out -o /x/secret.out -P session:/tmp/mq-s.ctx
          tpm2_flushcontext -T \$T /tmp/mq-s.ctx 2> /dev/null || true
          $quote
          tpm2_flushcontext -T \$T -t
          echo STEP-B-OK" "$@" ||
            { why "activatecredential + quote in the container failed: $(tail -n 2 "$x/mq-b.out" | tr '\n' ' ')"; return 1; }
        cmp -s "$x/secret.bin" "$x/secret.out" || { why "activatecredential (ECC EK) recovered another secret"; return 1; }
    fi
    tpm2_checkquote -u "$x/ak.pem" -m "$x/q.msg" -s "$x/q.sig" -f "$x/q.pcrs" -g sha256 -q "$nonce" > "$x/q.check" 2>&1 ||
        { why "host tpm2_checkquote refused the ECDSA quote: $(tail -n 2 "$x/q.check" | tr '\n' ' ')"; return 1; }
    if tpm2_checkquote -u "$x/ak.pem" -m "$x/q.msg" -s "$x/q.sig" -f "$x/q.pcrs" -g sha256 -q "00$nonce" > /dev/null 2>&1; then
        why "tpm2_checkquote accepted the ECDSA quote with another nonce: the check cannot fail"; return 1
    fi
}

# verify_launch DIR NAME CONFIG LOG [ARGS...]: the verifier (ARGS: --pcrs FILE, --replay-json
# FILE, --image-source S); output in DIR/NAME.verify; its status
verify_launch() {
    local x=$1 name=$2 cfg=$3 log=$4; shift 4
    timeout 60 python3 "$VERIFY_PY" --pcr "$MEASURE_PCR" --config "$cfg" --log "$log" "$@" > "$x/$name.verify" 2>&1
}
# pcr_of FILE BANK: the value of MEASURE_PCR in tpm2_pcrread/tpm2_checkquote output FILE
pcr_of() { sed -n "/^ *$2:/,/^ *[a-z0-9_]*: *\$/s/^ *$MEASURE_PCR: *0x\([0-9A-Fa-f]*\)\$/\1/p" "$1" | head -n1; }
