#!/bin/bash
# tests/e2e/compromise-tests.sh - a compromised emulator stays in its box (issue 18), in the VM.
#
#   compromise-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM, after security-tests.sh (tests/e2e/run.sh hardening).
# libtpms parses every TPM command a workload sends; assume an exploit runs code inside the
# emulator. The attacker here is real code in the real, sandboxed emulator of a real container:
# libvtpm_attacker.so (tests/e2e/attacker/attacker.cpp, test-only), preloaded into the hook
# through the prestart hook's env in config.json, interposes TPMLIB_Process and, on a trigger
# command the container sends (TPM2_GetRandom of 0xBEEF bytes), attacks the victims and writes
# what each call returned to /attack-report (its root: the state directory). Victims: a host
# process (sleep, in a cgroup of its own), another container's init and emulator (crun), a host
# file, the other tenant's state (with a secret in NV) and the state directory the next
# provisioning would use. One PASS/FAIL line per attack class, judged from outside:
#   proof        the report's pid is the container's emulator (run record); it is confined:
#                Seccomp 2, NoNewPrivs, no capabilities (/proc), '/' is its state directory,
#                a call the filter refuses (getcwd) gave EPERM
#   unprivileged the emulator and the keeper do not run as uid 0
#   fds          /proc/PID/fd of the emulator and the keeper: no directory but the state dir,
#                no cgroup file that moves a task or is open for writing
#   write-pid    every victim's pid written into every fd it holds: the victims' cgroups unchanged
#   fcntl        F_SETOWN(_EX)/F_SETSIG/F_NOTIFY/O_ASYNC/F_SETLEASE on every fd (then a file
#                created, a write): every call refused, the victims alive
#   kill         kill/tgkill/tkill/rt_(tg)sigqueueinfo of each victim, kill(-1, 0),
#                pidfd_send_signal(every fd, 0): refused, the victims alive
#   prlimit      prlimit64 of each victim: refused, /proc/PID/limits unchanged
#   openat       '..' and '../../..'/host paths through every directory fd and the cwd: nothing
#                outside its root opened, the host file unchanged
#   other-tpm    the other tenant's permall by absolute and relative paths (read, append, create
#                beside): refused, its state unchanged, its secret not in the report
#   plant        tpm2-00.permall/volatilestate created for the next provisioning (a new
#                directory, the other tenant's): refused, nothing created
#   ptrace       PTRACE_ATTACH of the host victim (last: the filter kills): no success, alive
# Exit status: 0 all passed, 1 some failed, 2 environment unusable. COMP_ONLY=regex selects
# scenarios (compromise-runc); VTPM_ATTACKER: the object (default <hook dir>/tests/...).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_WORK=/run/vtpm-comp
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$HERE/../.." && pwd)/build/vtpm-hook}}
ONLY=${COMP_ONLY:-.}
T=device:/dev/tpmrm0

preflight runc crun jq python3 tpm2_nvdefine tpm2_nvwrite timeout md5sum stat find
ATTACKER=${VTPM_ATTACKER:-$(dirname "$HOOK")/tests/libvtpm_attacker.so}
[ -f "$ATTACKER" ] || fatal "no attacker object at $ATTACKER (build the vtpm_attacker target)"
echo "# $(runc --version | head -n1), $(crun --version | head -n1), hook $HOOK, attacker $ATTACKER"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES" "$E2E_WORK/fp"
T_START=$(now_ms)
VICTIM_CG=/sys/fs/cgroup/vtpm-comp-victim
KILL_AT_END=()
kill_victims() { local p; for p in "${KILL_AT_END[@]}"; do kill -9 "$p" 2>/dev/null; done; }
at_exit kill_victims

# ---------------------------------------------------------------- helpers
emu_pid_of() { jq -r '[.. | .emulatorPid? // empty][0] // empty' "$RUN_ROOT/$1.json" 2>/dev/null; }
# fd_listing PID: "fd -> target [dir]" per fd
fd_listing() {
    local f
    for f in /proc/"$1"/fd/*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        printf '%s -> %s%s\n' "${f##*/}" "$(readlink "$f")" "$([ -d "$f" ] && echo ' [dir]')"
    done
}
# bad_fds PID STATEDIR: fds that are a directory other than STATEDIR, or a cgroup file that can
# move a task (cgroup.procs/cgroup.threads) or is open for writing (a read-only cgroup.events,
# the keeper's watch of the container's cgroup, moves nothing)
bad_fds() {
    local f t flags
    for f in /proc/"$1"/fd/*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        t=$(readlink "$f")
        if [ -d "$f" ]; then
            [ "$t" = "$2" ] || printf '%s -> %s [dir];' "${f##*/}" "$t"
        elif [[ $t == /sys/fs/cgroup/* ]]; then
            flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$1/fdinfo/${f##*/}" 2>/dev/null)
            if [[ $t == */cgroup.procs || $t == */cgroup.threads ]] || (( (8#${flags:-0} & 3) != 0 )); then
                printf '%s -> %s (flags %s);' "${f##*/}" "$t" "$flags"
            fi
        fi
    done
}
# report lines of a class that succeeded
report_ok() { grep -E "^PROBE $1 .* -> ok" "$REPORT" 2>/dev/null | cut -c1-160 | head -n 4 | tr '\n' ';'; }

# attacker_jq VICTIMS OTHER_STATE HOST_FILE PLANT_DIR OUT: a make_bundle filter: the attacker
# and its targets in the prestart hook's env, OUT (host) at /out
attacker_jq() {
    local j
    j=$(jq -nc --arg so "$ATTACKER" --arg v "$1" --arg o "$2" --arg h "$3" --arg p "$4" --arg out "$5" '
        {env: ["LD_PRELOAD=" + $so, "VTPM_ATTACK_VICTIMS=" + $v, "VTPM_ATTACK_OTHER_STATE=" + $o,
               "VTPM_ATTACK_HOST_FILE=" + $h, "VTPM_ATTACK_PLANT_DIR=" + $p],
         mount: {destination: "/out", type: "bind", source: $out, options: ["rbind", "rw"]}}')
    printf '.hooks.prestart[0].env = %s | .mounts += [%s]' "$(jq -c .env <<< "$j")" "$(jq -c .mount <<< "$j")"
}

# class NAME FINDING...: one PASS/FAIL line for an attack class (findings: empty = none)
class() {
    local name=$1 f out=""; shift
    for f in "$@"; do [ -n "$f" ] && out+="$f; "; done
    if [ -z "$out" ]; then pass "$name"; else fail "$name" "${out%; }"; fi
}

# ---------------------------------------------------------------- the scenario
# t_compromise RT [template]: the attacked container runs under RT; the other tenant under crun.
# Its emulator is forked by the hook (policy "template": "off"), or with `template` by a template
# process (vtpm-hook template) that runs with the attacker preloaded, so that the attack runs in
# a template's child: it must hold nothing of the template's (socket, lock) either.
t_compromise() {
    local rt=$1 mode=${2:-fork} tag=$1${2:+-$2} a b hostfile=$E2E_WORK/host-file plant=$STATE_ROOT/comp-next
    local tpl="" tfds appid
    a=comp-a-$tag b=comp-b-$tag
    local secret hostv binit bemu aemu akeep keepers_before v go=$E2E_WORK/go-$1 proof_out
    local pre_status afds kfds report_pid t0
    WHY=""; CLEANUP=(); NOTES=()
    force_clean
    secret=$(gen_secret)
    # the host victim: a sleep in a cgroup of its own (v2), so a move shows
    sleep 100000 > /dev/null 2>&1 &
    hostv=$!; disown "$hostv"; KILL_AT_END+=("$hostv")
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        mkdir -p "$VICTIM_CG" && echo "$hostv" > "$VICTIM_CG/cgroup.procs" || { fail "compromise-$tag" "cannot place the host victim in $VICTIM_CG"; return; }
    fi
    echo "host file $(gen_secret)" > "$hostfile"
    # B: the other tenant, a secret in its NV index, then asleep
    POLICY=$POLICY_FORK make_bundle crun "$b" "" "set -e
printf %s $secret > /tmp/s
tpm2_nvdefine -T $T 0x1500036 -C o -s 16 -a 'ownerread|ownerwrite' > /dev/null
tpm2_nvwrite -T $T 0x1500036 -C o -i /tmp/s
echo B-SECRET-WRITTEN
exec sleep 100000" || { fail "compromise-$tag" "$WHY"; return; }
    CLEANUP+=("crun $b")
    ( timeout -k 5 "$RUN_TIMEOUT" crun run -d --bundle "$BUNDLE" "$b" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null &&
        wait_grep B-SECRET-WRITTEN "$BUNDLE/out" 60 ||
        { fail "compromise-$tag" "the other tenant (crun run -d $b) did not start: $(tail -n 3 "$BUNDLE/err" "$LOG" | tr '\n' ' ')"; cleanup_containers; return; }
    binit=$(crun state "$b" | jq -r .pid); bemu=$(emu_pid_of "$b")
    KILL_AT_END+=("$binit")
    for v in "$hostv" "$binit" "$bemu"; do
        cat "/proc/$v/cgroup" > "$E2E_WORK/fp/cg-$v"; cat "/proc/$v/limits" > "$E2E_WORK/fp/lim-$v"
    done
    tree_fp "$STATE_ROOT/$b" > "$E2E_WORK/fp/b-state"
    md5sum < "$hostfile" > "$E2E_WORK/fp/hostfile"
    note "victims: host sleep $hostv ($(cat "$E2E_WORK/fp/cg-$hostv")), $b init $binit, $b emulator $bemu"
    # A: the attacked container, the attacker preloaded through the prestart hook's env
    keepers_before=" $(live_keepers | tr '\n' ' ') "
    rm -f "$go"
    local policy=$POLICY_FORK
    if [ "$mode" = template ]; then
        policy=$POLICY_TEMPLATE
        env LD_PRELOAD="$ATTACKER" VTPM_ATTACK_VICTIMS="$hostv $binit $bemu" VTPM_ATTACK_OTHER_STATE="$STATE_ROOT/$b" \
            VTPM_ATTACK_HOST_FILE="$hostfile" VTPM_ATTACK_PLANT_DIR="$plant" \
            "$HOOK" --run-root "$RUN_ROOT" --log-file "$LOG" --log-level debug template > /dev/null 2>&1 &
        tpl=$!
        wait_grep "template $tpl: serving" "$LOG" 60 ||
            { fail "compromise-$tag" "the template did not start: $(tail -n 3 "$LOG" | tr '\n' ' ')"; kill "$tpl"; cleanup_containers; return; }
        KILL_AT_END+=("$tpl")
    fi
    POLICY=$policy make_bundle "$rt" "$a" "" "echo CONTAINER-RAN
while [ ! -e /out/go ]; do sleep 0.1; done
timeout 60 python3 -c 'import os, struct
fd = os.open(\"/dev/tpmrm0\", os.O_RDWR)
os.write(fd, struct.pack(\">HIIH\", 0x8001, 12, 0x17b, 0xbeef))
print(\"answer\", os.read(fd, 4096).hex())' > /out/trigger 2>&1
echo TRIGGERED > /out/triggered
exec sleep 100000" "$(attacker_jq "$hostv $binit $bemu" "$STATE_ROOT/$b" "$hostfile" "$plant" "$E2E_WORK/out-$tag")" ||
        { fail "compromise-$tag" "$WHY"; cleanup_containers; return; }
    rm -rf "$E2E_WORK/out-$tag"; mkdir -p "$E2E_WORK/out-$tag"
    CLEANUP+=("$rt $a")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$BUNDLE" "$a" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { fail "compromise-$tag" "the attacked container ($rt run -d $a) did not start: $(tail -n 3 "$BUNDLE/err" "$LOG" | tr '\n' ' ')"; cleanup_containers; return; }
    aemu=$(emu_pid_of "$a")
    if [ -n "$tpl" ]; then
        # a template's child: none of the template's sockets (its listener, other hooks'
        # connections) nor its lock
        tfds=$(for f in /proc/"$tpl"/fd/*; do readlink "$f"; done 2>/dev/null | grep -E '^socket:|template' | sort -u)
        tfds=$(fd_listing "$aemu" | awk '{print $3}' | grep -Fxf <(echo "$tfds") | tr '\n' ' ')
        [ -z "$tfds" ] || afds+=" the template fds: $tfds"
    fi
    for v in $(live_keepers); do [[ $keepers_before == *" $v "* ]] || akeep=$v; done
    REPORT=$STATE_ROOT/$a/attack-report
    # before the attack (the attacker ends killed): what the emulator and keeper hold, who they are
    pre_status="Seccomp=$(status_field "$aemu" Seccomp) NoNewPrivs=$(status_field "$aemu" NoNewPrivs) CapEff=$(status_field "$aemu" CapEff) Uid=$(status_field "$aemu" Uid | tr '\t' ' ')"
    appid=$(status_field "$aemu" PPid)
    afds+=$(bad_fds "$aemu" "$STATE_ROOT/$a"); kfds=$(bad_fds "${akeep:-none}" "$STATE_ROOT/$a")
    note "emulator $aemu: $pre_status; keeper ${akeep:-none}: Uid=$(status_field "${akeep:-none}" Uid | tr '\t' ' ')"
    note "emulator fds: $(fd_listing "$aemu" | tr '\n' ';')"
    note "keeper fds: $(fd_listing "${akeep:-none}" | tr '\n' ';')"
    touch "$E2E_WORK/out-$tag/go"
    wait_grep TRIGGERED "$E2E_WORK/out-$tag/triggered" 90 || note "the container's trigger did not finish in 90 s"
    # its answer may come before the attacker is done (a pid written into the proxy fd is one):
    # wait for the last attack, then for the filter to kill it
    wait_grep '^PTRACE attach\|^END' "$REPORT" 60 || note "the report has no PTRACE/END line after 60 s"
    t0=$(now_ms)
    while alive "$aemu" && [ $(( $(now_ms) - t0 )) -lt 10000 ]; do sleep 0.2; done
    note "report: $(grep -c . "$REPORT" 2>/dev/null) lines, last: $(tail -n 1 "$REPORT" 2>/dev/null | cut -c1-120)"
    note "the emulator after the attack: $(alive "$aemu" && echo alive || echo gone)"
    cp "$REPORT" "$LOG_DIR/attack-report-$tag" 2>/dev/null

    # ---- verdicts, one per class
    local proof=() r_root sd
    if [ ! -s "$REPORT" ]; then
        proof+=("no attack report at $REPORT: the attacker did not run (trigger: $(head -c 200 "$E2E_WORK/out-$tag/trigger" 2>/dev/null))")
    else
        proof_out=$(grep -m1 '^PROOF ' "$REPORT")
        report_pid=$(sed -n 's/.* pid=\([0-9]*\) .*/\1/p' <<< "$proof_out")
        r_root=$(sed -n 's/.* root=\([0-9:]*\) .*/\1/p' <<< "$proof_out")
        sd=$(stat -c '%d:%i' "$STATE_ROOT/$a")
        [ -n "$aemu" ] && [ "$report_pid" = "$aemu" ] || proof+=("the report's pid '$report_pid' is not the emulator's '$aemu' (run record)")
        [ "$r_root" = "$sd" ] || proof+=("its '/' is $r_root, the state dir $sd")
        [[ $proof_out == *" lock=yes "* ]] || proof+=("no .lock at its '/'")
        [[ $proof_out == *" getcwd=EPERM "* ]] || proof+=("getcwd (refused by the filter) gave: $proof_out")
        [[ $pre_status == "Seccomp=2 NoNewPrivs=1 CapEff=0000000000000000 "* ]] || proof+=("not confined: $pre_status")
        if [ -n "$tpl" ]; then
            [ "$appid" = "$tpl" ] || proof+=("the emulator's parent was '$appid', not the template $tpl")
        else
            ! grep -q "emulator $aemu forked by the template" "$LOG" || proof+=("the emulator came from a template")
        fi
        note "attacker: $proof_out"
    fi
    class "compromise-proof-$tag" "${proof[@]}"
    if [ ${#proof[@]} != 0 ]; then   # nothing below would mean anything
        fail "compromise-attacks-$tag" "not run: the attacker was not proven inside the sandboxed emulator"
        tail -n 25 "$LOG" | indent
        for n in "${NOTES[@]}"; do echo "    $n"; done
        cleanup_containers; return
    fi
    local uids
    uids="$(status_field "$aemu" Uid)$(sed -n 's/.* uid=\([0-9]*\) euid=\([0-9]*\) .*/ \1 \2/p' <<< "$proof_out") $(status_field "${akeep:-none}" Uid)"
    class "compromise-unprivileged-$tag" \
        "$(grep -Eq '(^|[[:space:]])0([[:space:]]|$)' <<< "$uids" && echo "emulator or keeper runs as uid 0 (emulator, report, keeper: $(tr '\t' ' ' <<< "$uids"))")"
    class "compromise-fds-$tag" "${afds:+the emulator holds: $afds}" "${kfds:+the keeper holds: $kfds}" \
        "$([ -z "$akeep" ] && echo "no keeper found")"
    local cg=() lim=() dead=()
    for v in "$hostv" "$binit" "$bemu"; do
        if ! alive "$v"; then dead+=("$v"); continue; fi
        diff -q "$E2E_WORK/fp/cg-$v" "/proc/$v/cgroup" > /dev/null || cg+=("victim $v moved: $(cat "$E2E_WORK/fp/cg-$v") -> $(cat "/proc/$v/cgroup")")
        diff -q "$E2E_WORK/fp/lim-$v" "/proc/$v/limits" > /dev/null || lim+=("victim $v's limits changed: $(diff "$E2E_WORK/fp/lim-$v" "/proc/$v/limits" | grep '^>' | tr '\n' ' ')")
    done
    local gone=""
    [ ${#dead[@]} = 0 ] || gone="victims killed: ${dead[*]} (host sleep $hostv, $b init $binit, $b emulator $bemu)"
    class "compromise-write-pid-$tag" "${cg[@]}" "${gone:+$gone: cgroups not checked}"
    class "compromise-fcntl-$tag" "$(report_ok fcntl)" "$gone"
    class "compromise-kill-$tag" "$(report_ok kill)" "$gone"
    class "compromise-prlimit-$tag" "$(report_ok prlimit)" "${lim[@]}" "${gone:+$gone: limits not checked}"
    class "compromise-openat-$tag" "$(grep -E '^PROBE openat .* -> ok' "$REPORT" | grep -v '(its own root)' | cut -c1-160 | head -n 4 | tr '\n' ';')" \
        "$(md5sum < "$hostfile" | diff -q "$E2E_WORK/fp/hostfile" - > /dev/null || echo "the host file changed: $(head -c 100 "$hostfile")")"
    class "compromise-other-tpm-$tag" "$(report_ok other-tpm)" \
        "$(tree_fp "$STATE_ROOT/$b" | diff -q "$E2E_WORK/fp/b-state" - > /dev/null || echo "$b's state changed: $(tree_fp "$STATE_ROOT/$b" | diff "$E2E_WORK/fp/b-state" - | grep '^[<>]' | head -n 3 | tr '\n' ' ')")" \
        "$(grep -q "$(hexof "$secret")" "$REPORT" && echo "the report holds $b's NV secret")"
    class "compromise-plant-$tag" "$(report_ok plant)" "$([ -e "$plant" ] && echo "$plant exists: $(ls -A "$plant" | tr '\n' ' ')")"
    class "compromise-ptrace-$tag" "$(report_ok ptrace)" "$(alive "$hostv" || echo "the host victim $hostv is gone")" \
        "$(alive "$hostv" && [ "$(status_field "$hostv" TracerPid)" != 0 ] && echo "the host victim is traced")"
    for n in "${NOTES[@]}"; do echo "    $n"; done
    echo "    report (proof, fds, triggers, last line):"
    grep -E '^(PROOF|FD|INFO|PTRACE)' "$REPORT" | cut -c1-200 | indent
    cleanup_containers
    kill_victims
    [ -z "$tpl" ] || timeout 20 tail --pid="$tpl" -f /dev/null
}

# ---------------------------------------------------------------- run
POLICY_FORK=$E2E_WORK/policy-fork.json POLICY_TEMPLATE=$E2E_WORK/policy-template.json
write_policy "$POLICY_FORK" '{"template": "off"}' || fatal "cannot write $POLICY_FORK"
write_policy "$POLICY_TEMPLATE" '{"template": "auto"}' || fatal "cannot write $POLICY_TEMPLATE"
[[ compromise-runc =~ $ONLY ]] && t_compromise runc
[[ compromise-runc-template =~ $ONLY ]] && t_compromise runc template

echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
