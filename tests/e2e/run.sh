#!/bin/bash
# tests/e2e/run.sh - run one end-to-end suite in ONE test VM boot (runs on the HOST).
#
#   tests/e2e/run.sh SUITE [path/to/vtpm-hook]   default: $VTPM_HOOK, else <repo>/build/vtpm-hook
#
# Suites (the guest scripts they run, one after the other, sharing one deadline):
#   containers     container-tests.sh: runc and crun, the default vTPM, 1.2, two vTPMs,
#                  user namespaces, restarts, bad input, many at once; then template-tests.sh:
#                  the template process (stale on disk, its children, started on demand)
#   hardening      hardening-tests.sh, security-tests.sh, containment-tests.sh: hostile rootfs
#                  layouts, load, the trust-boundary attacks, what emulators and keepers hold
#   provisioning   provisioning-tests.sh, then attestation-tests.sh: podman (hooks.d),
#                  createCerts, pcrBanks, runAs, encryption, annotations, status; the
#                  attestation flow, the platform hierarchy, tss2_provision
#   package        package-tests.sh (PKG_DEB installed with apt, each engine with no other
#                  step, doctor, units), cri-tests.sh with the installed vtpm-runc and policy,
#                  then package-tests.sh's upgrade (PKG_DEB_NEXT) and remove/purge part
#   engines        engine-tests.sh: vtpm-runc (the runtime wrapper) under runc, crun,
#                  containerd 1.6 (ctr) and Docker 20.10, the host's Debian packages, with
#                  daemons the test starts in the guest; start times (TIMES samples, 3)
#   cri            cri-tests.sh: a Kubernetes node at containerd 1.6's CRI plugin (runtime
#                  handler vtpm = vtpm-runc, kubernetesIdentity), pods made the kubelet's way by
#                  cri/cri_client.py; VTPM_RUNC, CRI_POLICY, CRI_K8S_IDENTITY (see the script)
# The VM (tests/vm/run-vm.sh) sees the host's / at the same paths, so the hook binary and the
# scripts are used in place. Exit status: the worst of the scripts' (124 the tests did not
# finish in time > 2 unusable environment > 1 some scenario failed > 0 all passed), or 255
# when the VM itself failed (boot failure, guest hang): infrastructure, not a test result.
# Environment: TIMEOUT (s, whole VM run; default per suite), scenario selection by regex
# E2E_ONLY (containers, provisioning + attestation, engines, cri), TEMPLATE_ONLY (containers' template-tests.sh;
# '^$' skips it), HARD_ONLY, SEC_ONLY, CONT_ONLY, COMP_ONLY
# (hardening; '^$' skips that script), MANY (20), LOAD_N (50), LOAD_ROUNDS (3), LOAD_RUNC_N (50; 0 skips),
# KILL_ROUNDS (12), TIMES (engines: start-time samples, 3), and run-vm.sh's MEM SMP CGROUP=v1|v2 KEEP VERBOSE VMLAB_CACHE.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

SUITE=${1:-}
case $SUITE in
    containers)   SCRIPTS=(container-tests.sh template-tests.sh); : "${TIMEOUT:=1200}" "${MEM:=3072}" ;;
    hardening)    SCRIPTS=(hardening-tests.sh security-tests.sh containment-tests.sh compromise-tests.sh); : "${TIMEOUT:=1500}" "${MEM:=3072}" ;;
    provisioning) SCRIPTS=(provisioning-tests.sh attestation-tests.sh); : "${TIMEOUT:=1100}"
                  command -v podman > /dev/null || { echo "run.sh: podman is not installed (apt-get install --no-install-recommends podman); the guest uses the host's programs" >&2; exit 2; } ;;
    engines)      SCRIPTS=(engine-tests.sh); : "${TIMEOUT:=1200}" "${MEM:=3072}"
                  for t in containerd ctr dockerd; do
                      command -v "$t" > /dev/null || { echo "run.sh: $t is not installed (apt-get install --no-install-recommends docker.io containerd); the guest uses the host's programs" >&2; exit 2; }
                  done ;;
    package)      # cri-tests.sh against the installed package: its vtpm-runc, its policy file (which
                  # package-tests.sh's k8s-policy scenario sets up as integration.md says)
                  SCRIPTS=(package-tests.sh cri-tests.sh package-tests.sh@remove); : "${TIMEOUT:=1200}" "${MEM:=3072}"
                  export VTPM_RUNC=/usr/bin/vtpm-runc CRI_POLICY=/etc/vtpm-hook/policy.json
                  [ -r "${PKG_DEB:-}" ] || { echo "run.sh: PKG_DEB must name the package (tests/package/package_test.sh builds it)" >&2; exit 2; } ;;
    cri)          SCRIPTS=(cri-tests.sh); : "${TIMEOUT:=480}"
                  for t in containerd ctr containerd-shim-runc-v2 protoc gcc; do
                      command -v "$t" > /dev/null || { echo "run.sh: $t is not installed (apt-get install --no-install-recommends containerd protobuf-compiler gcc libc6-dev); the guest uses the host's programs" >&2; exit 2; }
                  done
                  /usr/bin/python3 -c 'import grpc, google.protobuf' 2> /dev/null || { echo "run.sh: /usr/bin/python3 lacks grpc or protobuf (apt-get install python3-grpcio python3-protobuf)" >&2; exit 2; } ;;
    -h|--help|"") usage ;;
    *)            echo "run.sh: unknown suite '$SUITE'" >&2; usage ;;
esac
export TIMEOUT MEM=${MEM:-2048}

HOOK=${2:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -e "$HOOK" ] || { echo "run.sh: no vtpm-hook binary at $HOOK (build it: cmake -S $ROOT -B $ROOT/build && cmake --build $ROOT/build)" >&2; exit 2; }
HOOK=$(cd "$(dirname "$HOOK")" && pwd)/$(basename "$HOOK")

q() { printf '%q' "$1"; }
# The guest starts with an empty environment: pass what the scripts read (when set here;
# each script has its own defaults).
CMD="export VTPM_HOOK=$(q "$HOOK");"
for v in E2E_ONLY TEMPLATE_ONLY HARD_ONLY SEC_ONLY CONT_ONLY COMP_ONLY MANY LOAD_N LOAD_ROUNDS LOAD_RUNC_N KILL_ROUNDS TIMES \
         PKG_DEB PKG_DEB_NEXT VTPM_RUNC CRI_POLICY CRI_K8S_IDENTITY; do
    [ -n "${!v+x}" ] && CMD+=" export $v=$(q "${!v}");"
done
CMD+=" exec bash $(q "$HERE/guest-suite.sh") $((TIMEOUT - 30)) $(q "$HOOK")"
for s in "${SCRIPTS[@]}"; do CMD+=" $(q "$HERE/$s")"; done
"$ROOT/tests/vm/run-vm.sh" "$CMD"
rc=$?
case $rc in
    124|137) echo "run.sh $SUITE: the tests did not finish within $((TIMEOUT - 30))s inside the VM" >&2 ;;
    255)     echo "run.sh $SUITE: INFRASTRUCTURE FAILURE (VM), not a test result" >&2 ;;
esac
exit "$rc"
