#!/bin/bash
# tests/e2e/run.sh - run the end-to-end container tests (runs on the HOST).
#
#   tests/e2e/run.sh [path/to/vtpm-hook]      default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Boots ONE test VM with tests/vm/run-vm.sh (the host / is visible in the guest
# at the same paths, so the hook binary and these scripts are used in place)
# and runs tests/e2e/container-tests.sh in it. The exit status is the test
# script's (0 all passed, 1 some failed, 2 unusable environment), or 255 when
# the VM itself failed (boot failure, guest hang, time-out).
# Environment: TIMEOUT (s, whole VM run; default 1200), E2E_ONLY (regex of
# scenario names), MANY (containers in many-N-concurrent, 20), and run-vm.sh's
# MEM (here 3072) SMP CGROUP=v1|v2 KEEP VERBOSE VMLAB_CACHE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run.sh: no vtpm-hook binary at $HOOK (build it: cmake -S $ROOT -B $ROOT/build && cmake --build $ROOT/build)" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")

export TIMEOUT=${TIMEOUT:-1200}
export MEM=${MEM:-3072}        # 20 concurrent containers (many-20-concurrent)
q() { printf '%q' "$1"; }
# The guest starts with an empty environment: pass what the test script reads.
CMD="export E2E_ONLY=$(q "${E2E_ONLY:-.}") VTPM_HOOK=$(q "$HOOK") MANY=$(q "${MANY:-20}");"
CMD+=" exec timeout -k 10 $((TIMEOUT - 30)) bash $(q "$HERE/container-tests.sh") $(q "$HOOK")"
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run.sh: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run.sh: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
