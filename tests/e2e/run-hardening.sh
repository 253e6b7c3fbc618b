#!/bin/bash
# tests/e2e/run-hardening.sh - hostile-rootfs, load and trust-boundary tests of vtpm-hook
# (runs on the HOST).
#
#   tests/e2e/run-hardening.sh [path/to/vtpm-hook]   default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Boots ONE test VM (tests/vm/run-vm.sh) and runs tests/e2e/hardening-tests.sh and then
# tests/e2e/security-tests.sh (issue 9: annotations, statePath confinement, the policy file,
# key files, device numbers that outlive their TPM, a stopped emulator, the hook killed
# during setup) in it. Exit status: 0 both passed, 1 some scenario failed, 2 unusable
# environment, 124 the tests did not finish in time, 255 the VM itself failed
# (infrastructure, not a test result).
# Environment: TIMEOUT (s, whole VM run; default 1500), HARD_ONLY and SEC_ONLY (regexes of
# scenario names of each script; '^$' skips that script's scenarios), LOAD_N (50),
# LOAD_ROUNDS (3), LOAD_RUNC_N (50; 0 skips the runc round), KILL_ROUNDS (12), and
# run-vm.sh's MEM (here 3072) SMP CGROUP KEEP VERBOSE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run-hardening.sh: no vtpm-hook binary at $HOOK" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")

export TIMEOUT=${TIMEOUT:-1500}
export MEM=${MEM:-3072}        # 50 emulators + 50 runc containers at once
q() { printf '%q' "$1"; }
# The guest starts with an empty environment: pass what the test scripts read. Both scripts
# share one deadline; the combined status is the worst of the two (time-out > environment >
# failure).
CMD="export HARD_ONLY=$(q "${HARD_ONLY:-.}") SEC_ONLY=$(q "${SEC_ONLY:-.}") VTPM_HOOK=$(q "$HOOK")"
CMD+=" LOAD_N=$(q "${LOAD_N:-50}") LOAD_ROUNDS=$(q "${LOAD_ROUNDS:-3}") LOAD_RUNC_N=$(q "${LOAD_RUNC_N:-50}")"
CMD+=" KILL_ROUNDS=$(q "${KILL_ROUNDS:-12}");"
CMD+=" end=\$((SECONDS + $((TIMEOUT - 30))));"
CMD+=" timeout -k 10 \$((end - SECONDS)) bash $(q "$HERE/hardening-tests.sh") $(q "$HOOK"); h=\$?;"
CMD+=" echo \"# hardening-tests.sh exit status \$h\";"
CMD+=" left=\$((end - SECONDS)); [ \$left -gt 20 ] || left=20;"
CMD+=" timeout -k 10 \$left bash $(q "$HERE/security-tests.sh") $(q "$HOOK"); s=\$?;"
CMD+=" echo \"# security-tests.sh exit status \$s\";"
CMD+=" for w in 124 137 2 1; do [ \$h = \$w ] || [ \$s = \$w ] && exit \$w; done;"
CMD+=" [ \$h = 0 ] && [ \$s = 0 ] && exit 0; exit 1"
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run-hardening.sh: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run-hardening.sh: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
