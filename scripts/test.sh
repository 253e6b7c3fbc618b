#!/bin/bash
# The whole test suite: unit tests, the emulator under real tpm2-tools, swtpm interop, and the
# end-to-end container tests in a VM with a real kernel (runc, crun, podman, containerd, Docker).
# Extra arguments go to ctest (e.g. -L vm, -LE vm, -R unit).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
ctest --output-on-failure --timeout 2400 "$@"
