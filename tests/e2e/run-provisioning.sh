#!/bin/bash
# tests/e2e/run-provisioning.sh - run the provisioning + podman end-to-end tests
# and the attestation tests (runs on the HOST).
#
#   tests/e2e/run-provisioning.sh [path/to/vtpm-hook]   default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Boots ONE test VM with tests/vm/run-vm.sh (the host / is visible in the guest
# at the same paths, so the hook binary and these scripts are used in place)
# and runs tests/e2e/provisioning-tests.sh in it: podman with the hooks.d file
# and an annotation, createCerts (also 5 at once), pcrBanks, runAs, state
# encryption, io.vtpm-hook.* annotations with runc, `vtpm-hook status`; then
# tests/e2e/attestation-tests.sh in the same boot: the attestation flow with the
# exported EK and CA, the platform hierarchy closed (and kept open), tss2_provision.
# The exit status is the worse of the two scripts' (0 all passed, 1 some failed, 2 unusable
# environment), 124 when the tests did not finish in time, or 255 when the VM
# itself failed (boot failure, guest hang, time-out): not a test result, retry.
# Environment: TIMEOUT (s, whole VM run; default 900), E2E_ONLY (regex of
# scenario names), and run-vm.sh's MEM SMP CGROUP=v1|v2 KEEP VERBOSE VMLAB_CACHE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run-provisioning.sh: no vtpm-hook binary at $HOOK (build it: cmake -S $ROOT -B $ROOT/build && cmake --build $ROOT/build)" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")
command -v podman > /dev/null ||
    { echo "run-provisioning.sh: podman is not installed (apt-get install --no-install-recommends podman); the guest uses the host's programs" >&2; exit 2; }

export TIMEOUT=${TIMEOUT:-900}
q() { printf '%q' "$1"; }
# The guest starts with an empty environment: pass what the test script reads.
CMD="export E2E_ONLY=$(q "${E2E_ONLY:-.}") VTPM_HOOK=$(q "$HOOK");"
# both scripts share one deadline; the later one's status wins only when it is worse
CMD+=" end=\$((\$(date +%s) + $((TIMEOUT - 30))));"
CMD+=" left() { n=\$((end - \$(date +%s))); echo \$((n > 0 ? n : 1)); };"
CMD+=" timeout -k 10 \$(left) bash $(q "$HERE/provisioning-tests.sh") $(q "$HOOK"); a=\$?;"
CMD+=" timeout -k 10 \$(left) bash $(q "$HERE/attestation-tests.sh") $(q "$HOOK"); b=\$?;"
CMD+=" if [ \$a -gt \$b ]; then exit \$a; else exit \$b; fi"
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run-provisioning.sh: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run-provisioning.sh: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
