#!/bin/bash
# tests/e2e/run-engines.sh - run the engine tests of vtpm-runc, the runtime wrapper: runc
# passthrough, containerd 1.6 (ctr) and Docker 20.10 (runs on the HOST).
#
#   tests/e2e/run-engines.sh [path/to/vtpm-hook]   default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Boots ONE test VM with tests/vm/run-vm.sh (the host / is visible in the guest at the same
# paths, so the binary, its vtpm-runc link and these scripts are used in place) and runs
# tests/e2e/engine-tests.sh in it. The engines are the host's programs: docker.io and
# containerd from Debian 12 (scripts/install-deps.sh installs them; their daemons need not run
# on the host: the test starts its own in the guest). The exit status is the test script's
# (0 all passed, 1 some failed, 2 unusable environment), 124 when the tests did not finish in
# time, or 255 when the VM itself failed (boot failure, guest hang, time-out): not a test
# result, retry.
# Environment: TIMEOUT (s, whole VM run; default 1200), E2E_ONLY (regex of scenario names),
# TIMES (start-time samples per variant, 3), and run-vm.sh's MEM (here 3072) SMP KEEP VERBOSE
# VMLAB_CACHE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run-engines.sh: no vtpm-hook binary at $HOOK (build it: cmake -S $ROOT -B $ROOT/build && cmake --build $ROOT/build)" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")
for t in containerd ctr dockerd; do
    command -v "$t" > /dev/null ||
        { echo "run-engines.sh: $t is not installed (apt-get install --no-install-recommends docker.io containerd); the guest uses the host's programs" >&2; exit 2; }
done

export TIMEOUT=${TIMEOUT:-1200}
export MEM=${MEM:-3072}
q() { printf '%q' "$1"; }
# The guest starts with an empty environment: pass what the test script reads.
CMD="export E2E_ONLY=$(q "${E2E_ONLY:-.}") VTPM_HOOK=$(q "$HOOK") TIMES=$(q "${TIMES:-3}");"
CMD+=" exec timeout -k 10 $((TIMEOUT - 30)) bash $(q "$HERE/engine-tests.sh") $(q "$HOOK")"
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run-engines.sh: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run-engines.sh: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
