# shellcheck shell=bash
# tests/lib/harness.sh - the one pass/fail harness every shell test suite sources.
#
#   pass NAME               count a passed check, print "PASS: NAME"
#   fail NAME [WHY]         count a failed check, print "FAIL: NAME: WHY"
#   fatal WHY               the environment is unusable (not a test result): "ERROR: WHY",
#                           the summary line, exit 2
#   finish                  the summary line "N passed, M failed"; exit 0 when none failed, 1
#                           otherwise; 1 too when no check ran at all (a renamed scenario, a
#                           selection that matches nothing): nothing was proven. Under
#                           HARNESS_TALLY=FILE (guest-suite.sh: one suite of several scripts)
#                           it appends "PASSED FAILED" to FILE instead, and the suite fails
#                           when none of its scripts ran a check
#   at_exit CMD             run CMD (eval'd) when the suite exits, after the earlier ones; $? is
#                           the suite's exit status there (which CMD cannot change)
#   now_ms                  wall-clock milliseconds (no process spawned: under TCG each costs)
#   median                  numbers on stdin -> "MEDIAN (n=N, min A, max B)", or "none"
#   percentile P            numbers on stdin -> the P-th percentile (nearest rank), or "none"
#   start_standin [--no-wait]
#                           a container stand-in: `sleep` in a private mount namespace of its
#                           own, in the background (STANDIN=its pid; killed at exit). Returns
#                           once the namespace exists (unshare execs sleep only after
#                           unshare(CLONE_NEWNS)); --no-wait: call wait_standin PID later.
#                           Without the right to unshare: a plain sleep.
#   wait_standin PID        returns once the stand-in runs sleep (15 s at most; 1 after that)
#
# Every suite's exit status: 0 all passed, 1 some failed, 2 the environment is unusable.
PASSED=0
FAILED=0
STANDIN=""
_HARNESS_EXIT=()
_HARNESS_STANDINS=()

pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $1${2:+: $2}"; }
fatal() { echo "ERROR: $*"; echo "$PASSED passed, $FAILED failed (environment unusable)"; exit 2; }
finish() {
    echo "$PASSED passed, $FAILED failed"
    if [ -n "${HARNESS_TALLY:-}" ]; then
        echo "$PASSED $FAILED" >> "$HARNESS_TALLY"
    elif [ $((PASSED + FAILED)) = 0 ]; then
        echo "FAIL: no check ran (nothing selected, or every scenario renamed)"; exit 1
    fi
    [ "$FAILED" = 0 ] && exit 0
    exit 1
}

at_exit() { _HARNESS_EXIT+=("$1"); }
_harness_on_exit() {
    local rc=$? c p
    for c in "${_HARNESS_EXIT[@]}"; do (exit "$rc"); eval "$c"; done  # each sees the status
    for p in "${_HARNESS_STANDINS[@]}"; do kill "$p" 2>/dev/null; done
    return "$rc"
}
trap _harness_on_exit EXIT

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $(( t / 1000 )); }

median() {
    sort -n | awk 'NF {a[++n] = $1} END { if (n) printf "%s (n=%d, min %s, max %s)", a[int((n + 1) / 2)], n, a[1], a[n]; else printf "none" }'
}
percentile() {
    sort -n | awk -v p="$1" 'NF {a[++n] = $1} END { if (!n) { printf "none"; exit }
        i = int((p * n + 99) / 100); if (i < 1) i = 1; printf "%s", a[i] }'
}

start_standin() {
    if unshare --mount --propagation private true 2>/dev/null; then
        unshare --mount --propagation private sleep 100000 < /dev/null > /dev/null 2>&1 &
    else
        sleep 100000 > /dev/null 2>&1 &
    fi
    STANDIN=$!
    _HARNESS_STANDINS+=("$STANDIN")
    [ "${1:-}" = --no-wait ] || wait_standin "$STANDIN"
}
wait_standin() {
    local t0 comm=""
    t0=$(now_ms)
    while :; do
        read -r comm < "/proc/$1/comm" 2>/dev/null
        [ "$comm" = sleep ] && return 0
        [ $(( $(now_ms) - t0 )) -lt 15000 ] || return 1
        sleep 0.05
    done
}
