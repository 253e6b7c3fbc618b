#!/bin/bash
# bench/vm-guest.sh - the VM side of bench/run.sh (run by tests/vm/run-vm.sh -f, as root).
#   vm-guest.sh BIN_DIR [--quick]    BIN_DIR holds vtpm-hook, libtpms_floor, vmbench.py,
#                                    swtpm-hook.sh
set -u
bin=$1; shift
echo "guest: $(uname -r), $(nproc) vCPU, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)" >&2
exec timeout -k 10 "${BENCH_GUEST_TIMEOUT:-900}" python3 "$bin/vmbench.py" "$bin/vtpm-hook" "$bin/libtpms_floor" "$@"
