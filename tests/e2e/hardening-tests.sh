#!/bin/bash
# tests/e2e/hardening-tests.sh - hostile root filesystems and load, in the test VM.
#
#   hardening-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM (tests/e2e/run.sh hardening boots it). Uses
# the helpers of lib.sh (make_bundle: the runtime's stock config + hooks).
#
# 1. Hostile rootfs, with runc and crun (stock configs) and with the hook run by
#    hand (`vtpm-hook setup`, the OCI state's pid a process in its own mount
#    namespace, `unshare -m`, whose root.path rootfs has the hostile layout in
#    plain view): /dev a symlink to a host directory, /dev/tpm0 a symlink to a
#    host file, a regular file, a fifo, a directory; `..` in root.path. With a
#    runtime, the tpm0-* cases drop the stock config's /dev tmpfs (which would
#    hide the image's /dev entries), so the hook meets them: it replaces a
#    symlink, file or fifo with its node and refuses a directory. A failed run
#    is accepted with one hook error line, when the hook finished its setup and
#    the runtime failed afterwards, or when the hook never ran (no hook log, no
#    hook in the runtime's error); a hook crash or hang fails. Checked on the host side afterwards: the host directory is
#    empty, the host files unchanged (content, inode, size, mtime, mode), no
#    device node appeared outside the container's root (scan of /tmp /run
#    /var/tmp /home /srv /opt /mnt and /dev); and the hook either gave a working
#    TPM or failed with one error line and left nothing behind (no vtpm-emu, no
#    /sys/class/tpm/tpm*, no run record).
# 2. Load: LOAD_N (50) vTPMs set up and torn down concurrently, LOAD_ROUNDS (3)
#    rounds by hand, then one round of LOAD_RUNC_N (50) runc containers
#    (create + delete -f): no leak afterwards (no vtpm-emu, no chips, no run
#    records, `vtpm-hook status` empty, no lock on a state dir's .lock in
#    /proc/locks, the shell's fd count unchanged). FIGURE: lines.
# Prints PASS:/FAIL: lines, FIGURE: lines and "N passed, M failed".
# Exit status: 0 all passed, 1 some failed, 2 environment unusable.
# HARD_ONLY=regex runs only the scenarios whose name matches.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_WORK=/run/vtpm-hard
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/vtpm-hook}}
ONLY=${HARD_ONLY:-.}
LOAD_N=${LOAD_N:-50}
LOAD_ROUNDS=${LOAD_ROUNDS:-3}
LOAD_RUNC_N=${LOAD_RUNC_N:-50}
# places where a hook that escaped a rootfs could leave a device node (the
# rest of / is the host's read-only tree over 9p: too big to walk under TCG)
SCAN_DIRS="/tmp /run /var/tmp /home /srv /opt /mnt"

preflight runc crun jq python3 unshare nsenter timeout find stat md5sum
echo "# kernel $(uname -r), $(runc --version | head -n1), $(crun --version | head -n1), hook $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES" "$E2E_WORK/hand"
T_START=$(now_ms)

# ---------------------------------------------------------------- host-side evidence
# device nodes outside the container roots, and /dev (compared after everything
# settled: the kernel's own /dev/tpmN nodes come and go with the chips)
dev_snapshot() {   # dev_snapshot [PREFIX-ALLOWED...]
    local allowed=("$@") line p ok
    { find $SCAN_DIRS -xdev \( -type c -o -type b \) -printf '%p %i %y\n' 2>/dev/null
      find /dev -xdev -printf '%p %i %y\n' 2>/dev/null; } | sort |
    while read -r line; do
        p=${line%% *}; ok=1
        for a in "${allowed[@]}"; do [[ $p == "$a"/* ]] && ok=0; done
        [ $ok = 1 ] && echo "$line"
    done
}
file_fingerprint() {   # content + inode + size + mtime (ns) + mode/owner (not atime: md5sum reads it)
    [ -e "$1" ] || { echo "MISSING"; return; }
    echo "$(stat -c '%i %s %y %a %u:%g %F' "$1") $(md5sum < "$1" | cut -c1-32)"
}

# fixtures of one case: host dir H (must stay empty), host files T1 T2 (must not change)
HOST_FIX=()
make_host_fixtures() {
    local tag=$1
    H=$(mktemp -d "/tmp/hostdir-$tag-XXXX")
    T1=$(mktemp "/tmp/hosttarget-$tag-XXXX"); T2=$(mktemp "/tmp/hosttarget2-$tag-XXXX")
    echo "host secret $tag" > "$T1"; echo "host secret 2 $tag" > "$T2"
    touch -m -d '2002-02-02 00:00:00' "$T1" "$T2"
    H_INO=$(stat -c %i "$H"); FP1=$(file_fingerprint "$T1"); FP2=$(file_fingerprint "$T2")
    HOST_FIX+=("$H" "$T1" "$T2")
}
check_host_fixtures() {   # check_host_fixtures [runtime]: with a runtime, only tpm* entries in $H are the hook's
    [ -d "$H" ] && [ "$(stat -c %i "$H")" = "$H_INO" ] || { why "host dir $H replaced or gone"; return 1; }
    if [ -n "${1:-}" ] && [ -n "$(ls -A "$H")" ]; then
        note "RUNTIME ESCAPE: $1 itself wrote into the host dir $H (the rootfs's /dev symlink): $(ls -A "$H" | tr '\n' ' ')"
        ! compgen -G "$H/tpm*" > /dev/null || { why "TPM nodes in the host dir $H: $(stat -c '%A %t:%T %n' "$H"/tpm* | tr '\n' ';')"; return 1; }
    else
        [ -z "$(ls -A "$H")" ] || { why "host dir $H is not empty: $(ls -lA "$H" | tail -n +2 | tr '\n' ';')"; return 1; }
    fi
    [ "$(file_fingerprint "$T1")" = "$FP1" ] || { why "host file $T1 changed: was '$FP1', now '$(file_fingerprint "$T1")'"; return 1; }
    [ "$(file_fingerprint "$T2")" = "$FP2" ] || { why "host file $T2 changed: was '$FP2', now '$(file_fingerprint "$T2")'"; return 1; }
}
check_dev_snapshot() {   # check_dev_snapshot BEFORE-FILE ALLOWED...
    local before=$1 d; shift
    dev_snapshot "$@" > "$before.after"
    d=$(diff "$before" "$before.after" | grep '^[<>]' | head -n 5 | tr '\n' ';')
    [ -z "$d" ] || { why "device nodes / /dev changed outside the container root: $d"; return 1; }
}
settle() {   # wait (bounded) until no emulator and no chip is left
    local t0; t0=$(now_ms)
    while [ -n "$(live_emulators)$(live_keepers)$(tpm_chips)" ] && [ $(( $(now_ms) - t0 )) -lt 10000 ]; do sleep 0.1; done
}

# ---------------------------------------------------------------- hostile layouts
# hostile_layout CASE ROOTFS: put the hostile entries into a rootfs (made by make_rootfs)
hostile_layout() {
    local c=$1 r=$2
    case $c in
        dev-symlink-abs)      rm -rf "${r:?}/dev"; ln -s "$H" "$r/dev" ;;
        dev-symlink-abs-inside) rm -rf "${r:?}/dev"; ln -s "$H" "$r/dev"; mkdir -p "$r$H" ;;
        dev-symlink-rel)      rm -rf "${r:?}/dev"; ln -s "../../../../../../../../../..$H" "$r/dev" ;;
        tpm0-symlink)         ln -s "$T1" "$r/dev/tpm0"; ln -s "$T2" "$r/dev/tpmrm0" ;;
        tpm0-symlink-rel)     ln -s "../../../../../../../../..$T1" "$r/dev/tpm0"
                              ln -s "../../../../../../../../..$T2" "$r/dev/tpmrm0" ;;
        tpm0-file)            echo "image file" > "$r/dev/tpm0"; echo "image file" > "$r/dev/tpmrm0" ;;
        tpm0-fifo)            mkfifo "$r/dev/tpm0" "$r/dev/tpmrm0" ;;
        tpm0-dir)             mkdir -p "$r/dev/tpm0/sub"; echo x > "$r/dev/tpm0/sub/f" ;;
        tpmrm0-dir)           mkdir -p "$r/dev/tpmrm0/sub"; echo x > "$r/dev/tpmrm0/sub/f" ;;
        tpm0-hardlink)        ln "$T1" "$r/dev/tpm0" 2>/dev/null || ln -s "$T1" "$r/dev/tpm0" ;;
        *) ;;
    esac
}

# ---------------------------------------------------------------- by hand
# A process in its own (private) mount namespace stands in for the container:
# the hook works on ROOTFS as the container's root, and everything it does is
# visible from here (no runtime tmpfs hides the image's /dev).
start_sleeper() {
    start_standin || { why "the unshare stand-in $STANDIN did not start"; return 1; }
    SLEEPER=$STANDIN
}
wait_sleeper() { wait_standin "$1" || { why "the unshare stand-in $1 did not start"; return 1; }; }
# hook_by_hand SUBCOMMAND ID BUNDLE PID [extra options...]: sets HRC, HERR (stderr file)
hook_by_hand() {
    local sub=$1 id=$2 b=$3 pid=$4; shift 4
    HERR=$E2E_WORK/hand/$id.$sub.err
    jq -nc --arg id "$id" --arg b "$b" --argjson pid "$pid" \
        '{"ociVersion": "1.0.2", "id": $id, "status": "creating", "pid": $pid, "bundle": $b}' |
    ( cd / && exec timeout -k 5 "$HOOK_TIMEOUT" "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" \
        --log-file "$LOG_DIR/$id.log" "$@" "$sub" ) > /dev/null 2> "$HERR"
    HRC=$?
    DIAG+=("$HERR" "$LOG_DIR/$id.log")
}
# GetRandom(8) on a TPM node, opened in PID's mount namespace, chrooted into ROOTFS
GETRANDOM_PY='import os, struct, sys
os.chroot(sys.argv[1]); os.chdir("/")
fd = os.open(sys.argv[2], os.O_RDWR)
os.write(fd, struct.pack(">HIIH", 0x8001, 12, 0x17B, 8))
r = os.read(fd, 4096)
tag, size, rc = struct.unpack(">HII", r[:10])
print("RC 0x%x BYTES %s" % (rc, r[12:].hex()))
sys.exit(0 if rc == 0 and len(r) == 20 else 1)'
tpm_works_in() {   # tpm_works_in PID ROOTFS PATH
    timeout 20 nsenter -t "$1" -m python3 -c "$GETRANDOM_PY" "$2" "$3" 2>&1
}

t_hand() {
    local c=$1 id=hard-hand-$1 b=/tmp/hard-hand/$1 r rootpath=rootfs out before n
    make_host_fixtures "$c"
    mkdir -p "$b"; r=$b/rootfs; make_rootfs "$r"
    case $c in
        rootpath-dotdot)
            # lexically bundle/rootfs/../../../../../../../.. = /, so the root is /tmp/x-...: the
            # runtimes take it the same way (filepath.Abs); a decoy rootfs at the bundle stays untouched
            r=$(mktemp -d /tmp/x-rootfs-XXXX); HOST_FIX+=("$r"); make_rootfs "$r"
            rootpath="rootfs/../../../../../../../..$r" ;;
        rootpath-symlink-dotdot)
            # bundle/link -> $H/deep/a: "link/../rootfs" is bundle/rootfs lexically (what
            # runc/crun use), $H/deep/rootfs for the kernel: that decoy must stay untouched
            D=$(mktemp -d /tmp/decoy-XXXX); HOST_FIX+=("$D")
            mkdir -p "$D/deep/a" "$D/deep/rootfs/dev"; ln -s "$D/deep/a" "$b/link"
            rootpath="link/../rootfs" ;;
        rootpath-missing)
            # root.path names nothing: the hook must not fall back to the process's "/"
            # (here the sleeper's copy of the host's mount table: /dev is the host's devtmpfs)
            rootpath="does-not-exist" ;;
        *) hostile_layout "$c" "$r" ;;
    esac
    jq -n --arg p "$rootpath" '{"ociVersion": "1.0.2", "root": {"path": $p}, "process": {"args": ["true"]}}' > "$b/config.json"
    start_sleeper || return 1
    dev_snapshot "$r" > "$E2E_WORK/hand/$c.devs"
    hook_by_hand setup "$id" "$b" "$SLEEPER"
    note "setup exit $HRC, stderr: $(head -c 300 "$HERR" | tr '\n' '|')"
    case $HRC in 124|137) why "setup did not return within ${HOOK_TIMEOUT}s"; return 1 ;; esac
    if [ "$HRC" = 0 ] && [ "$c" = rootpath-missing ]; then
        why "setup succeeded although root.path names nothing; nodes now: $(ls -la /dev/tpm0 /dev/tpmrm0 2>&1 | tr '\n' ';') (host chips: $(tpm_chips))"
        hook_by_hand teardown "$id" "$b" "$SLEEPER"
        return 1
    elif [ "$HRC" = 0 ]; then
        # success: a working TPM inside the root, the nodes are character devices
        [ -c "$r/dev/tpm0" ] || [ -c "/proc/$SLEEPER/root$r/dev/tpm0" ] || [ "${c#dev-symlink}" != "$c" ] ||
            { why "setup succeeded but $r/dev/tpm0 is not a character device: $(ls -la "$r/dev/" | tr '\n' ';')"; return 1; }
        out=$(tpm_works_in "$SLEEPER" "$r" /dev/tpm0) ||
            { why "setup succeeded but GetRandom on /dev/tpm0 in the root failed: $out"; return 1; }
        note "inside the root: /dev/tpm0 answers GetRandom ($out)"
        out=$(tpm_works_in "$SLEEPER" "$r" /dev/tpmrm0) ||
            { why "setup succeeded but GetRandom on /dev/tpmrm0 in the root failed: $out"; return 1; }
        [ -f "$RUN_ROOT/$id.json" ] || { why "setup succeeded but wrote no run record"; return 1; }
        hook_by_hand teardown "$id" "$b" "$SLEEPER"
        [ "$HRC" = 0 ] || { why "teardown exit $HRC: $(head -c 300 "$HERR")"; return 1; }
        # what the hook replaced in the image is its business inside the root; say what it is now
        note "after: $(cd "$r" && find dev -maxdepth 1 -name 'tpm*' -printf '%p %y ' 2>/dev/null; [ -L "$r/dev" ] && find "$r$H" -maxdepth 1 -name 'tpm*' -printf '%p %y ' 2>/dev/null)"
    else
        [ "$(awk 'END { print NR }' "$HERR")" = 1 ] && [ -n "$(tr -d '[:space:]' < "$HERR")" ] ||
            { why "setup failed (exit $HRC) without exactly one stderr line: $(head -c 400 "$HERR" | tr '\n' '|')"; return 1; }
        [ ! -e "$RUN_ROOT/$id.json" ] || { why "failed setup left its run record"; return 1; }
        for n in "$r/dev/tpm0" "$r/dev/tpmrm0" "$r$H/tpm0" "$r$H/tpmrm0"; do
            [ ! -c "$n" ] || { why "failed setup left the node $n"; return 1; }
        done
        case $c in
            tpm0-dir) [ -f "$r/dev/tpm0/sub/f" ] || { why "the image's directory /dev/tpm0 was changed"; return 1; } ;;
            tpmrm0-dir) [ -f "$r/dev/tpmrm0/sub/f" ] || { why "the image's directory /dev/tpmrm0 was changed"; return 1; } ;;
        esac
    fi
    settle
    expect_clean "$id" "setup by hand ($c)" || return 1
    check_host_fixtures || return 1
    case $c in
        rootpath-symlink-dotdot)
            [ -z "$(ls -A "$D/deep/rootfs/dev")" ] || { why "the kernel-resolved decoy $D/deep/rootfs/dev got: $(ls -A "$D/deep/rootfs/dev" | tr '\n' ' ')"; return 1; }
            [ -c "$b/rootfs/dev/tpm0" ] || [ "$HRC" != 0 ] || { why "no node in the lexical root $b/rootfs/dev"; return 1; } ;;
        rootpath-missing|dev-symlink-abs|dev-symlink-rel) : ;;
    esac
    # the host view: for these cases no node may appear anywhere, rootfs included
    # (escapes to $H are caught above); for the others only inside the root
    check_dev_snapshot "$E2E_WORK/hand/$c.devs" "$r" || return 1
    kill "$SLEEPER" 2>/dev/null
}

# ---------------------------------------------------------------- runc / crun
HOSTILE_SCRIPT='if [ -c /dev/tpm0 ]; then echo "DEV /dev/tpm0 c $(stat -c %t:%T /dev/tpm0)"; else echo "NODEV /dev/tpm0 $(ls -la /dev/ 2>&1 | tr "\n" " ")"; fi
r=$(tpm2_getrandom -T device:/dev/tpm0 --hex 8) || { echo "getrandom failed rc=$?"; exit 3; }
echo "RANDOM $r"; echo TPM-OK'
t_runtime() {
    local rt=$1 c=$2 id=hard-$1-$2 r x before extra=. nodev="" n errs
    make_host_fixtures "$rt-$c"
    if [ "$c" = rootpath-dotdot ]; then
        x=$(mktemp -d /tmp/x-rootfs-XXXX); HOST_FIX+=("$x"); make_rootfs "$x"
        extra=".root.path = \"rootfs/../../../../../../../..$x\""
    fi
    # the image's /dev/tpm0 entries: the stock config's /dev tmpfs would hide them, so without
    # it (the runtime makes its nodes in the image's /dev) the hook meets them
    case $c in tpm0-*) nodev=1; extra='.mounts |= map(select(.destination != "/dev"))' ;; esac
    make_bundle "$rt" "$id" "" "$HOSTILE_SCRIPT" "$extra" || return 1
    r=$BUNDLE/rootfs; [ -n "${x:-}" ] && r=$x
    hostile_layout "$c" "$r"
    before=$E2E_WORK/$id.devs
    dev_snapshot > "$before"
    container_run "$rt" "$id" || return 1
    note "$rt run exit $RC: $(grep -E '^(DEV|NODEV|RANDOM)' "$BUNDLE/out" | head -c 300 | tr '\n' ';') $(grep -iE 'error|vtpm-hook' "$BUNDLE/err" | head -c 300 | tr '\n' '|')"
    errs=$(grep -c '\] error: ' "$LOG" 2>/dev/null); errs=${errs:-0}
    if [ "$RC" = 0 ]; then
        grep -q '^TPM-OK' "$BUNDLE/out" && grep -q '^DEV /dev/tpm0 c' "$BUNDLE/out" ||
            { why "'$rt run' exited 0 but the TPM did not work inside: $(tail -n 3 "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    else
        grep -q 'setup took' "$LOG" 2>/dev/null && grep -q '^TPM-OK' "$BUNDLE/out" &&
            { why "TPM worked but '$rt run' exited $RC"; return 1; }
        if [ "$errs" -gt 0 ]; then   # refused by the hook: one clear error line
            [ "$errs" = 1 ] || { why "the hook logged $errs error lines"; return 1; }
            note "hook refused: $(grep '\] error: ' "$LOG" | sed 's/^.*\] error: //' | head -c 250)"
        elif grep -qi 'hook' "$BUNDLE/err"; then   # a hook crash, kill or time-out: no refusal
            why "'$rt run' failed at the hook, which logged no error (crashed or hung?): $(tail -n 2 "$BUNDLE/err" | head -c 300 | tr '\n' '|')"; return 1
        elif grep -q 'setup took' "$LOG" 2>/dev/null; then   # the hook's work done, then the runtime's own error
            note "the hook's setup finished; $rt failed the container after it: $(tail -n 1 "$BUNDLE/err" | head -c 250)"
        elif [ -s "$LOG" ]; then
            why "'$rt run' failed; the hook ran ($(wc -l < "$LOG") log lines) but neither finished nor logged an error: $(grep -v 'vtpm-emu\|vtpm-keep' "$LOG" | tail -n 1 | head -c 200)"; return 1
        elif ! grep -q . "$BUNDLE/err"; then
            why "'$rt run' exited $RC without a word"; return 1
        else   # the runtime stopped before its hooks: the hook never ran, nothing to prove of it
            note "refused by $rt itself before the hook ran (no hook log): $(tail -n 2 "$BUNDLE/err" | head -c 250 | tr '\n' '|')"
        fi
    fi
    # what the hook does with the image's entries: replaces a symlink, file or fifo with its
    # node (never writing through), refuses a directory
    case $c in
        tpm0-symlink|tpm0-file|tpm0-fifo)
            [ "$RC" = 0 ] || { why "'$rt run' exited $RC: the hook should have replaced the image's /dev/tpm0 ($c)"; return 1; }
            [ -c "$r/dev/tpm0" ] && [ -c "$r/dev/tpmrm0" ] ||
                { why "the image's /dev/tpm0 and /dev/tpmrm0 are not the hook's nodes now: $(ls -la "$r"/dev/tpm* 2>&1 | tr '\n' ';')"; return 1; }
            note "the image's $c entries replaced by the hook's nodes: $(stat -c '%n %F %t:%T' "$r/dev/tpm0" "$r/dev/tpmrm0" | tr '\n' ';')" ;;
        tpm0-dir)
            [ "$RC" != 0 ] && [ "$(grep '\] error: ' "$LOG" | sed 's/^.*\] error: //')" = "the container's /dev/tpm0 is a directory; refusing to replace it" ] ||
                { why "wanted the hook's refusal of the image's directory /dev/tpm0: exit $RC, $(grep '\] error: ' "$LOG" | head -c 200)"; return 1; }
            [ -f "$r/dev/tpm0/sub/f" ] || { why "the image's directory /dev/tpm0 was changed"; return 1; } ;;
    esac
    timeout 60 "$rt" delete -f "$id" > /dev/null 2>&1
    settle
    expect_clean "$id" "'$rt run' ($c)" || return 1
    check_host_fixtures "$rt" || return 1
    # device nodes in the rootfs, as the host sees it: none (with no /dev tmpfs, the image's
    # /dev is the container's: the runtime's and the hook's nodes are there, and only there)
    n=$(find "$r" -xdev \( -type c -o -type b \) ${nodev:+-not -path "$r/dev/*"} 2>/dev/null)
    [ -z "$n" ] || { why "device nodes in the rootfs on the host side: $(tr '\n' ' ' <<< "$n")"; return 1; }
    if [ -n "$nodev" ]; then check_dev_snapshot "$before" "$r/dev" || return 1
    else check_dev_snapshot "$before" || return 1; fi
}

# ---------------------------------------------------------------- load
# LOAD_N vTPMs set up concurrently by hand (one unshare sleeper + minimal bundle
# each), checked, torn down concurrently; LOAD_ROUNDS rounds.
leak_report() {   # prints what is leaked ("" when nothing)
    local out="" e c st locks ino f
    e=$(live_emulators | wc -l); [ "$e" = 0 ] || out+="$e vtpm-emu alive; "
    e=$(live_keepers | wc -l); [ "$e" = 0 ] || out+="$e vtpm-keep alive; "
    c=$(tpm_chips); [ -z "$c" ] || out+="chips: $(echo "$c" | wc -w); "
    [ -z "$(run_records)" ] || out+="run records: $(run_records | head -n 3 | tr '\n' ' ')($(run_records | wc -l)); "
    e=$(proxy_holders | wc -l); [ "$e" = 0 ] || out+="$e process(es) holding a vTPM proxy fd; "
    # (a failed status is no empty table)
    st=$(timeout 20 "$HOOK" --run-root "$RUN_ROOT" status 2>&1) || out+="'vtpm-hook status' failed: $(head -c 200 <<< "$st" | tr '\n' ';'); "
    st=$(tail -n +2 <<< "$st")
    [ -z "$st" ] || out+="status lists: $(echo "$st" | head -c 200 | tr '\n' ';'); "
    # POSIX locks on any state dir's .lock (matched by inode)
    locks=""
    for f in "$STATE_ROOT"/*/.lock; do
        [ -e "$f" ] || continue
        ino=$(stat -c %i "$f")
        grep -E "^[0-9]+: +POSIX .*:$ino " /proc/locks > /dev/null && locks+="$f "
    done
    [ -z "$locks" ] || out+="locks held on: $locks; "
    printf '%s' "${out%; }"
}
t_load_hand() {
    local i id b pids=() round t0 ms setups_ms fd0 fd1 bad n left total_ms=0 msl
    fd0=$(ls /proc/$$/fd | wc -l)
    for i in $(seq -w 1 "$LOAD_N"); do
        b=$E2E_WORK/load/l$i; mkdir -p "$b/rootfs/dev"
        echo '{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}' > "$b/config.json"
        start_standin --no-wait
        LOAD_PIDS[$((10#$i))]=$STANDIN
        printf '{"ociVersion": "1.0.2", "id": "load-%s", "status": "creating", "pid": %d, "bundle": "%s"}\n' \
            "$i" "$STANDIN" "$b" > "$b/state.json"
    done
    for i in "${LOAD_PIDS[@]}"; do wait_sleeper "$i" || return 1; done
    for round in $(seq 1 "$LOAD_ROUNDS"); do
        t0=$(now_ms); pids=()
        for i in $(seq -w 1 "$LOAD_N"); do
            b=$E2E_WORK/load/l$i
            ( timeout -k 5 120 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" \
                --log-file "$LOG_DIR/load-$i.log" setup < "$b/state.json" > /dev/null 2> "$b/setup.err"
              echo $? > "$b/setup.rc" ) &
            pids+=($!)
        done
        wait "${pids[@]}"
        setups_ms=$(( $(now_ms) - t0 ))
        bad=""
        for i in $(seq -w 1 "$LOAD_N"); do
            b=$E2E_WORK/load/l$i
            [ "$(cat "$b/setup.rc")" = 0 ] || bad+="load-$i(rc $(cat "$b/setup.rc"): $(head -c 150 "$b/setup.err")) "
        done
        [ -z "$bad" ] || { why "round $round: setups failed: ${bad:0:600}"; tpm_dmesg 10 > "$E2E_WORK/dmesg.txt"; DIAG+=("$E2E_WORK/dmesg.txt"); return 1; }
        n=$(tpm_chips | wc -w); [ "$n" = "$LOAD_N" ] || { why "round $round: $n chips after $LOAD_N setups"; return 1; }
        n=$(live_emulators | wc -l); [ "$n" = "$LOAD_N" ] || { why "round $round: $n emulators after $LOAD_N setups"; return 1; }
        n=$("$HOOK" --run-root "$RUN_ROOT" status --json | jq '[.[] | select(.alive)] | length')
        [ "$n" = "$LOAD_N" ] || { why "round $round: status lists $n live vTPMs"; return 1; }
        # every container's node answers (a sample of 5: each probe is a process under TCG)
        for i in 01 $(printf '%02d' $((LOAD_N / 4))) $(printf '%02d' $((LOAD_N / 2))) $(printf '%02d' $((3 * LOAD_N / 4))) "$LOAD_N"; do
            b=$E2E_WORK/load/l$i
            msl=$(tpm_works_in "${LOAD_PIDS[$((10#$i))]}" "$b/rootfs" /dev/tpmrm0) ||
                { why "round $round: load-$i's /dev/tpmrm0 does not answer: $msl"; return 1; }
        done
        t0=$(now_ms); pids=()
        for i in $(seq -w 1 "$LOAD_N"); do
            b=$E2E_WORK/load/l$i
            ( timeout -k 5 120 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" \
                --log-file "$LOG_DIR/load-$i.log" teardown < "$b/state.json" > /dev/null 2> "$b/teardown.err"
              echo $? > "$b/teardown.rc" ) &
            pids+=($!)
        done
        wait "${pids[@]}"
        ms=$(( $(now_ms) - t0 ))
        bad=""
        for i in $(seq -w 1 "$LOAD_N"); do
            b=$E2E_WORK/load/l$i
            [ "$(cat "$b/teardown.rc")" = 0 ] || bad+="load-$i(rc $(cat "$b/teardown.rc"): $(head -c 150 "$b/teardown.err")) "
        done
        [ -z "$bad" ] || { why "round $round: teardowns failed: ${bad:0:600}"; return 1; }
        settle
        left=$(leak_report)
        [ -z "$left" ] || { why "round $round: leaked after teardown: $left"; return 1; }
        note "FIGURE: load_round_${round}_ms setup=$setups_ms teardown=$ms ($LOAD_N concurrent by hand)," \
             "setups/s=$(awk -v n="$LOAD_N" -v t="$setups_ms" 'BEGIN { printf "%.1f", n * 1000 / t }')"
        total_ms=$((total_ms + setups_ms + ms))
    done
    msl=$(cat "$LOG_DIR"/load-*.log | grep -o 'setup took [0-9]* ms' | awk '{print $3}')
    note "FIGURE: load_setup_ms $(median <<< "$msl"), p95 $(percentile 95 <<< "$msl") (hook's own time, $LOAD_N concurrent, $LOAD_ROUNDS rounds)"
    note "FIGURE: load_total_ms=$total_ms ($((LOAD_N * LOAD_ROUNDS)) setups + teardowns)"
    for i in "${LOAD_PIDS[@]}"; do kill "$i" 2>/dev/null; done
    fd1=$(ls /proc/$$/fd | wc -l)
    [ "$fd0" = "$fd1" ] || { why "the test shell's fd count changed: $fd0 -> $fd1"; return 1; }
    note "test shell fds: $fd0 before, $fd1 after"
}

# one round of real runc containers: create (prestart) + delete -f (poststop), all concurrent
t_load_runc() {
    local i id pids=() t0 ms_c ms_d bad="" n left
    for i in $(seq -w 1 "$LOAD_RUNC_N"); do
        make_bundle runc "hard-load-$i" "" 'true' || return 1
        CLEANUP+=("runc hard-load-$i")
    done
    DIAG=()
    t0=$(now_ms)
    for i in $(seq -w 1 "$LOAD_RUNC_N"); do
        id=hard-load-$i
        ( timeout -k 5 "$RUN_TIMEOUT" runc create --bundle "$BUNDLES/$id" "$id" < /dev/null > /dev/null 2> "$BUNDLES/$id/err"
          echo $? > "$BUNDLES/$id/rc" ) 2> /dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    ms_c=$(( $(now_ms) - t0 ))
    for i in $(seq -w 1 "$LOAD_RUNC_N"); do
        id=hard-load-$i
        [ "$(cat "$BUNDLES/$id/rc")" = 0 ] || bad+="$id(rc $(cat "$BUNDLES/$id/rc"): $(tail -n 1 "$BUNDLES/$id/err" | head -c 150)) "
    done
    [ -z "$bad" ] || { why "runc create failed: ${bad:0:600}"; DIAG+=("$LOG_DIR/${bad%%(*}.log"); return 1; }
    n=$(tpm_chips | wc -w); [ "$n" = "$LOAD_RUNC_N" ] || { why "$n chips after $LOAD_RUNC_N creates"; return 1; }
    t0=$(now_ms); pids=()
    for i in $(seq -w 1 "$LOAD_RUNC_N"); do
        ( timeout 120 runc delete -f "hard-load-$i" > /dev/null 2>&1 ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    ms_d=$(( $(now_ms) - t0 ))
    settle
    left=$(leak_report)
    [ -z "$left" ] || { why "leaked after deleting all: $left"; return 1; }
    note "FIGURE: load_runc_ms create=$ms_c delete=$ms_d ($LOAD_RUNC_N runc containers concurrently)," \
         "creates/s=$(awk -v n="$LOAD_RUNC_N" -v t="$ms_c" 'BEGIN { printf "%.1f", n * 1000 / t }')"
    local msl
    msl=$(for i in $(seq -w 1 "$LOAD_RUNC_N"); do grep -ho 'setup took [0-9]* ms' "$LOG_DIR/hard-load-$i.log"; done |
          awk '{print $3}' | median)
    note "FIGURE: load_runc_setup_ms $msl"
}

# ---------------------------------------------------------------- run
run_if() { [[ $1 =~ $ONLY ]] && scenario "$@"; return 0; }
declare -a LOAD_PIDS

for c in dev-symlink-abs dev-symlink-abs-inside dev-symlink-rel tpm0-symlink tpm0-symlink-rel \
         tpm0-file tpm0-fifo tpm0-dir tpmrm0-dir tpm0-hardlink rootpath-dotdot rootpath-symlink-dotdot; do
    run_if "hand-$c" t_hand "$c"
done
for rt in runc crun; do
    for c in dev-symlink-abs tpm0-symlink tpm0-file tpm0-fifo tpm0-dir rootpath-dotdot; do
        run_if "$rt-$c" t_runtime "$rt" "$c"
    done
done
run_if "load-hand-$LOAD_N-x$LOAD_ROUNDS" t_load_hand
[ "$LOAD_RUNC_N" -gt 0 ] && run_if "load-runc-$LOAD_RUNC_N" t_load_runc
# last: if the hook falls back to the process's "/" here, it writes into this VM's /dev
run_if hand-rootpath-missing t_hand rootpath-missing

echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
