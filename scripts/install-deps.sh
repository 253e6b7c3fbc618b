#!/bin/bash
# Installs everything vtpm-hook needs to build, test and run its VM tests on Debian 12, and the
# system user its emulators and keepers run as.
# (clang + libclang-rt-14-dev: the libFuzzer suite, fuzz.bounded; openssl: the CLI the
# provisioning and attestation tests verify certificates with; git: tests/lint.sh;
# debhelper, lintian, help2man: scripts/package.sh; python3-grpcio, -protobuf, protobuf-compiler:
# the CRI client of the Kubernetes node test; python3-yaml: it reads examples/kubernetes/)
set -euo pipefail
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# the unprivileged user the emulators and keepers run as unless runAs is set
getent passwd vtpm-hook >/dev/null ||
  $SUDO adduser --system --group --no-create-home --home /nonexistent vtpm-hook >/dev/null
PKGS=(build-essential cmake ninja-build pkg-config clang-format clang libclang-rt-14-dev git openssl
      libtpms-dev libtss2-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libgtest-dev
      libssl-dev libseccomp-dev libbenchmark-dev
      tpm2-tools jq python3 swtpm swtpm-tools shellcheck
      runc crun criu podman docker.io containerd
      qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils kmod
      debhelper dpkg-dev lintian help2man bash-completion
      python3-grpcio python3-protobuf protobuf-compiler python3-yaml)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# docker.io and containerd are here for the engine tests, which start their own daemons in the
# test VM: where this run installed them, the services their packages enabled are not needed.
units=()
for p in "${missing[@]}"; do
  case $p in
    docker.io)  units+=(docker.socket docker.service) ;;
    containerd) units+=(containerd.service) ;;
  esac
done
if [ ${#units[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
  echo "install-deps: stopping and disabling ${units[*]} (the tests start their own daemons)" >&2
  $SUDO systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
fi
