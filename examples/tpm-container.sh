#!/bin/bash
# Runs one container with its own TPM: vtpm-hook as prestart/poststop hook, tpm2-tools inside.
#   tpm-container.sh /path/to/vtpm-hook [runc|crun]
# Needs root, /dev/vtpmx, the runtime and tpm2-tools on the host. The container's rootfs is a
# skeleton whose /usr and /etc are read-only binds of the host's, so it needs no image.
set -euo pipefail
HOOK=${1:?usage: $0 /path/to/vtpm-hook [runc|crun]}
RT=${2:-runc}
WORK=$(mktemp -d /tmp/vtpm-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/rootfs"/{usr,etc,dev,proc,sys,tmp}
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$WORK/rootfs/$d"; done
(cd "$WORK" && "$RT" spec)

# A plain `runc spec` config plus the two hooks: the hook itself lets the container's device
# cgroup open its TPM, and nothing else.
jq --arg hook "$HOOK" --arg state "$WORK/state" --arg run "$WORK/run" '
  .process.terminal = false
| .process.args = ["/bin/sh", "-c",
    "echo \"inside: $(ls /dev/tpm*)\"; tpm2_getrandom -T device:/dev/tpmrm0 --hex 16 && echo && tpm2_pcrread -T device:/dev/tpmrm0 sha256:0,7"]
| .root.path = "rootfs"
| .mounts += [{"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
              {"destination": "/etc", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]}]
| .hooks = {
    "prestart": [{"path": $hook, "args": ["vtpm-hook", "--state-root", $state, "--run-root", $run, "setup"]}],
    "poststop": [{"path": $hook, "args": ["vtpm-hook", "--state-root", $state, "--run-root", $run, "teardown"]}]}
' "$WORK/config.json" > "$WORK/config.new" && mv "$WORK/config.new" "$WORK/config.json"

echo "== $RT run: a container with its own TPM"
timeout 120 "$RT" run --bundle "$WORK" "vtpm-demo-$$" </dev/null
echo "== after the container: TPM chips on the host: $(ls /sys/class/tpm 2>/dev/null | tr '\n' ' ')"
