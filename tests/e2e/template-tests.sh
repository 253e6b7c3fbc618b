#!/bin/bash
# tests/e2e/template-tests.sh - the template process (`vtpm-hook template`, src/emulator/template.h)
# end to end, in the test VM: the setups fork their emulators from it.
#
#   template-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM, after container-tests.sh in `tests/e2e/run.sh containers`
# (same harness, lib.sh). cgroup v2 guest: a template replaced on disk (its binary, then a
# library it maps) is not used and exits; two emulators forked from one template give different
# random bytes and EKs; a setup by hand with no template running starts one (adopted by PID 1),
# the next setups (by hand, runc create, crun create) use it, one whose policy says "template":
# "off" does not, and it exits once idle. cgroup v1 guest: a running template is never used.
# Prints "PASS: name" / "FAIL: name: why" and "N passed, M failed".
# Exit status: 0 all passed, 1 some failed, 2 the environment is unusable.
# TEMPLATE_ONLY=regex runs only the scenarios whose name matches.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/vtpm-hook}}
ONLY=${TEMPLATE_ONLY:-.}
TPL_SOCK=$E2E_WORK/run/template.sock
CG_PREFIX=/sys/fs/cgroup/e2e-tpl

preflight runc crun jq tpm2_getrandom tpm2_createek unshare nsenter timeout
ORIG_HOOK=$HOOK
V2=""; [ -f /sys/fs/cgroup/cgroup.controllers ] && V2=1
echo "# template tests: $([ -n "$V2" ] && echo "cgroup v2" || echo "cgroup v1"), hook $HOOK"

# ---------------------------------------------------------------- templates
live_templates() { live_named vtpm-template; }
# stop_templates: SIGTERM to every template (container-tests.sh's runc creates may have left one
# with its 60 s idle time), then SIGKILL after 10 s
stop_templates() {
    local p t0 ps
    ps=$(live_templates)
    [ -n "$ps" ] || return 0
    for p in $ps; do kill -TERM "$p" 2>/dev/null; done
    t0=$(now_ms)
    while [ -n "$(live_templates)" ] && [ $(( $(now_ms) - t0 )) -lt 10000 ]; do sleep 0.1; done
    for p in $(live_templates); do kill -KILL "$p" 2>/dev/null; done
    for p in $ps; do wait "$p" 2>/dev/null; done     # (those started by hand: this shell's children)
}
# wait_gone PID SECONDS: bounded wait until PID is no live process
wait_gone() {
    local t0; t0=$(now_ms)
    while alive "$1"; do
        [ $(( $(now_ms) - t0 )) -lt $(( $2 * 1000 )) ] || return 1
        sleep 0.1
    done
}
# sock_root_only: the template's socket is a socket of root's that no one else may use
sock_root_only() {
    local m
    m=$(stat -c '%F %u:%g %a' "$TPL_SOCK" 2>&1)
    [[ $m =~ ^socket\ 0:0\ [0-7]00$ ]] || { why "the template's socket is not root's only: $m"; return 1; }
}
# start_template BIN LOG: a template started by hand (a child of this shell, --idle-exit 0),
# serving once it says so; sets TPL
start_template() {
    local bin=$1 log=$2 comm
    DIAG+=("$log" "$log.err")
    "$bin" --run-root "$RUN_ROOT" --log-level debug --log-file "$log" template --idle-exit 0 \
        < /dev/null > /dev/null 2> "$log.err" &
    TPL=$!
    wait_grep "template $TPL: serving $TPL_SOCK" "$log" 90 ||
        { why "the template $TPL did not serve within 90 s: $(tail -n 2 "$log.err" "$log" | tr '\n' ' ')"; return 1; }
    read -r comm < "/proc/$TPL/comm"
    [ "$comm" = vtpm-template ] || { why "the template's process name is '$comm', not vtpm-template"; return 1; }
    sock_root_only || return 1
    note "template $TPL ($bin) serving after $(grep -c . "$log") log lines"
}
# template_gone PID WHY-LINE LOG SECONDS: PID exits (status 0 when it is this shell's child:
# `wait` says 127 for another's), having logged WHY-LINE, and its socket is gone
template_gone() {
    local tpl=$1 line=$2 log=$3 secs=$4 rc
    wait_gone "$tpl" "$secs" || { why "the template $tpl is still alive ${secs} s later"; return 1; }
    wait "$tpl" 2>/dev/null; rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 127 ] || { why "the template $tpl exited with status $rc: $(tail -n 2 "$log.err" | tr '\n' ' ')"; return 1; }
    grep -qF -- "$line" "$log" || { why "the template's log has no '$line': $(tail -n 2 "$log" | tr '\n' ' ')"; return 1; }
    [ ! -e "$TPL_SOCK" ] || { why "the template $tpl exited and left its socket $TPL_SOCK"; return 1; }
}
# lap NAME: the milliseconds since the last lap (or lap_start), for the scenario's "steps" note
lap_start() { LAPS=""; LAP0=$(now_ms); }
lap() { local t; t=$(now_ms); LAPS+=" $1=$(( t - LAP0 ))"; LAP0=$t; }
# from_template LOG: "EMU TPL" of the hook's log line "emulator EMU forked by the template TPL"
from_template() { sed -n 's/.*emulator \([0-9]*\) forked by the template \([0-9]*\)$/\1 \2/p' "$1"; }
# stale_line TPL WHY: the hook's warning about a stale template
stale_line() { printf 'the template (pid %s) is stale: %s; it is told to exit, and this setup forks its processes itself' "$1" "$2"; }

# ---------------------------------------------------------------- scenarios
# A template whose binary is replaced on disk: the setup before uses it, the setup after does
# not (it warns, forks its emulator itself, and tells the template to exit).
t_stale_binary() {
    local d=$E2E_WORK/tbin tlog=$LOG_DIR/template-binary.log tpl emu line HOOK
    lap_start
    rm -rf "$d"; mkdir -p "$d"
    cp "$ORIG_HOOK" "$d/vtpm-hook" || { why "cannot copy the hook to $d"; return 1; }
    HOOK=$d/vtpm-hook          # (make_bundle's hooks run this copy too: the template's binary)
    lap copy
    start_template "$HOOK" "$tlog" || return 1
    tpl=$TPL
    lap template
    make_bundle runc tpl-bin-1 "" "$TPM2_SCRIPT" || return 1
    lap bundle
    container_run runc tpl-bin-1 || return 1
    lap run
    [ "$RC" = 0 ] || { why "'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    read -r emu line <<< "$(from_template "$LOG")"
    [ "$line" = "$tpl" ] || { why "the setup did not use the template $tpl: $(grep -m1 -i template "$LOG" | sed 's/^.*\] //')"; return 1; }
    grep -q "template: forked child $emu\$" "$tlog" || { why "the template's log has no 'forked child $emu'"; return 1; }
    note "before: $(grep -m1 'forked by the template' "$LOG" | sed 's/^.*\] //')"
    expect_clean tpl-bin-1 "'runc run' returned" || return 1
    lap clean

    cp "$HOOK" "$d/vtpm-hook.new" && mv -f "$d/vtpm-hook.new" "$HOOK" || { why "cannot replace $HOOK"; return 1; }
    lap replace
    make_bundle crun tpl-bin-2 "" "$TPM2_SCRIPT" || return 1
    lap bundle
    container_run crun tpl-bin-2 || return 1
    lap run
    [ "$RC" = 0 ] || { why "'crun run' after the replacement exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    line=$(stale_line "$tpl" "$HOOK was replaced")
    grep -qF -- "$line" "$LOG" || { why "no '$line' in the hook's log: $(grep -m2 -i template "$LOG" | sed 's/^.*\] //' | tr '\n' ' ')"; return 1; }
    ! grep -q 'forked by the template' "$LOG" || { why "the setup after the replacement used a template: $(grep -m1 'forked by the template' "$LOG")"; return 1; }
    template_gone "$tpl" "template: retired by a hook (stale)" "$tlog" 20 || return 1
    lap gone
    note "after: $(grep -m1 'is stale' "$LOG" | sed 's/^.*\] //')"
    expect_clean tpl-bin-2 "'crun run' returned" || return 1
    lap clean
    note "steps (ms):$LAPS"
}

# The same with a library the template maps (libtpms: what an upgrade of the package replaces;
# the guest's / is a tmpfs overlay, so the host's file stays as it was).
t_stale_library() {
    local tlog=$LOG_DIR/template-library.log tpl lib line
    lap_start
    start_template "$HOOK" "$tlog" || return 1
    tpl=$TPL
    lap template
    lib=$(awk '$6 ~ /\/libtpms\.so/ { print $6; exit }' "/proc/$tpl/maps")
    [ -n "$lib" ] && [ -f "$lib" ] || { why "the template $tpl maps no libtpms ('$lib')"; return 1; }
    cp -p "$lib" "$lib.e2e-new" && mv -f "$lib.e2e-new" "$lib" || { why "cannot replace $lib"; return 1; }
    lap replace
    make_bundle runc tpl-lib "" "$TPM2_SCRIPT" || return 1
    lap bundle
    container_run runc tpl-lib || return 1
    lap run
    [ "$RC" = 0 ] || { why "'runc run' after the replacement exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    line=$(stale_line "$tpl" "$lib was replaced")
    grep -qF -- "$line" "$LOG" || { why "no '$line' in the hook's log: $(grep -m2 -i template "$LOG" | sed 's/^.*\] //' | tr '\n' ' ')"; return 1; }
    ! grep -q 'forked by the template' "$LOG" || { why "the setup after the replacement used a template"; return 1; }
    template_gone "$tpl" "template: retired by a hook (stale)" "$tlog" 20 || return 1
    lap gone
    note "$(grep -m1 'is stale' "$LOG" | sed 's/^.*\] //')"
    note "the hook's warning at $(grep -m1 'is stale' "$LOG" | cut -c12-23), the template retired at $(grep -m1 'retired by a hook' "$tlog" | cut -c12-23)"
    expect_clean tpl-lib "'runc run' returned" || return 1
    lap clean
    note "steps (ms):$LAPS"
}

# Two emulators forked from one template (two containers at once, fresh state each): their
# random bytes and their EKs (ECC: no RSA key generation under TCG) differ. Also: a second
# template of the run root fails (quietly, status 0, when started by a hook); SIGTERM stops it.
EK_SCRIPT='set -e
T=device:/dev/tpmrm0
echo "RANDOM $(tpm2_getrandom -T $T --hex 16)"
tpm2_createek -T $T -G ecc -c /tmp/ek.ctx -u /tmp/ek.pub > /dev/null
echo "EK $(od -An -v -tx1 /tmp/ek.pub | tr -d " \n")"
echo EK-OK'
t_children_differ() {
    local tlog=$LOG_DIR/template-children.log tpl rc i id rt emu t r=() ek=() emus=() pids=()
    lap_start
    start_template "$HOOK" "$tlog" || return 1
    tpl=$TPL
    lap template
    timeout 60 "$HOOK" --run-root "$RUN_ROOT" template --idle-exit 0 < /dev/null > "$E2E_WORK/tpl2.out" 2> "$E2E_WORK/tpl2.err"
    rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "another template serves $TPL_SOCK" "$E2E_WORK/tpl2.err" ||
        { why "a second template of the run root: exit $rc, '$(head -c 200 "$E2E_WORK/tpl2.err")'"; return 1; }
    timeout 60 "$HOOK" --run-root "$RUN_ROOT" template --idle-exit 0 --started-by-hook < /dev/null > "$E2E_WORK/tpl2.out" 2> "$E2E_WORK/tpl2.err"
    rc=$?
    [ "$rc" = 0 ] && [ ! -s "$E2E_WORK/tpl2.err" ] && [ ! -s "$E2E_WORK/tpl2.out" ] ||
        { why "a second template --started-by-hook: exit $rc, '$(head -c 200 "$E2E_WORK/tpl2.err")'"; return 1; }
    [ "$(live_templates)" = "$tpl" ] && [ -S "$TPL_SOCK" ] || { why "after the second templates: templates '$(live_templates | tr '\n' ' ')', socket $(ls -l "$TPL_SOCK" 2>&1)"; return 1; }

    for i in 1 2; do
        rt=runc; [ "$i" = 2 ] && rt=crun
        make_bundle "$rt" "tpl-child-$i" "" "$EK_SCRIPT" || return 1
        CLEANUP+=("$rt tpl-child-$i"); DIAG+=("$BUNDLE/out" "$BUNDLE/err")
        ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run --bundle "$BUNDLE" "tpl-child-$i" \
            < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err"; echo $? > "$BUNDLE/rc" ) 2> /dev/null &
        pids+=($!)
    done
    lap bundles
    wait "${pids[@]}"
    lap runs
    for i in 1 2; do
        id=tpl-child-$i
        read -r rc < "$BUNDLES/$id/rc"
        [ "$rc" = 0 ] && grep -q '^EK-OK' "$BUNDLES/$id/out" ||
            { why "$id exited with $rc: $(tail -n 3 "$BUNDLES/$id/err" "$BUNDLES/$id/out" | tr '\n' ' ')"; return 1; }
        read -r emu t <<< "$(from_template "$LOG_DIR/$id.log")"
        [ "$t" = "$tpl" ] || { why "$id's emulator was not forked by the template $tpl: $(grep -m1 -i template "$LOG_DIR/$id.log" | sed 's/^.*\] //')"; return 1; }
        grep -q "template: forked child $emu\$" "$tlog" || { why "the template's log has no 'forked child $emu'"; return 1; }
        emus+=("$emu")
        r+=("$(sed -n 's/^RANDOM //p' "$BUNDLES/$id/out")")
        ek+=("$(sed -n 's/^EK //p' "$BUNDLES/$id/out")")
        [[ ${r[-1]} =~ ^[0-9a-f]{32}$ ]] && [ ${#ek[-1]} -gt 100 ] ||
            { why "$id: random '${r[-1]}', EK public '${ek[-1]:0:40}...'"; return 1; }
    done
    [ "${emus[0]}" != "${emus[1]}" ] || { why "both setups name emulator ${emus[0]}"; return 1; }
    [ "${r[0]}" != "${r[1]}" ] || { why "two children of the template $tpl gave the same random bytes ${r[0]}"; return 1; }
    [ "${ek[0]}" != "${ek[1]}" ] || { why "two children of the template $tpl have the same EK (endorsement seed)"; return 1; }
    note "emulators ${emus[*]} from template $tpl: random ${r[0]} / ${r[1]}; EK (ECC) ...${ek[0]: -24} / ...${ek[1]: -24}"
    expect_clean "" "both containers returned" || return 1
    lap clean
    kill -TERM "$tpl"
    template_gone "$tpl" "template $tpl: stopping on signal 15" "$tlog" 20 || return 1
    lap sigterm
    note "steps (ms):$LAPS"
}

# A setup by hand (the container a stand-in in a cgroup v2 directory of its own, so it gets a
# keeper) with no template running starts one, adopted by PID 1; the next setups use it: by hand
# and runc/crun create at once (runtimes that are no subreaper); one whose policy says
# "template": "off" does not. Its children are named vtpm-emu and sit in the hook's cgroup. With
# "templateIdleSeconds": 3 it exits once the containers are gone. Before all, a `runc run` (a
# subreaper) with no template running starts none.
hand_setup() {   # hand_setup N: setup by hand of the stand-in hN (policy $TPOL); its status
    local b=$E2E_WORK/hand/h$1
    ( timeout -k 5 "$HOOK_TIMEOUT" "$HOOK" --policy "$TPOL" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" \
        --log-file "$LOG_DIR/hand-$1.log" --log-level debug setup < "$b/state.json" > /dev/null 2> "$b/setup.err" ) 2> /dev/null
}
t_on_demand() {
    local i b sb=() cg tpl ppid emu t rc id rt ids=() rts=() pids=() n t0 tlog=$LOG_DIR/hand-1.log out
    TPOL=$E2E_WORK/tpl-idle.json
    write_policy "$TPOL" '{"templateIdleSeconds": 3}' || return 1
    write_policy "$E2E_WORK/tpl-off.json" '{"template": "off"}' || return 1
    lap_start
    # a subreaper's setup starts no template
    POLICY=$TPOL make_bundle runc tpl-subreaper "" 'tpm2_getrandom -T device:/dev/tpmrm0 --hex 8 > /dev/null && echo RUN-OK' || return 1
    container_run runc tpl-subreaper || return 1
    [ "$RC" = 0 ] && grep -q '^RUN-OK' "$BUNDLE/out" || { why "'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    grep -q 'no template running: one was started for the next setups where it can be' "$LOG" ||
        { why "the runc run's setup did not look for a template: $(grep -m1 -i template "$LOG" | sed 's/^.*\] //')"; return 1; }
    [ -z "$(live_templates)" ] || { why "a template ($(live_templates | tr '\n' ' ')) runs after a setup under 'runc run', a subreaper"; return 1; }
    expect_clean tpl-subreaper "'runc run' returned" || return 1
    lap subreaper

    # two stand-ins, each in a cgroup of its own
    for i in 1 2; do
        b=$E2E_WORK/hand/h$i; cg=$CG_PREFIX-h$i
        rm -rf "$b"; mkdir -p "$b/rootfs/dev"
        echo '{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}' > "$b/config.json"
        start_standin || { why "the stand-in did not start"; return 1; }
        sb+=("$STANDIN")
        mkdir -p "$cg" && echo "$STANDIN" > "$cg/cgroup.procs" || { why "cannot move the stand-in into $cg"; return 1; }
        printf '{"ociVersion": "1.0.2", "id": "tpl-hand-%s", "status": "creating", "pid": %d, "bundle": "%s"}\n' \
            "$i" "$STANDIN" "$b" > "$b/state.json"
        DIAG+=("$LOG_DIR/hand-$i.log" "$b/setup.err")
    done
    lap standins
    t0=$(now_ms)
    hand_setup 1 || { why "setup by hand 1 failed: $(head -c 300 "$E2E_WORK/hand/h1/setup.err")"; return 1; }
    grep -q 'no template running: one was started for the next setups where it can be' "$tlog" ||
        { why "setup 1 did not start a template: $(grep -m1 -i template "$tlog" | sed 's/^.*\] //')"; return 1; }
    ! grep -q 'forked by the template' "$tlog" || { why "setup 1 used a template"; return 1; }
    until [ -n "$(live_templates)" ]; do
        [ $(( $(now_ms) - t0 )) -lt 20000 ] || { why "no vtpm-template process 20 s after setup 1"; return 1; }
        sleep 0.1
    done
    tpl=$(live_templates)
    [ "$(wc -w <<< "$tpl")" = 1 ] || { why "several templates: $tpl"; return 1; }
    ppid=$(status_field "$tpl" PPid)
    [ "$ppid" = 1 ] || { why "the template $tpl's parent is $ppid, not PID 1"; return 1; }
    # its log is the setup's log file; it is not in the container's cgroup
    wait_grep "template $tpl: serving $TPL_SOCK" "$tlog" 90 || { why "the template $tpl did not serve within 90 s: $(tail -n 2 "$tlog")"; return 1; }
    note "template $tpl (parent $ppid) serving $(( $(now_ms) - t0 )) ms after setup 1 began; argv: $(tr '\0' ' ' < "/proc/$tpl/cmdline" | sed 's,^[^ ]*/,,')"
    [ "$(cat "/proc/$tpl/cgroup")" = "$(cat /proc/self/cgroup)" ] ||
        { why "the template's cgroup is $(cat "/proc/$tpl/cgroup"), the hook's $(cat /proc/self/cgroup)"; return 1; }
    sock_root_only || return 1
    hand_setup 2 || { why "setup by hand 2 failed: $(head -c 300 "$E2E_WORK/hand/h2/setup.err")"; return 1; }
    read -r emu t <<< "$(from_template "$LOG_DIR/hand-2.log")"
    [ "$t" = "$tpl" ] || { why "setup 2 did not use the template $tpl: $(grep -m1 -i template "$LOG_DIR/hand-2.log" | sed 's/^.*\] //')"; return 1; }
    grep -qx "$emu" <<< "$(live_emulators)" || { why "the template's child $emu is no live vtpm-emu ($(cat "/proc/$emu/comm" 2>&1))"; return 1; }
    [ "$(status_field "$emu" PPid)" = "$tpl" ] || { why "emulator $emu's parent is $(status_field "$emu" PPid), not the template"; return 1; }
    [ "$(cat "/proc/$emu/cgroup")" = "$(cat /proc/self/cgroup)" ] ||
        { why "the template's child is in the cgroup $(cat "/proc/$emu/cgroup"), the hook's is $(cat /proc/self/cgroup)"; return 1; }
    expect_keeper "$emu" "(setup 2, by hand)" || return 1
    # its keeper too: a child of the template, in the hook's cgroup
    grep -q "keeper $KEEPER forked by the template $tpl\$" "$LOG_DIR/hand-2.log" ||
        { why "setup 2's keeper $KEEPER was not forked by the template: $(grep -m1 'keeper' "$LOG_DIR/hand-2.log" | sed 's/^.*\] //')"; return 1; }
    [ "$(status_field "$KEEPER" PPid)" = "$tpl" ] || { why "keeper $KEEPER's parent is $(status_field "$KEEPER" PPid), not the template"; return 1; }
    [ "$(cat "/proc/$KEEPER/cgroup")" = "$(cat /proc/self/cgroup)" ] ||
        { why "the keeper is in the cgroup $(cat "/proc/$KEEPER/cgroup"), the hook's is $(cat /proc/self/cgroup)"; return 1; }
    out=$(timeout 30 nsenter -t "${sb[1]}" -m tpm2_getrandom -T "device:$E2E_WORK/hand/h2/rootfs/dev/tpmrm0" --hex 8 2>&1)
    [[ $out =~ ^[0-9a-f]{16}$ ]] || { why "the TPM of setup 2 does not answer: $out"; return 1; }
    lap by-hand

    # runc and crun create (no subreapers) at once: two with the template, one with it off
    for i in 1 2 3; do
        rt=runc; [ "$i" = 1 ] || rt=crun
        id=tpl-create-$i
        if [ "$i" = 3 ]; then POLICY=$E2E_WORK/tpl-off.json make_bundle "$rt" "$id" "" "$TPM2_SCRIPT" || return 1
        else POLICY=$TPOL make_bundle "$rt" "$id" "" "$TPM2_SCRIPT" || return 1; fi
        ids+=("$id"); rts+=("$rt"); CLEANUP+=("$rt $id"); DIAG+=("$BUNDLE/out" "$BUNDLE/err")
    done
    lap bundles
    for i in 0 1 2; do
        ( timeout -k 5 "$RUN_TIMEOUT" "${rts[$i]}" create --bundle "$BUNDLES/${ids[$i]}" "${ids[$i]}" \
            < /dev/null > "$BUNDLES/${ids[$i]}/out" 2> "$BUNDLES/${ids[$i]}/err"; echo $? > "$BUNDLES/${ids[$i]}/rc" ) 2> /dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    for i in 0 1 2; do
        id=${ids[$i]}
        read -r rc < "$BUNDLES/$id/rc"
        [ "$rc" = 0 ] || { why "'${rts[$i]} create' of $id exited with $rc: $(tail -n 3 "$BUNDLES/$id/err" | tr '\n' ' ')"; return 1; }
        read -r emu t <<< "$(from_template "$LOG_DIR/$id.log")"
        if [ "$i" = 2 ]; then
            ! grep -qi template "$LOG_DIR/$id.log" || { why "$id (\"template\": \"off\") has a template line: $(grep -m1 -i template "$LOG_DIR/$id.log" | sed 's/^.*\] //')"; return 1; }
        else
            [ "$t" = "$tpl" ] || { why "$id did not use the template $tpl: $(grep -m1 -i template "$LOG_DIR/$id.log" | sed 's/^.*\] //')"; return 1; }
        fi
    done
    lap creates
    n=$(grep -c 'template: forked child' "$tlog")
    [ "$n" = 6 ] || { why "the template forked $n children, wanted 6 (an emulator and a keeper for setup 2 and for two creates)"; return 1; }
    [ "$(live_templates)" = "$tpl" ] || { why "templates now: $(live_templates | tr '\n' ' ')"; return 1; }
    for i in 0 1 2; do
        timeout 60 "${rts[$i]}" start "${ids[$i]}" > /dev/null 2> "$BUNDLES/${ids[$i]}/ctl.err" ||
            { why "'${rts[$i]} start ${ids[$i]}' failed: $(tail -n 2 "$BUNDLES/${ids[$i]}/ctl.err" | tr '\n' ' ')"; return 1; }
    done
    for i in 0 1 2; do
        wait_status "${rts[$i]}" "${ids[$i]}" stopped "$RUN_TIMEOUT" || return 1
        check_tpm2_output "$BUNDLES/${ids[$i]}/out" || { WHY="${ids[$i]}: $WHY"; return 1; }
        timeout 60 "${rts[$i]}" delete "${ids[$i]}" > /dev/null 2>> "$BUNDLES/${ids[$i]}/ctl.err" ||
            { why "'${rts[$i]} delete ${ids[$i]}' failed"; return 1; }
    done
    lap start-delete
    n=$(for i in 0 1 2; do sed -n 's/^RANDOM //p' "$BUNDLES/${ids[$i]}/out"; done | sort -u | grep -c .)
    [ "$n" = 3 ] || { why "3 containers, $n distinct random outputs"; return 1; }

    # the stand-ins exit (the containers are gone), their poststop; then the template idles out
    for i in 0 1; do kill "${sb[$i]}" 2>/dev/null; wait "${sb[$i]}" 2>/dev/null; done
    for i in 1 2; do
        b=$E2E_WORK/hand/h$i
        timeout -k 5 "$HOOK_TIMEOUT" "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" \
            --log-file "$LOG_DIR/hand-$i.log" teardown < "$b/state.json" > /dev/null 2> "$b/teardown.err" ||
            { why "teardown by hand $i failed: $(head -c 300 "$b/teardown.err")"; return 1; }
    done
    expect_clean "" "every container is gone" || return 1
    lap teardown
    t0=$(now_ms)
    template_gone "$tpl" "template $tpl: idle for 3 s, exiting" "$tlog" 30 || return 1
    note "the template exited $(( $(now_ms) - t0 )) ms after the teardowns (idle time 3 s)"
    [ -z "$(live_templates)" ] || { why "templates left: $(live_templates | tr '\n' ' ')"; return 1; }
    lap idle-exit
    note "steps (ms):$LAPS"
}

# cgroup v1: a running template is not used (an emulator from it could not be put into the
# hook's cgroup), and no setup starts one.
t_v1_unused() {
    local tlog=$LOG_DIR/template-v1.log tpl
    start_template "$HOOK" "$tlog" || return 1
    tpl=$TPL
    make_bundle runc tpl-v1 "" "$TPM2_SCRIPT" || return 1
    container_run runc tpl-v1 || return 1
    [ "$RC" = 0 ] || { why "'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    ! grep -q 'forked by the template' "$LOG" || { why "cgroup v1, and the setup used the template: $(grep -m1 'forked by the template' "$LOG")"; return 1; }
    ! grep -q 'template: forked' "$tlog" || { why "cgroup v1, and the template forked a child"; return 1; }
    note "hook: $(grep -m1 -i template "$LOG" | sed 's/^.*\] //')"
    [ "$(live_templates)" = "$tpl" ] || { why "templates: '$(live_templates | tr '\n' ' ')', wanted only the one started by hand ($tpl)"; return 1; }
    expect_clean tpl-v1 "'runc run' returned" || return 1
    kill -TERM "$tpl"
    template_gone "$tpl" "template $tpl: stopping on signal 15" "$tlog" 20 || return 1
}

cleanup_cgroups() { local c; for c in "$CG_PREFIX"-*; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done; return 0; }
# a scenario between two stop_templates: none is left for the next (nor one of container-tests.sh)
run_if() {
    [[ $1 =~ $ONLY ]] || return 0
    stop_templates; scenario "$@"; stop_templates; cleanup_cgroups
}

# ---------------------------------------------------------------- run
stop_templates
rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES"
at_exit 'stop_templates; cleanup_cgroups'
T_START=$(now_ms)
if [ -n "$V2" ]; then
    run_if template-stale-binary    t_stale_binary
    run_if template-stale-library   t_stale_library
    run_if template-children-differ t_children_differ
    run_if template-on-demand       t_on_demand
else
    echo "# cgroup v1: only template-unused-cgroup-v1 (a setup uses a template only on cgroup v2)"
    run_if template-unused-cgroup-v1 t_v1_unused
fi
echo "FIGURE: template_test_time_ms=$(( $(now_ms) - T_START ))"
finish
