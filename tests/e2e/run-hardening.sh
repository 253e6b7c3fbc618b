#!/bin/bash
# tests/e2e/run-hardening.sh - hostile-rootfs and load tests of vtpm-hook (runs on the HOST).
#
#   tests/e2e/run-hardening.sh [path/to/vtpm-hook]   default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Boots ONE test VM (tests/vm/run-vm.sh) and runs tests/e2e/hardening-tests.sh
# in it. Exit status: the test script's (0 all passed, 1 some failed, 2
# unusable environment), 124 the tests did not finish in time, 255 the VM
# itself failed (infrastructure, not a test result).
# Environment: TIMEOUT (s, whole VM run; default 780), HARD_ONLY (regex of
# scenario names), LOAD_N (50), LOAD_ROUNDS (3), LOAD_RUNC_N (50; 0 skips the
# runc round), and run-vm.sh's MEM (here 3072) SMP CGROUP KEEP VERBOSE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run-hardening.sh: no vtpm-hook binary at $HOOK" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")

export TIMEOUT=${TIMEOUT:-780}
export MEM=${MEM:-3072}        # 50 emulators + 50 runc containers at once
q() { printf '%q' "$1"; }
CMD="export HARD_ONLY=$(q "${HARD_ONLY:-.}") VTPM_HOOK=$(q "$HOOK") LOAD_N=$(q "${LOAD_N:-50}")"
CMD+=" LOAD_ROUNDS=$(q "${LOAD_ROUNDS:-3}") LOAD_RUNC_N=$(q "${LOAD_RUNC_N:-50}");"
CMD+=" exec timeout -k 10 $((TIMEOUT - 30)) bash $(q "$HERE/hardening-tests.sh") $(q "$HOOK")"
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run-hardening.sh: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run-hardening.sh: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
