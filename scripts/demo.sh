#!/bin/bash
# The main job: build vtpm-hook, then run a real runc container that gets its own TPM from the
# hook and prints random bytes and PCRs read from inside. Uses the host kernel when it has
# /dev/vtpmx (run as root), otherwise boots the project's test VM with a kernel that has it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
HOOK=$PWD/build/vtpm-hook
if [ -c /dev/vtpmx ] || modprobe tpm_vtpm_proxy 2>/dev/null && [ -c /dev/vtpmx ]; then
  exec ./examples/tpm-container.sh "$HOOK" "${1:-runc}"
fi
echo "demo: this kernel has no /dev/vtpmx; running the container inside the test VM" >&2
exec ./tests/vm/run-vm.sh -f ./examples/tpm-container.sh "$HOOK" "${1:-runc}"
