#!/bin/bash
# tests/e2e/container-tests.sh - end-to-end tests of vtpm-hook with runc and crun.
#
#   container-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM (see tests/e2e/run.sh, which boots it): needs
# /dev/vtpmx (tpm_vtpm_proxy), runc, crun, jq, tpm2-tools, python3. Builds
# container root filesystems without network (host /usr and /etc bind-mounted
# read-only) and runs each scenario; prints "PASS: name" / "FAIL: name: why",
# informational "FIGURE: ..." lines, and finally "N passed, M failed".
# Exit status: 0 all passed, 1 some failed, 2 the environment is unusable.
# E2E_ONLY=regex runs only the scenarios whose name matches.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-/work/main/build/vtpm-hook}}
ONLY=${E2E_ONLY:-.}

# ---------------------------------------------------------------- preflight
fatal() { echo "ERROR: $*"; echo "0 passed, 0 failed (environment unusable)"; exit 2; }
case "$HOOK" in /*) ;; *) HOOK=$(cd "$(dirname "$HOOK")" 2>/dev/null && pwd)/$(basename "$HOOK") ;; esac
[ -x "$HOOK" ] || fatal "vtpm-hook binary not found or not executable: $HOOK"
[ "$(id -u)" = 0 ] || fatal "must run as root (inside the test VM)"
[ -c /dev/vtpmx ] || fatal "/dev/vtpmx missing: is tpm_vtpm_proxy loaded? (run me through tests/e2e/run.sh)"
for t in runc crun jq tpm2_getrandom tpm2_pcrread tpm2_nvdefine python3 pgrep unshare timeout; do
    command -v "$t" > /dev/null || fatal "'$t' not installed"
done
TPM_MAJOR=$(tpm_major)
[ -n "$TPM_MAJOR" ] || fatal "no 'tpm' line in /proc/devices"
[ -z "$(tpm_chips)" ] || fatal "a TPM chip exists before any test: $(tpm_chips)"

echo "# kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/cgroup v2/;s/tmpfs/cgroup v1/'), tpm major $(tpm_major)"
echo "# $(runc --version | head -n1), $(crun --version | head -n1)"
echo "# hook: $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES"

# A process in a private mount namespace, for the OCI state's pid in the
# by-hand (bad input) runs: if a hook went too far it would touch only that.
unshare --mount --propagation private sleep 100000 < /dev/null > /dev/null 2>&1 &
SLEEPER=$!
trap 'kill $SLEEPER 2>/dev/null' EXIT

T_START=$(now_ms)

# ---------------------------------------------------------------- scenarios
# foreground `run` with the default vTPM (no linux.vtpms)
t_run() {
    local rt=$1 id=e2e-$1-run
    make_bundle "$rt" "$id" "" "$TPM2_SCRIPT" || return 1
    container_run "$rt" "$id" || return 1
    [ "$RC" = 0 ] || { why "'$rt run' exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    note "$(grep -m1 '^RANDOM' "$BUNDLE/out"); $(grep -m1 '^DEV /dev/tpm0' "$BUNDLE/out")"
    expect_clean "$id" "'$rt run' returned" || return 1
}

# detached: create (hooks run) / start / wait for exit / delete (poststop)
t_detached() {
    local rt=$1 id=e2e-$1-detached rc
    make_bundle "$rt" "$id" "" "$TPM2_SCRIPT" || return 1
    CLEANUP+=("$rt $id"); DIAG+=("$BUNDLE/out" "$BUNDLE/err" "$BUNDLE/ctl.err")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" create --bundle "$BUNDLE" "$id" \
        < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null
    rc=$?
    [ "$rc" = 0 ] || { why "'$rt create' exited with $rc: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    wait_status "$rt" "$id" created 20 || return 1
    # while the container exists: emulator, chip, run record, default state dir
    [ -n "$(live_emulators)" ] || { why "no live vtpm-emu process after '$rt create'"; return 1; }
    [ -n "$(tpm_chips)" ] || { why "no /sys/class/tpm entry after '$rt create'"; return 1; }
    [ -f "$RUN_ROOT/$id.json" ] || { why "no run record $RUN_ROOT/$id.json after '$rt create'"; return 1; }
    jq -e . "$RUN_ROOT/$id.json" > /dev/null 2>&1 || { why "run record $RUN_ROOT/$id.json is not JSON"; return 1; }
    [ -d "$STATE_ROOT/$id" ] || { why "default state directory $STATE_ROOT/$id missing after '$rt create'"; return 1; }
    note "after create: chips '$(tpm_chips)', state dir: $(ls -A "$STATE_ROOT/$id" | tr '\n' ' ')"
    timeout 60 "$rt" start "$id" > /dev/null 2> "$BUNDLE/ctl.err" ||
        { why "'$rt start' failed: $(tail -n 3 "$BUNDLE/ctl.err" | tr '\n' ' ')"; return 1; }
    wait_status "$rt" "$id" stopped "$RUN_TIMEOUT" || return 1
    check_tpm2_output "$BUNDLE/out" || return 1
    timeout 60 "$rt" delete "$id" > /dev/null 2> "$BUNDLE/ctl.err" ||
        { why "'$rt delete' failed: $(tail -n 3 "$BUNDLE/ctl.err" | tr '\n' ' ')"; return 1; }
    expect_clean "$id" "'$rt delete' returned" || return 1
}

# TPM state survives: NV index written in one container, read in a later one
NV_DATA='vtpm-hook e2e persistence check'   # 31 bytes
t_persist() {
    local dir=$E2E_WORK/persist-tpm vt want got
    vt=$(jq -nc --arg p "$dir" '[{"statePath": $p, "vtpmVersion": "2", "statePathIsManaged": false}]')
    make_bundle runc e2e-persist-1 "$vt" "set -e
tpm2_nvdefine -T device:/dev/tpmrm0 0x1500016 -C o -s 32 -a 'ownerread|ownerwrite|authread|authwrite'
printf '%s' '$NV_DATA' > /tmp/data
tpm2_nvwrite -T device:/dev/tpmrm0 0x1500016 -C o -i /tmp/data
echo WRITE-OK" || return 1
    container_run runc e2e-persist-1 || return 1
    [ "$RC" = 0 ] && grep -q '^WRITE-OK' "$BUNDLE/out" ||
        { why "writing container (runc) exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    expect_clean e2e-persist-1 "'runc run' (writer) returned" || return 1
    [ -n "$(ls -A "$dir" 2>/dev/null)" ] || { why "state directory $dir is empty after the writer's teardown"; return 1; }
    note "state files: $(ls -A "$dir" | tr '\n' ' ')"

    make_bundle crun e2e-persist-2 "$vt" "tpm2_nvread -T device:/dev/tpmrm0 0x1500016 -C o -s 31 -o /tmp/r || exit 5
echo NVHEX \$(od -An -tx1 /tmp/r | tr -d ' \n')" || return 1
    container_run crun e2e-persist-2 || return 1
    want=$(printf '%s' "$NV_DATA" | od -An -tx1 | tr -d ' \n')
    got=$(sed -n 's/^NVHEX //p' "$BUNDLE/out")
    [ "$RC" = 0 ] || { why "reading container (crun) exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    [ "$got" = "$want" ] || { why "NV index read back '$got', written '$want'"; return 1; }
    expect_clean e2e-persist-2 "'crun run' (reader) returned" || return 1
}

# TPM 1.2: raw TPM_GetCapability(TPM_CAP_VERSION_VAL) on /dev/tpm0, no /dev/tpmrm0
t_tpm12() {
    local id=e2e-tpm12 vt
    vt=$(jq -nc --arg p "$E2E_WORK/tpm12-state" '[{"statePath": $p, "vtpmVersion": "1.2", "statePathIsManaged": false}]')
    make_bundle runc "$id" "$vt" 'if [ -e /dev/tpmrm0 ]; then echo HAS-TPMRM0; else echo NO-TPMRM0; fi
echo "SYSFS-VERSION $(cat /sys/class/tpm/tpm*/tpm_version_major 2>/dev/null | tr "\n" " ")"
python3 /root/tpm12.py' || return 1
    cat > "$BUNDLE/rootfs/root/tpm12.py" <<'PY'
import os, struct, sys
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
print("TPM12-OK")
PY
    container_run runc "$id" || return 1
    grep -q 'TPMRM0$' "$BUNDLE/out" ||
        { why "container did not run (rc $RC): $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    grep -q '^NO-TPMRM0' "$BUNDLE/out" || { why "/dev/tpmrm0 exists in a TPM 1.2 container"; return 1; }
    [ "$RC" = 0 ] && grep -q '^TPM12-OK' "$BUNDLE/out" ||
        { why "TPM 1.2 check failed (rc $RC): $(grep -E '^(TAG|RESP)' "$BUNDLE/out" | tr '\n' ' ') $(tail -n 2 "$BUNDLE/out" "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    note "$(grep -E '^(TAG|VERSION|SYSFS-VERSION)' "$BUNDLE/out" | tr '\n' ';')"
    expect_clean "$id" "'runc run' (TPM 1.2) returned" || return 1
}

# bad input, hook run by hand: non-zero, exactly one stderr line, nothing left
# t_bad CASE: the OCI state on stdin is built here per case
t_bad() {
    local case=$1 in=$E2E_WORK/bad-$1.json S=$E2E_WORK/bad-state R=$E2E_WORK/bad-run
    local cwd=$E2E_WORK/bad-cwd side=$E2E_WORK/bad-side-$1 rc lines
    rm -rf "$S" "$R" "$cwd" "$side"; mkdir -p "$S" "$R" "$cwd"
    local st
    st=$(jq -nc --arg id "e2e-bad-$case" --argjson pid "$SLEEPER" \
         '{"ociVersion": "1.0.2", "id": $id, "status": "creating", "pid": $pid}')
    case $case in
        empty-stdin) : > "$in" ;;
        not-json) printf 'this is {not JSON\n' > "$in" ;;
        no-bundle) echo "$st" > "$in" ;;
        no-config) mkdir -p "$side/rootfs"
                   jq -c --arg b "$side" '.bundle = $b' <<< "$st" > "$in" ;;
        version-3|relative-statepath)
            local vt
            if [ "$case" = version-3 ]; then
                vt=$(jq -nc --arg p "$side/tpm" '[{"statePath": $p, "vtpmVersion": "3", "statePathIsManaged": false}]')
            else
                vt='[{"statePath": "relative/tpm-state", "vtpmVersion": "2", "statePathIsManaged": false}]'
            fi
            make_bundle runc "bad-$case" "$vt" 'true' || return 1
            jq -c --arg b "$BUNDLE" '.bundle = $b' <<< "$st" > "$in" ;;
    esac
    DIAG+=("$E2E_WORK/bad.out" "$E2E_WORK/bad.err")
    local t0; t0=$(now_ms)
    ( cd "$cwd" && exec timeout -k 5 "$HOOK_TIMEOUT" "$HOOK" --state-root "$S" --run-root "$R" setup \
        < "$in" > "$E2E_WORK/bad.out" 2> "$E2E_WORK/bad.err" )
    rc=$?
    note "exit $rc after $(( $(now_ms) - t0 )) ms, stderr: $(head -c 300 "$E2E_WORK/bad.err" | tr '\n' '|')"
    case $rc in
        0) why "exit status 0"; return 1 ;;
        124|137) why "hook did not return within ${HOOK_TIMEOUT}s"; return 1 ;;
    esac
    lines=$(awk 'END { print NR }' "$E2E_WORK/bad.err")
    [ "$lines" = 1 ] && [ -n "$(tr -d '[:space:]' < "$E2E_WORK/bad.err")" ] ||
        { why "stderr has $lines lines, wanted exactly one non-empty line"; return 1; }
    [ -z "$(ls -A "$S")" ] || { why "left in the state root: $(ls -A "$S" | tr '\n' ' ')"; return 1; }
    [ -z "$(ls -A "$R")" ] || { why "left in the run root: $(ls -A "$R" | tr '\n' ' ')"; return 1; }
    [ -z "$(ls -A "$cwd")" ] || { why "created in the working directory: $(cd "$cwd" && find . | tr '\n' ' ')"; return 1; }
    [ ! -e "$side/tpm" ] || { why "created the requested state dir $side/tpm"; return 1; }
    expect_clean "e2e-bad-$case" "the failed setup" || return 1
}

run_if() { [[ $1 =~ $ONLY ]] && scenario "$@"; return 0; }

run_if runc-run                 t_run runc
run_if crun-run                 t_run crun
run_if runc-create-start-delete t_detached runc
run_if crun-create-start-delete t_detached crun
run_if persistence              t_persist
run_if tpm12-getcapability      t_tpm12
for c in empty-stdin not-json no-bundle no-config version-3 relative-statepath; do
    run_if "bad-input-$c" t_bad "$c"
done

# ---------------------------------------------------------------- figures + summary
setup_ms=""; per=""
for f in "$LOG_DIR"/*.log; do
    [ -e "$f" ] || continue
    for v in $(grep -o 'setup took [0-9]* ms' "$f" | awk '{print $3}'); do
        setup_ms+="$v"$'\n'; per+=" $(basename "$f" .log)=$v"
    done
done
setup_ms=$(printf '%s' "$setup_ms" | sort -n)
if [ -n "$setup_ms" ]; then
    n=$(echo "$setup_ms" | wc -l)
    echo "FIGURE: setup_ms=$(echo "$setup_ms" | awk -v n="$n" 'NR == int((n + 1) / 2)') (median of $n;" \
         "min $(echo "$setup_ms" | head -n1), max $(echo "$setup_ms" | tail -n1);$per)"
else
    echo "FIGURE: setup_ms=none (no 'setup took N ms' line in $LOG_DIR/*.log)"
fi
echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
