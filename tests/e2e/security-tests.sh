#!/bin/bash
# tests/e2e/security-tests.sh - trust boundaries (issue 9), in the test VM.
#
#   security-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM, after hardening-tests.sh in the same boot
# (tests/e2e/run.sh hardening). Every scenario is set up as the attacker would:
# a real container (runc, and crun where the runtime matters) whose annotations,
# config.json or processes try to reach the host, another tenant's TPM, or a
# device number that outlived its TPM. Checked afterwards: the host side did not
# change (a victim directory's names, types, modes, owners, sizes, mtimes, inodes
# and contents; the state root's listing; the CA), no secret of another TPM was
# read, a refusal is exactly one error line, the expected one word for word (in
# the hook log and in the runtime's stderr), and nothing is left (no vtpm-emu, no /sys/class/tpm chip,
# no run record).
#
#  1 ann-*            annotations naming a host dir (managed: deleted at teardown), key files
#  2 config-*, policy-*  statePath outside the allowed roots; the policy file (statePathRoots,
#                     annotationFields, its own checks)
#  3 other-tenant     another tenant's state dir, the state root, the CA dir, id "ca"
#  4 *run-as*         runAs by annotation (chown attack); an existing dir not the user's
#  5 key-file-*, password-file-fifo   FIFO, device, symlink, group-writable key files
#  6 symlink-*, bind-mount-*   a symlink / mount point below the root
#  7 leftover-*       a container without its own pid namespace: its init exits, a leftover
#                     process keeps opening /dev/tpm0 and /dev/tpmrm0 while a second container
#                     writes a secret into its own TPM (NV and PCR 16); container 1's device
#                     stays taken (emulator or keeper) while the leftover lives, then goes
#  8 killed-emulator  kill -9 of container 1's emulator, then container 2 writes a secret
#  9 stop-cont        kill -STOP of the emulator past the kernel's command time-out, -CONT;
#                     then a late write (the answer held by ptrace until the kernel has given
#                     up and queued the next command: EIO); answers of the right size after
#                     both, the emulator alive, the state intact after a restart
#  9b exit-window     the container ends while its emulator's save is held (state on a frozen
#                     fs): the chip goes at once (the keeper took it over), no kernel time-out
# 10 hook-sigkill     the hook SIGKILLed during setup, KILL_ROUNDS rounds: in turn at a random
#                     point, during the emulator's start, as the run record is written; at
#                     least one round of each of the last two; a killed setup's record is
#                     removed by the keeper (before issue 18's hole 6) or left for gc, which
#                     names and removes it at the end; nothing else is left
# 11 failed-after-hook  crun fails the start after the hook (no teardown comes): the record
#                     and the state are there, gc names and removes both
#  + default-path-entry1 (<root>/<id>@tpm1), control-chars (refused, escaped)
# Prints PASS:/FAIL: lines, notes, and "N passed, M failed". Exit status: 0 all passed,
# 1 some failed, 2 environment unusable. SEC_ONLY=regex selects scenarios; KILL_ROUNDS (12).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_WORK=/run/vtpm-sec
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/vtpm-hook}}
ONLY=${SEC_ONLY:-.}
KILL_ROUNDS=${KILL_ROUNDS:-12}
T=device:/dev/tpmrm0

preflight runc crun jq python3 tpm2_getrandom tpm2_nvdefine tpm2_nvwrite tpm2_nvread tpm2_pcrextend \
    timeout md5sum stat find sha256sum mount
echo "# kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/cgroup v2/;s/tmpfs/cgroup v1/'), tpm major $TPM_MAJOR"
echo "# $(runc --version | head -n1), $(crun --version | head -n1), hook $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES" "$E2E_WORK/fp"
T_START=$(now_ms)
MOUNTED=()
unmount_all() { local m; for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null; done; }
at_exit unmount_all

# ---------------------------------------------------------------- helpers
FAILS=()                        # findings of the current scenario (it goes on after one)
check() { WHY=""; "$@" || FAILS+=("${WHY:-$* failed}"); WHY=""; return 0; }
verdict() { [ ${#FAILS[@]} = 0 ] && return 0; local IFS='|'; why "${FAILS[*]}"; return 1; }

save_fp() { tree_fp "$2" > "$E2E_WORK/fp/$1"; }
check_fp() {   # check_fp NAME DIR: unchanged since save_fp NAME DIR
    local d
    tree_fp "$2" > "$E2E_WORK/fp/$1.now"
    d=$(diff "$E2E_WORK/fp/$1" "$E2E_WORK/fp/$1.now" | grep '^[<>]' | head -n 4 | tr '\n' ';')
    [ -z "$d" ] || { why "$2 changed: $d"; return 1; }
}
# the state root's top level (no new directory may appear there on a refusal)
root_listing() { ls -A "$STATE_ROOT" | sort | tr '\n' ' '; }
check_root_unchanged() {   # check_root_unchanged BEFORE
    local now; now=$(root_listing)
    [ "$now" = "$1" ] || { why "the state root changed: '$1' -> '$now'"; return 1; }
}

# make_victim DIR: a host directory with files, owners, modes and mtimes an attack could change
make_victim() {
    local d=$1
    rm -rf "$d"; mkdir -p "$d/sub"
    echo "victim config $d" > "$d/app.conf"; echo "nested data" > "$d/sub/data"
    ln -s app.conf "$d/link"
    chown 1234:1234 "$d/app.conf"; chown 0:0 "$d" "$d/sub" "$d/sub/data"
    chmod 0640 "$d/app.conf"; chmod 0750 "$d"; chmod 0700 "$d/sub"
    touch -h -d '2001-01-01 01:01:01' "$d/app.conf" "$d/sub/data" "$d/link" "$d/sub" "$d"
}

RAN_SCRIPT='echo CONTAINER-RAN
r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) && echo "RANDOM $r"'

# check_refused RT WANT: the last container_run was refused by the hook: the container did
# not run, exactly one error line in the hook log, and it is WANT, exactly (or, for a WANT
# "~ERE", a line the ERE matches whole: for a pid or a uid in it; build it with ere), and
# the hook's error exactly once in the runtime's stderr, one line
check_refused() {
    local rt=$1 want=$2 n line
    [ "$RC" != 0 ] || { why "'$rt run' exited 0: setup was not refused ($(grep -m1 '^RANDOM' "$BUNDLE/out"))"; return 1; }
    ! grep -q '^CONTAINER-RAN' "$BUNDLE/out" 2>/dev/null || { why "the container ran: setup was not refused"; return 1; }
    n=$(grep -c '\] error: ' "$LOG" 2>/dev/null); n=${n:-0}
    line=$(grep -m1 '\] error: ' "$LOG" 2>/dev/null | sed 's/^.*\] error: //')
    [ "$n" = 1 ] || { why "the hook log has $n error lines, wanted 1 ($rt: $(grep -o 'vtpm-hook: error: .*' "$BUNDLE/err" | head -c 250))"; return 1; }
    if [ "${want:0:1}" = "~" ]; then
        [[ $line =~ ^${want:1}$ ]] || { why "the error is not the one wanted (/^${want:1}\$/): $line"; return 1; }
    else
        [ "$line" = "$want" ] || { why "the error is not '$want': $line"; return 1; }
    fi
    if [ "$rt" = runc ]; then   # runc quotes the hook's stderr: one line = one \n
        n=$(grep -o 'vtpm-hook: error:' "$BUNDLE/err" | wc -l)
        [ "$n" = 1 ] || { why "runc's stderr has the hook's error $n times, wanted once: $(head -c 300 "$BUNDLE/err" | tr '\n' '|')"; return 1; }
        n=$(grep -o 'stderr: .*' "$BUNDLE/err" | grep -o '\\n' | wc -l)
        [ "$n" = 1 ] || { why "the hook's stderr (quoted by runc) has $n lines"; return 1; }
    else   # crun does not relay a hook's stderr: it goes to run.oci.hooks.stderr (HOOK_ERR_JQ)
        grep -q 'error executing hook' "$BUNDLE/err" || { why "crun's stderr does not say the hook failed: $(head -c 300 "$BUNDLE/err")"; return 1; }
        n=$(grep -c . "$BUNDLE/hooks.err" 2>/dev/null); n=${n:-0}
        [ "$n" = 1 ] && grep -q '^vtpm-hook: error: ' "$BUNDLE/hooks.err" ||
            { why "the hooks' stderr (run.oci.hooks.stderr) has $n lines, wanted one error line: $(head -c 300 "$BUNDLE/hooks.err" 2>/dev/null | tr '\n' '|')"; return 1; }
    fi
    note "refused: $line"
}
# ere TEXT: TEXT as an ERE that matches it literally (for the fixed parts of a "~ERE" WANT)
ere() { sed 's/[][\.^$*+?(){}|]/\\&/g' <<< "$1"; }
# the refusals' fixed texts (the hook's exact lines)
FIELDS_DEFAULT='createCerts, pcrBanks, vtpmVersion'   # the default policy's annotationFields
not_by_ann() {   # not_by_ann FIELD [SOURCE [FIELDS]]: FIELD refused from an annotation
    printf '%s[0]: "%s" may not come from an annotation (policy annotationFields: %s)' \
        "${2:-annotations io.vtpm-hook.vtpm*}" "$1" "${3:-$FIELDS_DEFAULT}"
}
not_under() {   # not_under SOURCE PATH ROOTS: a statePath outside the allowed roots
    printf '%s[0]: "statePath" %s is not under an allowed state root (%s)' "$1" "$2" "$3"
}
# crun: the hooks' stderr into $BUNDLE/hooks.err (crun does not put it in its own stderr)
hook_err_jq() { printf '.annotations["run.oci.hooks.stderr"] = "%s/hooks.err"' "$BUNDLE"; }
# refused_run RT ID VTPMS EXTRA_JQ WANT [SCRIPT]: a container that must be refused, with the
# hook's error line WANT (see check_refused)
refused_run() {
    local rt=$1 id=$2 vt=$3 extra=$4 want=$5 script=${6:-$RAN_SCRIPT}
    BUNDLE=$BUNDLES/$id
    make_bundle "$rt" "$id" "$vt" "$script" "$extra | $(hook_err_jq)" || return 1
    : > "$LOG"                        # (a rerun of an id appends to the same log)
    container_run "$rt" "$id" || return 1
    timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
    check check_refused "$rt" "$want"
    # (NO_CLEAN_CHECK=1: another container legitimately runs meanwhile)
    [ -n "${NO_CLEAN_CHECK:-}" ] || check expect_clean "$id" "the refused '$rt run'"
    return 0
}
ok_run() {   # ok_run RT ID VTPMS EXTRA_JQ [SCRIPT]: a container that must work
    local rt=$1 id=$2 vt=$3 extra=$4 script=${5:-$RAN_SCRIPT}
    make_bundle "$rt" "$id" "$vt" "$script" "$extra" || return 1
    : > "$LOG"
    container_run "$rt" "$id" || return 1
    [ "$RC" = 0 ] && grep -q '^CONTAINER-RAN' "$BUNDLE/out" ||
        { why "'$rt run' of $id exited $RC: $(grep -o 'vtpm-hook: error: .*' "$BUNDLE/err" | head -c 300) $(tail -n 2 "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    expect_clean "$id" "'$rt run' of $id" || return 1
}
ann_jq() {   # ann_jq KEY VALUE ...: a jq filter setting these annotations (and no linux.vtpms)
    local j='{}'
    while [ $# -ge 2 ]; do j=$(jq -c --arg k "$1" --arg v "$2" '. + {($k): $v}' <<< "$j"); shift 2; done
    printf '.annotations = %s | del(.linux.vtpms)' "$j"
}
out_mount_jq() {   # a read-write bind mount of host DIR at /out
    printf '.mounts += [{"destination": "/out", "type": "bind", "source": "%s", "options": ["rbind", "rw"]}]' "$1"
}
policy_with() {   # policy_with NAME JSON: writes $E2E_WORK/NAME.json, sets POLICY
    POLICY=$E2E_WORK/$1.json; write_policy "$POLICY" "$2"
}
wait_gone() {   # wait_gone PID SECONDS
    local t0; t0=$(now_ms)
    while alive "$1"; do
        [ $(( $(now_ms) - t0 )) -lt $(( $2 * 1000 )) ] || return 1
        sleep 0.2
    done
}
# PCR value after one sha256 extend of a fresh (zero) PCR with digest HEX
pcr_after() { python3 -c 'import hashlib, sys; print(hashlib.sha256(bytes(32) + bytes.fromhex(sys.argv[1])).hexdigest())' "$1"; }
lock_holder() {   # lock_holder DIR: "pid" of a POSIX lock on DIR/.lock, "" when none
    local ino
    [ -e "$1/.lock" ] || return 0
    ino=$(stat -c %i "$1/.lock")
    grep -E "^[0-9]+: +POSIX .*:$ino " /proc/locks | awk '{print $5}' | head -n1
}
hook_ms() {   # hook_ms LOG: ms from the first line of the hook's log to its error line
    awk '{ split($1, a, "T"); split(a[2], b, ":"); t = (b[1] * 3600 + b[2] * 60 + b[3]) * 1000
           if (NR == 1) t0 = t; if ($0 ~ /\] error: /) { printf "%d", t - t0; exit } }' "$1" 2>/dev/null
}
chip_devs() {   # "tpmN=M:m ..." of every chip
    local c out=""
    for c in /sys/class/tpm/tpm*; do [ -e "$c/dev" ] && out+="${c##*/}=$(cat "$c/dev") "; done
    printf '%s' "${out% }"
}

# A raw TPM client for the containers (no tpm2-tools process per command; the node is opened
# for every command, as a process that outlived its container would). Both nodes are probed:
# /dev/tpm0 of the first chip is 10:224, a misc minor: an open while no chip has that number
# binds the node's inode to the misc driver (ENODEV from then on), which hides a later chip 0;
# /dev/tpmrm0 (and tpm1...) have no such fallback.
PROBE_PY='import errno, os, struct, sys, time
NODES = ["/dev/tpm0", "/dev/tpmrm0"]
def cmd(code, body=b"", tag=0x8001):
    return struct.pack(">HII", tag, 10 + len(body), code) + body
def getrandom(n=8):
    return cmd(0x17B, struct.pack(">H", n))
def pcr_read(pcr):
    sel = bytearray(3); sel[pcr // 8] |= 1 << (pcr % 8)
    return cmd(0x17E, struct.pack(">IHB", 1, 0x000B, 3) + bytes(sel))
def nv_read(index, size):          # owner authorisation, empty password (TPM_RS_PW)
    auth = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    return cmd(0x14E, struct.pack(">III", 0x40000001, index, len(auth)) + auth +
               struct.pack(">HH", size, 0), tag=0x8002)
def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def xfer(c, node="/dev/tpm0"):
    try:
        fd = os.open(node, os.O_RDWR)
    except OSError as e:
        return "ERR-open-" + ename(e)
    try:
        os.write(fd, c)
        r = os.read(fd, 4096)
    except OSError as e:
        return "ERR-io-" + ename(e)
    finally:
        os.close(fd)
    if len(r) < 10:
        return "ERR-short " + r.hex()
    return "rc=0x%x len=%d %s" % (struct.unpack(">I", r[6:10])[0], len(r), r.hex())
def now_ms():
    return int(time.time() * 1000)
def probes(idx, nodes=NODES):
    out = []
    for n in nodes:
        t = n[5:] + ":"
        out += [(t + "rand", xfer(getrandom(), n)), (t + "pcr16", xfer(pcr_read(16), n)),
                (t + "nvread", xfer(nv_read(idx, 16), n))]
    return out
def wait_file(path, secs):
    end = time.time() + secs
    while not os.path.exists(path):
        if time.time() > end:
            return False
        time.sleep(0.1)
    return True
def put(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)
mode = sys.argv[1]
if mode == "leftover":      # leftover LOG NVINDEX: fork a prober that outlives this process
    log, idx = sys.argv[2], int(sys.argv[3], 0)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open("/dev/null", os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        with open(log, "a", buffering=1) as f:
            f.write("%d START pid %d\n" % (now_ms(), os.getpid()))
            while True:
                for name, res in probes(idx):
                    f.write("%d %s %s\n" % (now_ms(), name, res))
                time.sleep(0.2)
    end = time.time() + 120
    while time.time() < end:  # until the prober got an answer from our own TPM
        try:
            if any(":rand rc=0x0 " in l for l in open(log)):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    print("LEFTOVER-STARTED pid %d" % pid, flush=True)
elif mode == "serve":       # serve DIR NVINDEX: one probe round per DIR/go-N (nodes listed in it)
    d, idx = sys.argv[2], int(sys.argv[3], 0)
    print("SERVE-READY", flush=True)
    n = 1
    while True:
        while not os.path.exists("%s/go-%d" % (d, n)):
            if os.path.exists(d + "/stop"):
                sys.exit(0)
            time.sleep(0.1)
        nodes = open("%s/go-%d" % (d, n)).read().split() or NODES
        put("%s/res-%d" % (d, n), "".join("%s %s\n" % p for p in probes(idx, nodes)))
        n += 1
elif mode == "timed":       # timed DIR COUNT: per DIR/go-N on /dev/tpm0 GetRandom(8 N) (or, when
    d, count = sys.argv[2], int(sys.argv[3])        # go-N says "clock", ReadClock), time, result
    print("TIMED-READY", flush=True)
    for n in range(1, count + 1):
        if not wait_file("%s/go-%d" % (d, n), 600):
            sys.exit(3)
        if open("%s/go-%d" % (d, n)).read().split()[:1] == ["clock"]:
            c, want = cmd(0x181), 35        # the kernel allows it 120 s (no duration class)
        else:
            c, want = getrandom(8 * n), 12 + 8 * n
        t0 = time.time()
        res = xfer(c)
        put("%s/res-%d" % (d, n), "elapsed_ms=%d want=%d %s\n" % ((time.time() - t0) * 1000, want, res))'
put_probe() { printf '%s\n' "$PROBE_PY" > "$BUNDLE/rootfs/root/tpmprobe.py"; }
probe_round() {   # probe_round DIR N SECONDS [NODE...]: ask the container's "serve" for round N
    echo "${*:4}" > "$1/go-$2"
    wait_file "$1/res-$2" "$3" || { why "probe round $2 got no answer within ${3}s"; return 1; }
}
# leak_in FILE SECRET_HEX PCR_HEX: lines of FILE that carry the secret or the PCR value
leak_in() { grep -e "$2" -e "$3" "$1" 2>/dev/null | head -n 3 | cut -c1-200 | tr '\n' ';'; }

answer_kinds() {   # answer_kinds < LOG: "count node result" summary of probe log lines
    awk '$2 != "START" { split($2, a, ":"); print a[1], substr($3, 1, 16) }' | sort | uniq -c |
        awk '{ printf "%s%s x%s", sep, $2 " " $3, $1; sep = ", " }'
}

# container 2 of scenarios 7 and 8: a secret in an NV index and in PCR 16 of its own TPM
secret_script() {   # secret_script NVINDEX SECRET DIGEST TAIL
    printf '%s\n' "set -e" "echo CONTAINER-RAN" "printf %s $2 > /tmp/s" \
        "tpm2_nvdefine -T $T $1 -C o -s 16 -a 'ownerread|ownerwrite' > /dev/null" \
        "tpm2_nvwrite -T $T $1 -C o -i /tmp/s" \
        "tpm2_pcrextend -T $T 16:sha256=$3" \
        "echo C2-SECRET-WRITTEN" "$4"
}

# ---------------------------------------------------------------- 1. annotations -> host paths
t_ann_managed() {   # state-path (a directory under /etc) + state-path-is-managed=true
    local rt=$1 id=sec-ann-managed-$1 v=/etc/vtpm-victim-$1 before
    make_victim "$v"; save_fp victim "$v"; before=$(root_listing)
    refused_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.state-path "$v" \
        io.vtpm-hook.state-path-is-managed true)" "$(not_by_ann statePath)" || return 1
    check check_fp victim "$v"
    check check_root_unchanged "$before"
    verdict
}
t_ann_vtpms() {   # io.vtpm-hook.vtpms JSON: statePath + managed, and a key file
    local rt=$1 id=sec-ann-vtpms-$1 v=/etc/vtpm-victim-vtpms before key=/etc/vtpm-victim-key
    make_victim "$v"; save_fp victim "$v"; before=$(root_listing)
    refused_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpms \
        "$(jq -nc --arg p "$v" '[{"statePath": $p, "statePathIsManaged": true}]')")" \
        "$(not_by_ann statePath "annotation io.vtpm-hook.vtpms")" || return 1
    check check_fp victim "$v"
    head -c 32 /dev/urandom > "$key"; chmod 600 "$key"; save_fp key "$key"
    refused_run "$rt" "$id-key" "" "$(ann_jq io.vtpm-hook.vtpms \
        "$(jq -nc --arg k "$key" '[{"encryptionKeyFile": $k}]')")" \
        "$(not_by_ann encryptionKeyFile "annotation io.vtpm-hook.vtpms")" || return 1
    check check_fp key "$key"
    check check_root_unchanged "$before"
    verdict
}

# ---------------------------------------------------------------- 2. statePath confinement
t_config_outside() {   # t_config_outside RT CASE
    local rt=$1 c=$2 id=sec-outside-$1-$2 out=/srv/vtpm-sec-outside-$1 p before n
    rm -rf "$out"; mkdir -p "$out"; save_fp outside "$out"; before=$(root_listing)
    case $c in   # p: the statePath; n: as the hook names it (normalised)
        plain)  p=$out/tpm; n=$p ;;
        dotdot) p=$STATE_ROOT/../escape-$rt; n=$E2E_WORK/escape-$rt ;;   # lexically
        root)   p=$STATE_ROOT; n=$p ;;                          # the root itself
    esac
    refused_run "$rt" "$id" "$(jq -nc --arg p "$p" '[{"statePath": $p, "statePathIsManaged": true}]')" . \
        "$(not_under linux.vtpms "$n" "$STATE_ROOT")" || return 1
    check check_fp outside "$out"
    [ ! -e "$E2E_WORK/escape-$rt" ] || FAILS+=("$E2E_WORK/escape-$rt was created")
    check check_root_unchanged "$before"
    verdict
}
t_policy_root() {   # statePathRoots admits a directory; a look-alike prefix stays outside
    local rt=$1 id=sec-policy-root-$1 proot=/srv/vtpm-sec-tpms evil=/srv/vtpm-sec-tpms-evil
    rm -rf "$proot" "$evil"; mkdir -p "$proot" "$evil"
    policy_with policy-root "$(jq -nc --arg r "$proot" '{"statePathRoots": [$r]}')" || return 1
    ok_run "$rt" "$id" "$(jq -nc --arg p "$proot/web-1" '[{"statePath": $p}]')" . || return 1
    [ -s "$proot/web-1/tpm2-00.permall" ] || FAILS+=("no tpm2-00.permall in $proot/web-1: $(ls -A "$proot/web-1" 2>&1 | tr '\n' ' ')")
    save_fp evil "$evil"
    refused_run "$rt" "$id-evil" "$(jq -nc --arg p "$evil/x" '[{"statePath": $p}]')" . \
        "$(not_under linux.vtpms "$evil/x" "$STATE_ROOT, $proot")" || return 1
    check check_fp evil "$evil"
    POLICY=""
    verdict
}
t_policy_checks() {   # the policy file's own rules, and annotationFields both ways
    local rt=runc id=sec-policy-chk v=/etc/vtpm-victim-pol aroot=/srv/vtpm-sec-ann before
    before=$(root_listing)
    policy_with policy-gw '{"statePathRoots": []}' || return 1; chmod 0664 "$POLICY"
    refused_run "$rt" "$id-gw" "" . "policy file $POLICY is writable by group or others" || return 1
    POLICY=$E2E_WORK/no-such-policy.json
    refused_run "$rt" "$id-missing" "" . "cannot open policy file $POLICY: No such file or directory" || return 1
    policy_with policy-unknown '{"statePathRoots": [], "allowEverything": true}' || return 1
    refused_run "$rt" "$id-unknown" "" . "policy file $POLICY: unknown key \"allowEverything\"" || return 1
    policy_with policy-none '{"annotationFields": []}' || return 1
    refused_run "$rt" "$id-none" "" "$(ann_jq io.vtpm-hook.vtpm 2)" \
        "$(not_by_ann vtpmVersion "" none)" || return 1
    # the administrator's opt-in: statePath by annotation, under a policy root only
    rm -rf "$aroot"; mkdir -p "$aroot"; make_victim "$v"; save_fp victim "$v"
    policy_with policy-ann "$(jq -nc --arg r "$aroot" \
        '{"statePathRoots": [$r], "annotationFields": ["vtpmVersion", "pcrBanks", "createCerts", "statePath"]}')" || return 1
    ok_run "$rt" "$id-ann-ok" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.state-path "$aroot/x")" || return 1
    [ -s "$aroot/x/tpm2-00.permall" ] || FAILS+=("opt-in: no state in $aroot/x")
    refused_run "$rt" "$id-ann-victim" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.state-path "$v")" \
        "$(not_under "annotations io.vtpm-hook.vtpm*" "$v" "$aroot")" || return 1
    check check_fp victim "$v"
    POLICY=""
    check check_root_unchanged "$before"
    verdict
}

# ---------------------------------------------------------------- 3. another tenant
TENANT_NV=0x1500035
t_other_tenant() {
    local rt=runc a=sec-tenant-a secret before aroot=/srv/vtpm-sec-ann3 b vt
    secret=$(gen_secret)
    # A: default statePath, createCerts (the CA appears in <state-root>/ca), a secret in NV
    ok_run "$rt" "$a" '[{"createCerts": true}]' . "set -e
echo CONTAINER-RAN
printf %s $secret > /tmp/s
tpm2_nvdefine -T $T $TENANT_NV -C o -s 16 -a 'ownerread|ownerwrite|authread|authwrite' > /dev/null
tpm2_nvwrite -T $T $TENANT_NV -C o -i /tmp/s" || return 1
    [ -s "$STATE_ROOT/$a/tpm2-00.permall" ] && [ -d "$STATE_ROOT/ca" ] ||
        { why "tenant A's state or the CA is missing: $(ls -A "$STATE_ROOT" "$STATE_ROOT/$a" 2>&1 | tr '\n' ' ')"; return 1; }
    save_fp tenant-a "$STATE_ROOT/$a"; save_fp ca "$STATE_ROOT/ca"; before=$(root_listing)
    note "state root: $before; CA dir: $(ls -A "$STATE_ROOT/ca" | tr '\n' ' ')"
    local B_SCRIPT="echo CONTAINER-RAN
tpm2_nvread -T $T $TENANT_NV -C o -s 16 -o /tmp/r && echo \"NV \$(cat /tmp/r)\""
    b_check() {   # after each attempt: A, the CA and the root unchanged, A's secret not read
        check check_fp tenant-a "$STATE_ROOT/$a"
        check check_fp ca "$STATE_ROOT/ca"
        check check_root_unchanged "$before"
        ! grep -q "$secret" "$BUNDLE/out" 2>/dev/null || FAILS+=("$1: B read A's secret from NV")
    }
    for b in "$STATE_ROOT/$a" "$STATE_ROOT" "$STATE_ROOT/ca"; do
        refused_run "$rt" sec-tenant-b "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.state-path "$b")" \
            "$(not_by_ann statePath)" "$B_SCRIPT" || return 1
        b_check "annotation $b"
    done
    # with statePath allowed by annotation (policy opt-in), the state root is still out of reach
    rm -rf "$aroot"; mkdir -p "$aroot"
    policy_with policy-ann3 "$(jq -nc --arg r "$aroot" \
        '{"statePathRoots": [$r], "annotationFields": ["vtpmVersion", "pcrBanks", "createCerts", "statePath"]}')" || return 1
    refused_run "$rt" sec-tenant-b "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.state-path "$STATE_ROOT/$a")" \
        "$(not_under "annotations io.vtpm-hook.vtpm*" "$STATE_ROOT/$a" "$aroot")" "$B_SCRIPT" || return 1
    b_check "annotation (policy opt-in) $STATE_ROOT/$a"
    POLICY=""
    # config.json: the state root itself, the CA's directory
    refused_run "$rt" sec-tenant-b "$(jq -nc --arg p "$STATE_ROOT" '[{"statePath": $p}]')" . \
        "$(not_under linux.vtpms "$STATE_ROOT" "$STATE_ROOT")" "$B_SCRIPT" || return 1
    b_check "config.json $STATE_ROOT"
    refused_run "$rt" sec-tenant-b "$(jq -nc --arg p "$STATE_ROOT/ca" '[{"statePath": $p}]')" . \
        "linux.vtpms[0]: \"statePath\" $STATE_ROOT/ca overlaps $STATE_ROOT/ca, which the hook keeps for itself" \
        "$B_SCRIPT" || return 1
    b_check "config.json $STATE_ROOT/ca"
    # container id "ca" with the default statePath (the CA's directory)
    refused_run "$rt" ca "" . \
        "container id \"ca\" names $STATE_ROOT/ca, which the hook keeps for itself; give this container a statePath" \
        "$B_SCRIPT" || return 1
    b_check "container id ca"
    # config.json naming A's directory while A runs: in use
    make_bundle "$rt" "$a" "" 'exec sleep 600' || return 1
    CLEANUP+=("$rt $a")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$BUNDLE" "$a" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "A ('$rt run -d') failed: $(tail -n 2 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    NO_CLEAN_CHECK=1 refused_run "$rt" sec-tenant-b "$(jq -nc --arg p "$STATE_ROOT/$a" '[{"statePath": $p}]')" . \
        "~$(ere "state dir $STATE_ROOT/$a is in use by process ")[0-9]+" "$B_SCRIPT" || return 1
    ! grep -q "$secret" "$BUNDLE/out" 2>/dev/null || FAILS+=("config.json A's dir while A runs: B read A's secret")
    timeout 60 "$rt" delete -f "$a" > /dev/null 2>&1
    # A's TPM still holds its secret
    ok_run "$rt" "$a" "" . "echo CONTAINER-RAN
tpm2_nvread -T $T $TENANT_NV -C o -s 16 -o /tmp/r && echo \"NV \$(cat /tmp/r)\"" || return 1
    grep -qx "NV $secret" "$BUNDLE/out" || FAILS+=("A's NV index afterwards: '$(grep -m1 '^NV' "$BUNDLE/out")', written '$secret'")
    verdict
}

# ---------------------------------------------------------------- 4. runAs
t_run_as_victim() {   # run-as + state-path: the host dir would be chowned to the user
    local rt=$1 id=sec-runas-victim-$1 v=/etc/vtpm-victim-runas before
    make_victim "$v"; save_fp victim "$v"; before=$(root_listing)
    refused_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.run-as 1234:1234 \
        io.vtpm-hook.state-path "$v")" "$(not_by_ann runAs)" || return 1
    check check_fp victim "$v"
    check check_root_unchanged "$before"
    verdict
}
t_run_as_alone() {   # run-as alone (default statePath): refused by the default policy
    local rt=$1 id=sec-runas-alone-$1 before
    before=$(root_listing)
    refused_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.run-as nobody)" "$(not_by_ann runAs)" || return 1
    [ ! -e "$STATE_ROOT/$id" ] || FAILS+=("$STATE_ROOT/$id was created: $(stat -c '%U:%G %a' "$STATE_ROOT/$id")")
    check check_root_unchanged "$before"
    verdict
}
t_run_as_policy() {   # runAs allowed by the policy: an existing root-owned dir is not handed over
    local rt=$1 id=sec-runas-pol-$1 fresh=sec-runas-fresh-$1 own
    ok_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpm 2)" || return 1
    save_fp existing "$STATE_ROOT/$id"
    policy_with policy-runas '{"annotationFields": ["vtpmVersion", "pcrBanks", "createCerts", "runAs"]}' || return 1
    # (the directory's owner: root, or the user the emulators run as)
    refused_run "$rt" "$id" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.run-as nobody)" \
        "~$(ere "statePath $STATE_ROOT/$id belongs to uid ")[0-9]+$(ere ", not to the runAs uid $(id -u nobody) (the hook does not chown what it did not create)")" || return 1
    check check_fp existing "$STATE_ROOT/$id"
    # a fresh directory is the user's (the directory only; the emulator writes the files)
    ok_run "$rt" "$fresh" "" "$(ann_jq io.vtpm-hook.vtpm 2 io.vtpm-hook.run-as nobody)" || return 1
    own=$(cd "$STATE_ROOT/$fresh" 2>/dev/null && stat -c '%u:%g %n' . tpm2-00.permall | tr '\n' ';')
    note "opt-in, fresh dir: $own"
    [[ $own == "65534:65534 .;65534:65534 tpm2-00.permall;" ]] || FAILS+=("fresh state dir with runAs nobody: $own")
    POLICY=""
    verdict
}

# ---------------------------------------------------------------- 5. key files
t_key_file() {   # t_key_file RT KIND FIELD
    local rt=$1 kind=$2 field=$3 id=sec-$3-$2-$1 k t0 ms re before
    k=$E2E_WORK/$field-$kind-$rt
    rm -f "$k" "$k.real"
    local what="state key file"; [ "$field" = encryptionPasswordFile ] && what="password file"
    case $kind in
        fifo)    mkfifo -m 0600 "$k"; re="$what $k is not a regular file" ;;
        chardev) k=/dev/zero; re="$what $k is not a regular file" ;;
        symlink) head -c 32 /dev/urandom > "$k.real"; chmod 600 "$k.real"; ln -s "$k.real" "$k"
                 re="cannot open $what $k: Too many levels of symbolic links" ;;
        gwrite)  head -c 32 /dev/urandom > "$k"; chmod 0620 "$k"; re="$what $k is writable by group or others" ;;
    esac
    before=$(root_listing)
    refused_run "$rt" "$id" "$(jq -nc --arg f "$field" --arg k "$k" '[{($f): $k}]')" \
        '.hooks.prestart[0].timeout = 20' "$re" || return 1
    ms=$(sed -n 's/^FIGURE: [a-z]*_run_ms=\([0-9]*\).*/\1/p' <<< "${NOTES[*]}" | tail -n 1)
    note "'$rt run' with $field = $kind returned after ${ms:-?} ms; the hook's setup: $(hook_ms "$LOG") ms (first log line to the error)"
    [ "${ms:-99999}" -le 10000 ] || FAILS+=("'$rt run' took ${ms:-?} ms (> 10 s; the hook waited on the $kind?)")
    [ ! -e "$STATE_ROOT/$id" ] || FAILS+=("$STATE_ROOT/$id was created before the key file was checked")
    check check_root_unchanged "$before"
    verdict
}

# ---------------------------------------------------------------- 6. symlink / mount point below a root
t_symlink() {   # t_symlink RT CASE
    local rt=$1 c=$2 id=sec-sym-$2-$1 v=/etc/vtpm-victim-sym-$2 p before proot=/srv/vtpm-sec-proot want
    make_victim "$v"
    case $c in
        last)   ln -sfn "$v" "$STATE_ROOT/link-last"; p=$STATE_ROOT/link-last ;;
        middle) ln -sfn "$v" "$STATE_ROOT/link-mid"; p=$STATE_ROOT/link-mid/tpm ;;
        bind)   mkdir -p "$STATE_ROOT/mnt"; mount --bind "$v" "$STATE_ROOT/mnt" || { why "mount --bind failed"; return 1; }
                MOUNTED+=("$STATE_ROOT/mnt"); p=$STATE_ROOT/mnt ;;
        policy-root) rm -rf "$proot"; mkdir -p "$proot"; ln -s "$v" "$proot/link"; p=$proot/link/tpm
                policy_with policy-sym "$(jq -nc --arg r "$proot" '{"statePathRoots": [$r]}')" || return 1 ;;
    esac
    want="statePath $p has a symbolic link in it: Too many levels of symbolic links"
    [ "$c" = bind ] && want="statePath $p crosses a mount point or leaves its root: Invalid cross-device link"
    save_fp victim "$v"; before=$(root_listing)
    refused_run "$rt" "$id" "$(jq -nc --arg p "$p" '[{"statePath": $p, "statePathIsManaged": true}]')" . \
        "$want" || return 1
    if [ "$c" = bind ]; then umount "$STATE_ROOT/mnt"; MOUNTED=(); fi
    check check_fp victim "$v"
    check check_root_unchanged "$before"
    rm -f "$STATE_ROOT/link-last" "$STATE_ROOT/link-mid"; rmdir "$STATE_ROOT/mnt" 2>/dev/null
    POLICY=""
    verdict
}

# ---------------------------------------------------------------- 7. leftover process, shared pid namespace
NV_LEFT=0x1500031
t_leftover() {
    local rt=$1 id1=sec-left-$1-1 id2=sec-left-$1-2 out=$E2E_WORK/left-$1 emu1 lp t_exit t2 t2e secret digest pcr
    local win ok n leak b1 chip1 chip2="" sampler holders keep p
    rm -rf "$out"; mkdir -p "$out"
    secret=$(gen_secret); digest=$(printf '%s' "$secret" | sha256sum | cut -c1-64); pcr=$(pcr_after "$digest")
    # container 1: no pid namespace; its init forks the prober and exits
    make_bundle "$rt" "$id1" "" "echo CONTAINER-RAN; exec python3 /root/tpmprobe.py leftover /out/leftover.log $NV_LEFT" \
        "$(out_mount_jq "$out") | .linux.namespaces |= map(select(.type != \"pid\"))" || return 1
    put_probe; b1=$BUNDLE
    CLEANUP+=("$rt $id1"); DIAG+=("$b1/out" "$b1/err" "$out/leftover.log")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" create --bundle "$b1" "$id1" < /dev/null > "$b1/out" 2> "$b1/err" ) 2> /dev/null ||
        { why "'$rt create' of container 1 failed: $(tail -n 2 "$b1/err" | tr '\n' ' ')"; return 1; }
    emu1=$(live_emulators); chip1=$(chip_devs)
    [ "$(wc -w <<< "$emu1")" = 1 ] || { why "wanted one emulator after creating container 1: '$emu1'"; return 1; }
    timeout 60 "$rt" start "$id1" > /dev/null 2>> "$b1/err" || { why "'$rt start' of container 1 failed"; return 1; }
    wait_grep '^LEFTOVER-STARTED' "$b1/out" 120 || { why "container 1's prober did not start: $(tail -n 3 "$b1/out" "$b1/err" | tr '\n' ' ')"; return 1; }
    lp=$(sed -n 's/^LEFTOVER-STARTED pid //p' "$b1/out")
    wait_status "$rt" "$id1" stopped 30 || return 1
    t_exit=$(now_ms)
    note "container 1 ($chip1, emulator $emu1): init exited; leftover prober pid $lp lives on"
    sleep 3
    alive "$lp" || { why "the leftover process $lp died with container 1's init (the test needs it alive)"; return 1; }
    # its device number stays taken (by the emulator, or a keeper) while the leftover lives
    [ "$(chip_devs)" = "$chip1" ] ||
        FAILS+=("container 1's device ($chip1) was freed while its leftover process lives (chips now: '$(chip_devs)')")
    holders="emulator $emu1 $(alive "$emu1" && echo alive || echo gone), keeper(s) '$(live_keepers | tr '\n' ' ')'"
    note "3 s after init exit: $holders"
    # container 2 writes a secret into its own TPM and keeps it there a while
    t2=$(now_ms)
    make_bundle "$rt" "$id2" "" "$(secret_script "$NV_LEFT" "$secret" "$digest" 'sleep 6; echo C2-DONE')" || return 1
    ( wait_grep '^C2-SECRET-WRITTEN' "$BUNDLES/$id2/out" 120 && chip_devs > "$out/chips2" ) &
    sampler=$!
    container_run "$rt" "$id2" || return 1
    t2e=$(now_ms); wait "$sampler"; chip2=$(cat "$out/chips2" 2>/dev/null)
    [ "$RC" = 0 ] && grep -q '^C2-DONE' "$BUNDLE/out" ||
        { why "container 2 failed (rc $RC): $(grep -o 'vtpm-hook: error: .*' "$BUNDLE/err" | head -c 200) $(tail -n 2 "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    note "chips while container 2 held its secret: ${chip2:-?} (container 1 had: $chip1)"
    # what the leftover saw
    win=$(awk -v a="$t2" -v b="$t2e" '$1 >= a && $1 <= b' "$out/leftover.log")
    ok=$(grep -c ' rc=0x0 ' <<< "$win")
    n=$(grep -c . <<< "$win")
    note "leftover after init exit: $(awk -v a="$t_exit" '$1 >= a' "$out/leftover.log" | answer_kinds)"
    note "leftover while container 2 ran: $n answers, $ok rc=0: $(answer_kinds <<< "$win")"
    leak=$(leak_in "$out/leftover.log" "$(hexof "$secret")" "$pcr")
    [ -z "$leak" ] || FAILS+=("the leftover process read container 2's secret/PCR: $leak")
    [ "$ok" = 0 ] || FAILS+=("the leftover process got $ok successful TPM answers while container 2 ran (container 1's TPM is gone: they came from another TPM): $(grep -m1 ' rc=0x0 ' <<< "$win" | cut -c1-80)")
    [ "$n" -gt 0 ] || FAILS+=("the leftover process logged nothing while container 2 ran (no evidence)")
    # the leftover goes with container 1's delete; then its emulator/keeper and chip must go
    keep=$(live_keepers)
    timeout 60 "$rt" delete -f "$id1" > /dev/null 2>&1
    if alive "$lp"; then note "'$rt delete' left the leftover $lp alive: killed by the test"; kill -KILL "$lp"; fi
    for p in $emu1 $keep; do
        wait_gone "$p" 15 || FAILS+=("process $p ($(cat /proc/"$p"/comm 2>/dev/null)) still alive 15 s after container 1's last process was killed")
    done
    SETTLE_TIMEOUT=15 check expect_clean "$id1" "container 1 deleted, its leftover killed"
    verdict
}

# ---------------------------------------------------------------- 8. killed emulator
NV_KILL=0x1500032
t_killed_emu() {
    local rt=$1 id1=sec-kemu-$1-1 id2=sec-kemu-$1-2 out=$E2E_WORK/kemu-$1 emu1 dev1 dev2 secret digest pcr leak b1 b2 t0
    rm -rf "$out"; mkdir -p "$out"
    secret=$(gen_secret); digest=$(printf '%s' "$secret" | sha256sum | cut -c1-64); pcr=$(pcr_after "$digest")
    make_bundle "$rt" "$id1" "" "exec python3 /root/tpmprobe.py serve /out $NV_KILL" "$(out_mount_jq "$out")" || return 1
    put_probe; b1=$BUNDLE
    CLEANUP+=("$rt $id1"); DIAG+=("$b1/out" "$b1/err")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$b1" "$id1" < /dev/null > "$b1/out" 2> "$b1/err" ) 2> /dev/null ||
        { why "'$rt run -d' of container 1 failed: $(tail -n 2 "$b1/err" | tr '\n' ' ')"; return 1; }
    wait_grep '^SERVE-READY' "$b1/out" 90 || { why "container 1's prober did not start"; return 1; }
    emu1=$(live_emulators); dev1=$(chip_devs)
    probe_round "$out" 1 60 || return 1
    [ "$(grep -c ':rand rc=0x0 ' "$out/res-1")" = 2 ] || { why "container 1's own TPM does not answer: $(cut -c1-80 "$out/res-1" | tr '\n' ';')"; return 1; }
    kill -KILL "$emu1"
    t0=$(now_ms)
    while [ -n "$(tpm_chips)" ] && [ $(( $(now_ms) - t0 )) -lt 10000 ]; do sleep 0.2; done
    note "killed container 1's emulator $emu1 (its /dev/tpm0 is $dev1); chips now: '$(chip_devs)', keepers '$(live_keepers | tr '\n' ' ')'"
    probe_round "$out" 2 60 /dev/tpmrm0 || return 1     # (not tpm0: see PROBE_PY)
    note "container 1 with its emulator dead: $(cut -c1-40 "$out/res-2" | tr '\n' ';')"
    make_bundle "$rt" "$id2" "" "$(secret_script "$NV_KILL" "$secret" "$digest" 'exec sleep 600')" || return 1
    b2=$BUNDLE; CLEANUP+=("$rt $id2"); DIAG+=("$b2/out" "$b2/err")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$b2" "$id2" < /dev/null > "$b2/out" 2> "$b2/err" ) 2> /dev/null ||
        { why "'$rt run -d' of container 2 failed: $(tail -n 2 "$b2/err" | tr '\n' ' ')"; return 1; }
    wait_grep '^C2-SECRET-WRITTEN' "$b2/out" 120 || { why "container 2 did not write its secret: $(tail -n 3 "$b2/out" "$b2/err" | tr '\n' ' ')"; return 1; }
    dev2=$(chip_devs)
    note "chips with container 2 running: $dev2"
    probe_round "$out" 3 60 || return 1
    note "container 1's /dev/tpm0 after container 2 started: $(cut -c1-40 "$out/res-3" | tr '\n' ';')"
    leak=$(leak_in "$out/res-3" "$(hexof "$secret")" "$pcr")
    [ -z "$leak" ] || FAILS+=("container 1's nodes ($dev1) reach container 2's TPM ($dev2): it read the secret: $leak")
    grep -q 'rc=0x0 ' "$out/res-3" && FAILS+=("container 1's nodes ($dev1) answer successfully after its emulator was killed (container 2 has $dev2): $(grep 'rc=0x0 ' "$out/res-3" | cut -d' ' -f1 | tr '\n' ' ')")
    touch "$out/stop"
    timeout 60 "$rt" delete -f "$id2" > /dev/null 2>&1
    timeout 60 "$rt" delete -f "$id1" > /dev/null 2>&1
    check expect_clean "$id1" "both containers deleted"
    verdict
}

# ---------------------------------------------------------------- 9. stopped, then continued emulator
# LATE_PY PID FD FILE EXTRA: ptrace PID, hold its first write(FD) at syscall entry until FILE
# exists and EXTRA seconds more, print what the write returned. A deterministic late write:
# the kernel gave up on the command (time-out) and has sent the NEXT one when the answer to
# the first arrives (that is when the proxy says EIO; an answer that comes while no newer
# command is queued is taken silently). A kill -STOP usually catches the emulator idle, before
# it read the command, and then no late write happens at all.
LATE_PY='import ctypes, os, signal, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
SEIZE, INTERRUPT, SYSCALL, DETACH, GET_INFO = 0x4206, 0x4207, 24, 17, 0x420e
pid, fd, until, extra = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def pt(req, addr=None, data=None):
    if libc.ptrace(req, pid, addr, data) == -1:
        e = ctypes.get_errno(); raise OSError(e, "ptrace(%d): %s" % (req, os.strerror(e)))
pt(SEIZE, None, ctypes.c_void_p(1))            # PTRACE_O_TRACESYSGOOD
pt(INTERRUPT)
print("ATTACHED", flush=True)
info = ctypes.create_string_buffer(88)
held = False
while True:
    _, st = os.waitpid(pid, 0x40000000)        # __WALL
    if os.WIFEXITED(st) or os.WIFSIGNALED(st):
        print("EMULATOR-DIED", flush=True); sys.exit(2)
    sig, inject = os.WSTOPSIG(st), 0
    if sig == signal.SIGTRAP | 0x80:
        pt(GET_INFO, ctypes.c_void_p(88), info)
        op = info.raw[0]
        if op == 1 and not held:
            nr, a0 = struct.unpack_from("=QQ", info.raw, 24)
            if nr == 1 and a0 == fd:           # write(2) on the proxy fd
                print("WRITE-ENTRY held", flush=True)
                end = time.time() + 60
                while not os.path.exists(until) and time.time() < end:
                    time.sleep(0.05)
                time.sleep(extra); held = True
                print("WRITE-RELEASED", flush=True)
        elif op == 2 and held:
            rval = struct.unpack_from("=q", info.raw, 24)[0]
            print("WRITE-RETURNED %d %s" % (rval, os.strerror(-rval) if rval < 0 else "bytes"), flush=True)
            pt(DETACH); sys.exit(0)
    elif st >> 16 != 0x80:                     # not PTRACE_EVENT_STOP: a signal to pass on
        inject = sig
    pt(SYSCALL, None, ctypes.c_void_p(inject))'
NV_STOP=0x1500033
proxy_fd() {   # proxy_fd PID: the emulator's [vtpms] fd
    local f
    for f in /proc/"$1"/fd/*; do
        [[ $(readlink "$f" 2>/dev/null) == *vtpms* ]] && { echo "${f##*/}"; return 0; }
    done
    return 1
}
t_stop_cont() {
    local rt=$1 id=sec-stop-$1 out=$E2E_WORK/stop-$1 dir=$STATE_ROOT/stopcont-tpm secret emu n0 r el b vt fd tp i
    rm -rf "$out"; mkdir -p "$out"; secret=$(gen_secret)
    vt=$(jq -nc --arg p "$dir" '[{"statePath": $p}]')
    make_bundle "$rt" "$id" "$vt" "set -e
printf %s $secret > /tmp/s
tpm2_nvdefine -T $T $NV_STOP -C o -s 16 -a 'ownerread|ownerwrite' > /dev/null
tpm2_nvwrite -T $T $NV_STOP -C o -i /tmp/s
echo NV-WRITTEN
exec python3 /root/tpmprobe.py timed /out 5" "$(out_mount_jq "$out")" || return 1
    put_probe; b=$BUNDLE
    printf '%s\n' "$LATE_PY" > "$E2E_WORK/latewrite.py"
    CLEANUP+=("$rt $id"); DIAG+=("$b/out" "$b/err" "$E2E_WORK/stop-dmesg" "$out/late.out")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$b" "$id" < /dev/null > "$b/out" 2> "$b/err" ) 2> /dev/null ||
        { why "'$rt run -d' failed: $(tail -n 2 "$b/err" | tr '\n' ' ')"; return 1; }
    wait_grep '^TIMED-READY' "$b/out" 120 || { why "the container did not get ready: $(tail -n 3 "$b/out" "$b/err" | tr '\n' ' ')"; return 1; }
    emu=$(live_emulators)
    [ "$(wc -w <<< "$emu")" = 1 ] || { why "wanted one emulator: '$emu'"; return 1; }
    n0=$(dmesg | wc -l)
    # (a) kill -STOP past the kernel's time-out, kill -CONT
    kill -STOP "$emu"
    touch "$out/go-1"
    wait_file "$out/res-1" 200 || { kill -CONT "$emu"; why "GetRandom on the stopped emulator did not return within 200 s"; return 1; }
    r=$(cat "$out/res-1"); el=$(sed -n 's/^elapsed_ms=\([0-9]*\).*/\1/p' <<< "$r")
    note "SIGSTOP: GetRandom on /dev/tpm0 -> ${r:0:60} (kernel time-out after ${el:-?} ms)"
    [[ $r == *" ERR-"* ]] || FAILS+=("GetRandom on a stopped emulator did not fail: ${r:0:80}")
    sleep 1; kill -CONT "$emu"; sleep 2
    alive "$emu" || FAILS+=("the emulator $emu exited after SIGCONT")
    touch "$out/go-2"
    wait_file "$out/res-2" 60 || { why "GetRandom after SIGCONT did not return within 60 s"; return 1; }
    r=$(cat "$out/res-2"); note "after SIGCONT: ${r:0:50}"
    good_answer "$r" || FAILS+=("the command after SIGCONT, $WHY: ${r:0:70}")
    # (b) a late write: the emulator held at its write(2) of the answer until the kernel gave up
    fd=$(proxy_fd "$emu") || { why "no [vtpms] fd in /proc/$emu/fd: $(ls -l /proc/"$emu"/fd 2>&1 | tail -n +2 | awk '{print $NF}' | tr '\n' ' ')"; return 1; }
    timeout 120 python3 "$E2E_WORK/latewrite.py" "$emu" "$fd" "$out/go-4" 2 > "$out/late.out" 2>&1 &
    tp=$!
    wait_grep '^ATTACHED' "$out/late.out" 30 || { kill "$tp" 2>/dev/null; why "ptrace attach failed: $(head -c 200 "$out/late.out")"; return 1; }
    touch "$out/go-3"
    wait_file "$out/res-3" 120 || { kill "$tp" 2>/dev/null; why "GetRandom with the held write did not return within 120 s"; return 1; }
    r=$(cat "$out/res-3")
    [[ $r == *" ERR-"* ]] || FAILS+=("the command whose answer was held did not time out: ${r:0:60}")
    echo clock > "$out/go-4"          # the next command is queued when the held answer arrives
    wait "$tp" 2>/dev/null
    note "late write: GetRandom -> ${r:0:50}; tracer: $(tr '\n' ';' < "$out/late.out" | cut -c1-120)"
    grep -q '^WRITE-RETURNED -5 ' "$out/late.out" ||
        FAILS+=("the held write did not get EIO (no late write exercised): $(tr '\n' ';' < "$out/late.out" | cut -c1-200)")
    for i in 4 5; do
        [ "$i" = 4 ] || touch "$out/go-$i"
        touch "$out/go-$i"
        wait_file "$out/res-$i" 60 || { FAILS+=("command $i after the late write did not return within 60 s"); break; }
        r=$(cat "$out/res-$i")
        good_answer "$r" || FAILS+=("command $((i - 3)) after the late write, $WHY: ${r:0:70}")
        if [ "$i" = 4 ]; then
            note "the command queued behind the late write: ${r:0:50}"
            sleep 1
            alive "$emu" || FAILS+=("the emulator $emu exited after a late write (kernel time-out)")
        fi
    done
    WHY=""
    dmesg | tail -n +$((n0 + 1)) | grep -i tpm > "$E2E_WORK/stop-dmesg"
    note "after the late write: ${r:0:40}; kernel: $(sed 's/^\[[^]]*\] //' "$E2E_WORK/stop-dmesg" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    note "emulator log: $(grep 'vtpm-emu' "$LOG" | grep -v 'debug: TPM started\|info: serving' | sed 's/^[^]]*\] //' | cut -c1-90 | tr '\n' ';')"
    wait_status "$rt" "$id" stopped 60 || { FAILS+=("$WHY"); WHY=""; }
    timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
    check expect_clean "$id" "the container exited"
    # the state is intact: a new container on the same state reads the NV index
    ok_run crun "$id-2" "$vt" . "echo CONTAINER-RAN
tpm2_nvread -T $T $NV_STOP -C o -s 16 -o /tmp/r && echo \"NV \$(cat /tmp/r)\"" || { FAILS+=("$WHY"); WHY=""; }
    grep -qx "NV $secret" "$BUNDLE/out" || FAILS+=("after the restart the NV index reads '$(grep -m1 '^NV' "$BUNDLE/out")', written '$secret'")
    verdict
}
# ---------------------------------------------------------------- 9b. an emulator saving its state
# A container ends; its emulator stops reading the device and saves the state, which can take
# long on a loaded host: here it is held in that save (the state on an ext4 that fsfreeze
# holds). The device must not outlive the emulator's reading: a command on a proxy fd nobody
# reads waits for its time-out (2 s to 5 min) with the chip's locks held, and every vTPM is a
# host hwrng, so the kernel reads it inside another vTPM's removal (the "device outlived its
# emulator" of the self-test on demand). The emulator hands the device to the keeper before it
# saves; the keeper ends with the cgroup, and the chip goes while the save is still held.
t_exit_window() {
    local rt=$1 id=sec-exitwin-$1 out=$E2E_WORK/exitwin-$1 mnt=$E2E_WORK/exitwin-$1/mnt rc t0
    rm -rf "$out"; mkdir -p "$mnt"
    modprobe -q loop 2> /dev/null; modprobe -q ext4 2> /dev/null
    truncate -s 64M "$out/fs.img" && mkfs.ext4 -q -F "$out/fs.img" > /dev/null 2>&1 &&
        mount -o loop "$out/fs.img" "$mnt" || { why "cannot mount an ext4 image (loop, ext4)"; return 1; }
    exit_window_steps "$rt" "$id" "$out" "$mnt"; rc=$?
    fsfreeze -u "$mnt" 2> /dev/null
    t0=$(now_ms)   # the held save finishes once the fs thaws
    while [ -n "$(live_emulators)" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do sleep 0.2; done
    timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
    [ $rc = 0 ] && check expect_clean "$id" "the save finished"
    [ $rc = 0 ] && { [ -s "$mnt/$id/tpm2-00.permall" ] || FAILS+=("no state saved: $(ls "$mnt/$id" 2>&1 | tr '\n' ' ')"); }
    umount "$mnt" 2> /dev/null || umount -l "$mnt"
    [ $rc = 0 ] || return 1
    verdict
}
exit_window_steps() {
    local rt=$1 id=$2 out=$3 mnt=$4 chip emu n0 t0 gone
    [ -z "$(tpm_chips)" ] || { why "chips left from before: $(tpm_chips)"; return 1; }
    STATE_ROOT=$mnt make_bundle "$rt" "$id" "" "exec sleep 600" || return 1
    CLEANUP+=("$rt $id"); DIAG+=("$BUNDLE/err" "$LOG")
    ( timeout -k 5 "$RUN_TIMEOUT" "$rt" run -d --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'$rt run -d' failed: $(tail -n 2 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    chip=$(tpm_chips); emu=$(live_emulators)
    [ -n "$chip" ] && [ "$(wc -w <<< "$emu")" = 1 ] || { why "wanted one chip and emulator: '$chip', '$emu'"; return 1; }
    sync; fsfreeze -f "$mnt" || { why "fsfreeze failed"; return 1; }
    n0=$(dmesg | wc -l); t0=$(now_ms)
    timeout 30 "$rt" kill "$id" KILL > /dev/null 2>&1
    while [ -e "/sys/class/tpm/$chip" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do sleep 0.05; done
    gone=$(( $(now_ms) - t0 ))
    note "container killed, its emulator held in its save: $chip gone after $gone ms; emulator still saving: $(alive "$emu" && echo yes || echo no); proxy fd holders: '$(proxy_holders | tr '\n' ' ')'"
    alive "$emu" || { why "the emulator $emu exited: its save was not held, the scenario proves nothing"; return 1; }
    [ -e "/sys/class/tpm/$chip" ] && FAILS+=("$chip outlived its emulator's serving: still there 30 s after the container ended, while the emulator saves (holders: $(proxy_holders | tr '\n' ' '))")
    dmesg | tail -n +$((n0 + 1)) | grep -i "timed out" > "$out/dmesg" &&
        FAILS+=("the kernel waited on a device nobody read: $(head -n 2 "$out/dmesg" | tr '\n' ';')")
    return 0
}

good_answer() {   # good_answer "elapsed_ms=E want=W rc=0x0 len=L ...": success of the right size
    [[ $1 =~ want=([0-9]+)\ rc=0x0\ len=([0-9]+) ]] || { WHY="not a success"; return 1; }
    [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] || { WHY="wrong size (a stale answer)"; return 1; }
}

# ---------------------------------------------------------------- 10. the hook SIGKILLed during setup
# KILLER_PY HOOKPID MODE ARG RUNROOT RECORD LOG STATUS: SIGKILLs the hook (by pidfd: no reused
# pid) when MODE says: "delay" ARG s after it starts, "log" once its LOG has the line ARG (then
# a random 0-50 ms more: inside that step), "record" once RUNROOT/RECORD appears (inotify: as
# soon as the run record is written). Watches RUNROOT throughout: STATUS says whether the
# record had been written when the hook died ("killed record=1"), or that the hook ended first
# ("ended record=..."). Lingers 3 s after (see the wrapper).
KILLER_PY='import ctypes, os, random, select, signal, struct, sys, time
hook, mode, arg, runroot, rec, log, status = int(sys.argv[1]), *sys.argv[2:8]
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
if ino < 0 or libc.inotify_add_watch(ino, runroot.encode(), 0x100 | 0x80) < 0:   # CREATE, MOVED_TO
    sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
pfd = os.pidfd_open(hook)
seen = False
def drain():
    global seen
    try:
        data = os.read(ino, 65536)
    except BlockingIOError:
        return
    while data:
        n = struct.unpack_from("iIII", data)[3]
        if data[16:16 + n].split(b"\0")[0].decode() == rec:
            seen = True
        data = data[16 + n:]
out = open(status, "w", buffering=1)
out.write("READY\n")
t0, pos, fire_at = time.time(), 0, None
while True:
    r = select.select([ino, pfd], [], [], 0.005)[0]
    drain()
    if pfd in r:
        out.write("ended record=%d\n" % seen)
        break
    now = time.time()
    if fire_at is None:
        if mode == "delay":
            fire_at = t0 + float(arg)
        elif mode == "record" and seen:
            fire_at = now
        elif mode == "log":
            try:
                with open(log) as f:
                    f.seek(pos); text = f.read(); pos += len(text)
            except FileNotFoundError:
                text = ""
            if arg in text:
                fire_at = now + random.random() * 0.05
    if fire_at is not None and now >= fire_at:
        try:
            signal.pidfd_send_signal(pfd, signal.SIGKILL)
        except ProcessLookupError:
            out.write("ended record=%d\n" % seen)
            break
        select.select([pfd], [], [], 10)
        drain()                      # every record written before its death is queued by now
        out.write("killed record=%d after %d ms\n" % (seen, (now - t0) * 1000))
        break
time.sleep(3)'
NV_KILLHOOK=0x1500036
t_hook_sigkill() {
    local id=sec-killhook wrap=$E2E_WORK/kill-wrapper.sh killer=$E2E_WORK/killer.py tpm=$STATE_ROOT/killhook-tpm
    local data r rt mode arg rid st left t0 lk last vt kind out o
    local killed=0 survived=0 after_record=0 emu_start=0 other=0 by_keeper=0 orphans=() gone=() recs
    data=$(gen_secret)
    printf '%s\n' "$KILLER_PY" > "$killer"
    cat > "$wrap" <<'EOF'
#!/bin/bash
# the real hook, SIGKILLed by the killer (as runc kills a hook whose timeout expired), which is
# ready before the hook starts. The killer lingers before it exits: it is crun's child too once
# the hook is gone (crun is a subreaper), and crun 1.8 takes one SIGCHLD at a time, so a child
# exiting as the hook does hides the hook's exit and fails the container at crun's hook timeout.
rm -f "$KILL_STATUS"
python3 "$KILLER" $$ "$KILL_MODE" "$KILL_ARG" "$KILL_RUNROOT" "$KILL_RECORD" "$KILL_LOG" "$KILL_STATUS" \
    < /dev/null > /dev/null 2>&1 &
for _ in $(seq 600); do grep -q READY "$KILL_STATUS" 2> /dev/null && break; sleep 0.05; done
exec "$REAL_HOOK" "$@"
EOF
    chmod 755 "$wrap"
    # one statePath for every round, and an id of each round's own: the record a killed setup
    # leaves stays until gc, and a later setup of the same id would remove it
    vt=$(jq -nc --arg p "$tpm" '[{"statePath": $p}]')
    ok_run runc "$id-ok" "$vt" . "set -e
echo CONTAINER-RAN
printf %s $data > /tmp/s
tpm2_nvdefine -T $T $NV_KILLHOOK -C o -s 16 -a 'ownerread|ownerwrite' > /dev/null
tpm2_nvwrite -T $T $NV_KILLHOOK -C o -i /tmp/s" || return 1
    for r in $(seq 1 "$KILL_ROUNDS"); do
        rt=runc; (( r % 2 == 0 )) && rt=crun
        rid=$id-$r; st=$E2E_WORK/killround-$r.status
        # in turn: at a random point, during the emulator's start, as the record is written
        case $(( r % 3 )) in
            1) mode=delay; arg=$(awk -v r="$r" -v n="$KILL_ROUNDS" -v s="$RANDOM" 'BEGIN { srand(s); printf "%.3f", (r - 1) * 0.7 / (n > 1 ? n - 1 : 1) + rand() * 0.05 }') ;;
            2) mode=log; arg="starting the emulator for $tpm" ;;
            0) mode=record; arg=- ;;
        esac
        make_bundle "$rt" "$rid" "$vt" "$RAN_SCRIPT" \
            ".hooks.prestart[0].path = \"$wrap\" | .hooks.prestart[0].env = [\"PATH=/usr/sbin:/usr/bin:/sbin:/bin\",
               \"KILLER=$killer\", \"KILL_MODE=$mode\", \"KILL_ARG=$arg\", \"KILL_RUNROOT=$RUN_ROOT\",
               \"KILL_RECORD=$rid.json\", \"KILL_LOG=$LOG_DIR/$rid.log\", \"KILL_STATUS=$st\", \"REAL_HOOK=$HOOK\"]" || return 1
        DIAG+=("$st")
        : > "$LOG"
        t0=$(now_ms)
        container_run "$rt" "$rid" || return 1
        t0=$(( $(now_ms) - t0 ))
        [ "$t0" -lt 20000 ] || { cp "$BUNDLE/err" "$E2E_WORK/killround-$r.err"
            note "NOTE: round $r: '$rt run' took $t0 ms (runtime stderr: $(tr '\n' '|' < "$BUNDLE/err" | cut -c1-200))"; }
        timeout 60 "$rt" delete -f "$rid" > /dev/null 2>&1
        last=$(grep -v 'teardown\|torn down\|unknown container\|no run record\|no vTPM is recorded\|vtpm-emu\|vtpm-keep' "$LOG" | tail -n 1 | sed 's/^[^]]*\] //' | cut -c1-70)
        # what the killer saw: killed with the record written, killed before it, or too late
        if grep -q '^killed record=1' "$st" 2> /dev/null; then
            kind="killed after the run record was written"; after_record=$((after_record + 1))
        elif grep -q '^killed record=0' "$st" 2> /dev/null; then
            if grep -q 'starting the emulator for' "$LOG" && ! grep -q "is the container's" "$LOG"; then
                kind="killed during the emulator's start"; emu_start=$((emu_start + 1))
            else
                kind="killed (last log: $last)"; other=$((other + 1))
            fi
        elif grep -q '^ended' "$st" 2> /dev/null; then
            kind="setup ended before the kill"
        else
            FAILS+=("round $r ($rt, $mode): the killer did not report: $(head -c 200 "$st" 2> /dev/null)"); kind="no report"
        fi
        case $kind in
            killed*) killed=$((killed + 1))
                     [ "$RC" != 0 ] || FAILS+=("round $r ($rt, $mode): the hook was killed, but '$rt run' exited 0") ;;
            *) survived=$((survived + 1)) ;;
        esac
        # nothing may stay once the container is gone (bounded: the emulator notices its
        # container), but the run record of a setup killed after writing it: the keeper removed
        # it while it held a directory fd; since issue 18's hole 6, gc does (checked below)
        t0=$(now_ms)
        while :; do
            left=$(leftovers "$rid"); left=${left//"run record $RUN_ROOT/$rid.json exists"/}
            lk=$(lock_holder "$tpm")
            [ -n "$lk" ] && left+="; lock on $tpm/.lock held by $lk"
            [ -z "${left//[; ]/}" ] && break
            [ $(( $(now_ms) - t0 )) -lt 15000 ] || break
            sleep 0.2
        done
        [ -n "${left//[; ]/}" ] || left=""
        if [ -e "$RUN_ROOT/$rid.json" ]; then
            [ "${kind#killed after the run record}" != "$kind" ] ||
                FAILS+=("round $r ($rt, $mode): $kind, yet its run record is left")
            orphans+=("$rid"); kind+="; its record is left"
        elif [ "${kind#killed after the run record}" != "$kind" ]; then
            by_keeper=$((by_keeper + 1)); kind+="; its record is gone (keeper or teardown)"
        fi
        note "round $r: $rt, $mode ${arg:0:30}: $kind$(grep -q 'setup took' "$LOG" && echo "; the hook had finished")$([ -n "$left" ] && echo "; LEFT: $left")"
        if [ -n "$left" ]; then
            FAILS+=("round $r ($rt, $mode): left after the container is gone: $left"); force_clean
        fi
        # the next normal setup on the same state works and the state is intact
        ok_run "$rt" "$id-ok" "$vt" . "echo CONTAINER-RAN
tpm2_nvread -T $T $NV_KILLHOOK -C o -s 16 -o /tmp/r && echo \"NV \$(cat /tmp/r)\"" ||
            { FAILS+=("round $r: the next setup: $WHY"); WHY=""; force_clean; continue; }
        grep -qx "NV $data" "$BUNDLE/out" ||
            FAILS+=("round $r: NV index after the killed setup: '$(grep -m1 '^NV' "$BUNDLE/out")', written '$data'")
    done
    note "$KILL_ROUNDS rounds: $killed setups killed ($after_record after the run record was written, $emu_start during the emulator's start, $other elsewhere), $survived finished before the kill"
    [ "$after_record" -gt 0 ] || FAILS+=("no round killed the hook after it wrote the run record")
    [ "$emu_start" -gt 0 ] || FAILS+=("no round killed the hook during the emulator's start")
    # the records left (the runtime ran no teardown): each one is a killed setup's, gc names and
    # removes it, and nothing else is left
    gone=()
    for o in "${orphans[@]}"; do
        if [ -e "$RUN_ROOT/$o.json" ]; then gone+=("$o"); else by_keeper=$((by_keeper + 1)); fi
    done
    # (a record's measurement logs go with it: checked after gc below)
    recs=$(run_records | grep -v '^empty/\|^measurements/')
    for o in $recs; do
        [[ " ${gone[*]} " == *" ${o%.json} "* ]] || FAILS+=("a run record not of a killed setup is left: $o")
    done
    out=$(timeout 120 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" gc --unused-for 0 2>&1)
    for o in "${gone[@]}"; do
        grep -qx "$RUN_ROOT/$o.json" <<< "$out" || FAILS+=("gc did not name the orphaned record $o.json: $(tr '\n' '|' <<< "$out" | cut -c1-300)")
        [ ! -e "$RUN_ROOT/$o.json" ] || FAILS+=("gc left the orphaned record $o.json")
    done
    note "records of setups killed after writing them: $by_keeper removed by the keeper or a teardown, ${#gone[@]} left for gc and removed by it ($(grep -c '\.json$' <<< "$out") record(s) named by gc)"
    [ -z "$(run_records | grep -v '^empty/')" ] || FAILS+=("run records left after gc: $(run_records | tr '\n' ' ')")
    left=$(leftovers "")
    [ -z "$left" ] || FAILS+=("left after gc: $left")
    verdict
}

# ---------------------------------------------------------------- smaller ones
t_default_entry1() {   # two entries with default paths: <root>/<id> and <root>/<id>@tpm1
    local rt=$1 id=sec-entry1-$1
    ok_run "$rt" "$id" '[{}, {}]' . 'echo CONTAINER-RAN
tpm2_getrandom -T device:/dev/tpmrm1 --hex 8 > /dev/null && echo TPM1-OK' || return 1
    grep -q '^TPM1-OK' "$BUNDLE/out" || FAILS+=("/dev/tpmrm1 does not answer")
    [ -s "$STATE_ROOT/$id/tpm2-00.permall" ] || FAILS+=("no state in $STATE_ROOT/$id")
    [ -s "$STATE_ROOT/$id@tpm1/tpm2-00.permall" ] || FAILS+=("no state in $STATE_ROOT/$id@tpm1 (root: $(root_listing))")
    [ ! -e "$STATE_ROOT/$id/tpm1" ] || FAILS+=("entry 1's state is nested in entry 0's directory: $STATE_ROOT/$id/tpm1")
    verdict
}
t_control_chars() {   # control characters in a statePath: refused at parse time, escaped in the error
    local rt=$1 id=sec-ctl-$1 before p
    before=$(root_listing)
    p=$(printf '%s/ctl\033[31mred\007x' "$STATE_ROOT")
    refused_run "$rt" "$id" "$(jq -nc --arg p "$p" '[{"statePath": $p}]')" . \
        'linux.vtpms[0]: "statePath" contains a control character' || return 1
    ! grep -q $'[\033\007]' "$BUNDLE/err" || FAILS+=("raw control characters in $rt's stderr")
    ! grep -q $'[\033\007]' "$LOG" || FAILS+=("raw control characters in the hook log")
    check check_root_unchanged "$before"
    verdict
}

# ---------------------------------------------------------------- 11. a start failed after the hook
# The hook succeeds, the next prestart hook fails: crun fails the container and runs no poststop,
# so no teardown ever comes for the record (the keeper leaves it: the setup finished). gc, the
# administrator's remedy, removes it once the container's cgroup is gone, then its state.
t_failed_after_hook() {
    local id=sec-failafter out
    make_bundle crun "$id" "" "$RAN_SCRIPT" '.hooks.prestart += [{"path": "/bin/false"}]' || return 1
    : > "$LOG"
    container_run crun "$id" || return 1
    timeout 60 crun delete -f "$id" > /dev/null 2>&1
    [ "$RC" != 0 ] || FAILS+=("'crun run' exited 0 although a prestart hook failed")
    grep -q 'setup took' "$LOG" || FAILS+=("the hook did not finish its setup: $(tail -n 1 "$LOG")")
    wait_gone "$(live_emulators | head -n 1)" 20
    # the setup finished: its record stays until gc (crun runs no teardown); an empty run root
    # here is a bug (a keeper or something else removed the record of a finished setup)
    [ -e "$RUN_ROOT/$id.json" ] ||
        FAILS+=("no run record after the failed start (the record of a finished setup must stay until gc): run root has '$(run_records | tr '\n' ' ')'")
    [ -d "$STATE_ROOT/$id" ] || FAILS+=("no state $STATE_ROOT/$id after the failed start (nothing for gc to remove)")
    out=$(timeout 120 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" gc --unused-for 0 2>&1)
    note "gc: $(tr '\n' '|' <<< "$out" | cut -c1-300)"
    grep -qx "$RUN_ROOT/$id.json" <<< "$out" || FAILS+=("gc did not name the record: $(tr '\n' '|' <<< "$out" | cut -c1-300)")
    grep -qx "$STATE_ROOT/$id" <<< "$out" || FAILS+=("gc did not name the state $STATE_ROOT/$id")
    [ ! -e "$RUN_ROOT/$id.json" ] || FAILS+=("gc left the run record of the failed container")
    [ ! -e "$STATE_ROOT/$id" ] || FAILS+=("gc left the failed container's state $STATE_ROOT/$id")
    check expect_clean "$id" "gc after the failed start"
    verdict
}

# ---------------------------------------------------------------- run
# The template process, as the package's unit runs it: every container of this script that has a
# cgroup of its own gets its emulator from it (the kill, stop and exit-window scenarios included;
# container-tests.sh and compromise-tests.sh run the hook's own fork). Checked at the end.
TEMPLATE_LOG=$LOG_DIR/template.log
"$HOOK" --run-root "$RUN_ROOT" --log-file "$TEMPLATE_LOG" --log-level debug template > /dev/null 2>&1 &
TEMPLATE_PID=$!
at_exit 'kill "$TEMPLATE_PID" 2>/dev/null'
wait_grep "template $TEMPLATE_PID: serving" "$TEMPLATE_LOG" 60 || fatal "the template did not start: $(tail -c 300 "$TEMPLATE_LOG")"
# template-used: the emulators of this script's containers came from it
t_template_used() {
    local n k
    n=$(cat "$LOG_DIR"/*.log 2>/dev/null | grep -c "emulator [0-9]* forked by the template $TEMPLATE_PID")
    k=$(cat "$LOG_DIR"/*.log 2>/dev/null | grep -c "keeper [0-9]* forked by the template $TEMPLATE_PID")
    note "emulators forked by the template $TEMPLATE_PID: $n, keepers: $k"
    [ "$n" -ge 5 ] || { why "only $n emulators came from the template"; return 1; }
    [ "$k" -ge 5 ] || { why "only $k keepers came from the template"; return 1; }
    ! grep -hq 'the template .*\(stale\|failed\)' "$LOG_DIR"/*.log || { why "$(grep -h 'the template .*\(stale\|failed\)' "$LOG_DIR"/*.log | head -n 2 | tr '\n' ' ')"; return 1; }
    alive "$TEMPLATE_PID" || { why "the template $TEMPLATE_PID is gone"; return 1; }
}

run_if() { [[ $1 =~ $ONLY ]] && { FAILS=(); POLICY=""; scenario "$1" with_fails "${@:2}"; }; return 0; }
# with_fails FUNC ARGS...: a scenario that stops at a failed step reports the findings made
# before it too
with_fails() {
    "$@" && return 0
    local IFS='|'
    [ ${#FAILS[@]} = 0 ] || WHY="${FAILS[*]}${WHY:+|$WHY}"
    return 1
}

for rt in runc crun; do run_if "ann-state-path-managed-$rt" t_ann_managed "$rt"; done
run_if ann-vtpms-json-runc t_ann_vtpms runc
for c in plain dotdot root; do run_if "config-state-path-$c-runc" t_config_outside runc "$c"; done
run_if config-state-path-plain-crun t_config_outside crun plain
run_if policy-root-runc t_policy_root runc
run_if policy-checks-runc t_policy_checks
run_if other-tenant-runc t_other_tenant
run_if ann-run-as-victim-runc t_run_as_victim runc
run_if ann-run-as-alone-crun t_run_as_alone crun
run_if policy-run-as-runc t_run_as_policy runc
run_if key-file-fifo-runc t_key_file runc fifo encryptionKeyFile
run_if key-file-fifo-crun t_key_file crun fifo encryptionKeyFile
run_if password-file-fifo-runc t_key_file runc fifo encryptionPasswordFile
run_if key-file-chardev-runc t_key_file runc chardev encryptionKeyFile
run_if key-file-symlink-runc t_key_file runc symlink encryptionKeyFile
run_if key-file-group-writable-runc t_key_file runc gwrite encryptionKeyFile
for c in last middle policy-root; do run_if "symlink-state-path-$c-runc" t_symlink runc "$c"; done
run_if bind-mount-state-path-runc t_symlink runc bind
for rt in runc crun; do run_if "leftover-$rt" t_leftover "$rt"; done
run_if killed-emulator-runc t_killed_emu runc
run_if stop-cont-runc t_stop_cont runc
run_if exit-window-runc t_exit_window runc
run_if "hook-sigkill-$KILL_ROUNDS-rounds" t_hook_sigkill
run_if default-path-entry1-runc t_default_entry1 runc
run_if control-chars-runc t_control_chars runc
run_if failed-after-hook-crun t_failed_after_hook   # last: its gc takes every unused state
run_if template-used t_template_used

echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
