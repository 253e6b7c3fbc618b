#!/bin/bash
# bench/vm-guest.sh - the VM side of bench/run.sh (run by tests/vm/run-vm.sh -f, as root).
#   vm-guest.sh BIN_DIR SECONDS [vmbench.py options]   BIN_DIR holds vtpm-hook, libtpms_floor,
#                                    vmbench.py, swtpm-hook.sh; SECONDS bounds the run
set -u
bin=$1; seconds=$2; shift 2
echo "guest: $(uname -r), $(nproc) vCPU, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)" >&2
exec timeout -k 10 "$seconds" python3 "$bin/vmbench.py" "$bin/vtpm-hook" "$bin/libtpms_floor" "$@"
