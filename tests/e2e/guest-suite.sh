#!/bin/bash
# tests/e2e/guest-suite.sh - inside the test VM (tests/e2e/run.sh SUITE starts it): runs the
# suite's scripts one after the other under one deadline and exits with the worst status.
#
#   guest-suite.sh SECONDS HOOK SCRIPT[@PHASE]...
#
# SCRIPT@PHASE runs SCRIPT with PHASE=PHASE in its environment (a suite that runs one script
# in parts, others between them).
# Worst first: 124/137 (a script did not finish in time), 2 (unusable environment), 1 (some
# scenario failed, or no script of the suite ran any), 0. A script that starts after the
# deadline gets 20 s.
set -u
budget=$1 hook=$2; shift 2
end=$((SECONDS + budget))
worst=0
export HARNESS_TALLY=/run/vtpm-suite-tally     # each script's "passed failed" (harness finish)
: > "$HARNESS_TALLY"
rank() { case $1 in 0) echo 0 ;; 1) echo 1 ;; 2) echo 2 ;; *) echo 3 ;; esac; }
for entry in "$@"; do
    script=${entry%@*} phase=""
    [[ $entry == *@* ]] && phase=${entry##*@}
    left=$((end - SECONDS)); [ "$left" -gt 20 ] || left=20
    PHASE=$phase timeout -k 10 "$left" bash "$script" "$hook"
    rc=$?
    echo "# ${entry##*/} exit status $rc"
    [ "$(rank "$rc")" -gt "$(rank "$worst")" ] && worst=$rc
done
ran=$(awk '{ n += $1 + $2 } END { print n + 0 }' "$HARNESS_TALLY")
if [ "$ran" = 0 ]; then
    echo "FAIL: no scenario ran in this suite (a selection that matches nothing?)"
    [ "$worst" = 0 ] && worst=1
fi
exit "$worst"
