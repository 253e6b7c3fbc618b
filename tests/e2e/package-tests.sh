#!/bin/bash
# tests/e2e/package-tests.sh - the Debian package (scripts/package.sh), installed with apt into
# the test VM's throw-away root; then, with no other step, each engine's container gets a TPM.
#
#   package-tests.sh            env PHASE: install (default, first) or remove (last, after
#                               cri-tests.sh; run.sh's entry package-tests.sh@remove)
#
# Runs as root INSIDE the test VM (`tests/e2e/run.sh package`). PKG_DEB is the package,
# PKG_DEB_NEXT the same build with a higher version (the upgrade). The hook, its state root
# and run root are the installed package's defaults (/usr/bin/vtpm-hook, /var/lib/vtpm-hook,
# /run/vtpm-hook): what an administrator gets. Scenarios, in this order:
#   install         every file of the package was absent before (the host's copies are removed
#                   from the guest's overlay first) and is there after `apt install ./DEB`;
#                   postinst made the user vtpm-hook (deleted beforehand), loaded tpm_vtpm_proxy
#                   (unloaded beforehand) and wrote the CDI spec naming /usr/bin/vtpm-hook
#   doctor          `vtpm-hook doctor`: nothing fails, warnings only for the engines the package
#                   leaves to the administrator; with the module unloaded it fails naming the fix
#   units           systemd-analyze verify of the units; their ExecStart commands run
#   podman-hooksd   podman run --annotation io.vtpm-hook.vtpm=2 (the installed hooks.d file)
#   podman-cdi      podman run --device vtpm-hook.io/tpm=2 (the CDI spec postinst wrote)
#   runc-config     runc run with the README's two hooks in config.json
#   docker          dockerd with the documented daemon.json runtime: docker run --runtime vtpm
#   containerd-fix  doctor's containerd fix, run as printed on Debian's config.toml: containerd's
#                   CRI plugin serves, with the runtime vtpm naming /usr/bin/vtpm-runc
#   doctor-all-ok   doctor exits 0 with every line ok/info; without the CDI spec exit 2, one warning
#   k8s-policy      the administrator's step for a Kubernetes node (integration.md): policy.json
#                   gets "kubernetesIdentity": "containerd"; doctor accepts it (cri-tests.sh next)
#   upgrade         (phase remove) an NV secret written before `apt install ./DEB_NEXT` is read
#                   after it; the administrator's changed policy.json is kept
#   remove-purge    (phase remove) a live container keeps its TPM through `apt remove`; its
#                   state survives `apt purge`, which says so in one line and removes /etc's
# Each engine's first container after install is timed (FIGURE lines; runc: runc_run_ms).
# Prints "PASS: name" / "FAIL: name: why" and "N passed, M failed"; exit 0/1/2 as lib.sh.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_WORK=${E2E_WORK:-/run/vtpm-package}
# (every command here is bounded by this; apt's maintainer scripts and triggers take a while
# under TCG on a loaded host)
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# the installed package's defaults, not the suites' private roots
STATE_ROOT=/var/lib/vtpm-hook
RUN_ROOT=/run/vtpm-hook
# shellcheck disable=SC2034  # (read by lib.sh's expect_clean)
SETTLE_TIMEOUT=30
HOOK=${1:-}     # the build's binary: only for preflight's checks; the tests use the installed one
PHASE=${PHASE:-install}
ONLY=${E2E_ONLY:-.}
DEB=${PKG_DEB:-}
DEB_NEXT=${PKG_DEB_NEXT:-}
DOCKER=/usr/bin/docker

[ -x /run/vtpmvm/stage2 ] || fatal "runs only inside the test VM (tests/e2e/run.sh package): it installs a package"
[ -r "$DEB" ] || fatal "no package: PKG_DEB='$DEB' (scripts/package.sh writes it under dist/)"
preflight apt-get dpkg-deb podman runc jq dockerd "$DOCKER" tpm2_getrandom tpm2_nvdefine tpm2_nvread timeout
HOOK=/usr/bin/vtpm-hook
mkdir -p "$E2E_WORK" "$BUNDLES" "$LOG_DIR"
export DEBIAN_FRONTEND=noninteractive
APT=(timeout 290 apt-get -y -q -o Dpkg::Use-Pty=0 -o APT::Sandbox::User=root)

TPM_SCRIPT='for d in /dev/tpm0 /dev/tpmrm0; do
  if [ -c $d ]; then echo "DEV $d"; else echo "NODEV $d"; fi; done
r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) || { echo "getrandom failed rc=$?"; exit 3; }
echo "RANDOM $r"'
NV_SCRIPT=$(nv_script 0x1500017 package-secret)

# check_tpm FILE: the container saw both nodes and read random bytes
check_tpm() {
    grep -q '^DEV /dev/tpm0' "$1" && grep -q '^DEV /dev/tpmrm0' "$1" ||
        { why "no /dev/tpm0 + /dev/tpmrm0: $(grep DEV "$1" | tr '\n' ' ')"; return 1; }
    grep -Eq '^RANDOM [0-9a-f]{16}$' "$1" || { why "tpm2_getrandom: $(grep -m1 -e RANDOM -e failed "$1" || echo no output)"; return 1; }
}
# run_cmd NAME CMD...: bounded, output in $E2E_WORK/NAME.out/.err, RC and MS set
run_cmd() {
    local name=$1 t0; shift
    DIAG+=("$E2E_WORK/$name.out" "$E2E_WORK/$name.err")
    t0=$(now_ms)
    ( timeout -k 5 "$RUN_TIMEOUT" "$@" < /dev/null > "$E2E_WORK/$name.out" 2> "$E2E_WORK/$name.err" ) 2> /dev/null
    RC=$?
    MS=$(( $(now_ms) - t0 ))
}
out_of() { tail -n 3 "$E2E_WORK/$1.err" "$E2E_WORK/$1.out" 2>/dev/null | tr '\n' ' '; }

# ---------------------------------------------------------------- install
t_install() {
    local f missing=() removed=0 t0
    dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's#^\./#/#; /\/$/d' > "$E2E_WORK/files" ||
        { why "dpkg-deb -c $DEB failed"; return 1; }
    note "package: $(dpkg-deb -f "$DEB" Package Version | tr '\n' ' ')$(wc -l < "$E2E_WORK/files") files"
    # a fresh root: whatever the host has at the package's paths (or an older install in
    # /usr/local) must not stand in for a file the package fails to install
    while read -r f; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        rm -f "$f" && removed=$((removed + 1))
    done < "$E2E_WORK/files"
    rm -f /usr/local/bin/vtpm-hook /usr/local/bin/vtpm-runc /usr/local/share/containers/oci/hooks.d/vtpm-hook.json
    [ "$removed" = 0 ] || note "removed $removed of the package's paths the host had, from the guest's overlay"
    ! dpkg -s vtpm-hook > /dev/null 2>&1 || { why "vtpm-hook is installed on the host already: not a fresh install"; return 1; }
    [ ! -e /etc/vtpm-hook/policy.json ] || rm -f /etc/vtpm-hook/policy.json
    rm -rf /run/cdi /etc/cdi/vtpm-hook.json "$STATE_ROOT" "$RUN_ROOT"
    if getent passwd vtpm-hook > /dev/null; then
        userdel vtpm-hook 2>/dev/null; getent group vtpm-hook > /dev/null && groupdel vtpm-hook 2>/dev/null
    fi
    getent passwd vtpm-hook > /dev/null && { why "cannot delete the user vtpm-hook before the install"; return 1; }
    modprobe -r tpm_vtpm_proxy 2>/dev/null
    [ ! -e /dev/vtpmx ] || { why "cannot unload tpm_vtpm_proxy before the install"; return 1; }

    # man-db's trigger re-indexes every man page: minutes under TCG, and not what is tested
    # (the trigger runs mandb only while this file exists; debconf's answer only writes it)
    rm -f /var/lib/man-db/auto-update
    t0=$(now_ms)
    run_cmd apt-install "${APT[@]}" install "$DEB"
    [ "$RC" = 0 ] || { why "apt install ./$(basename "$DEB") exited with $RC: $(out_of apt-install)"; return 1; }
    note "FIGURE: apt_install_ms=$(( $(now_ms) - t0 ))"
    while read -r f; do
        [ -e "$f" ] || [ -L "$f" ] || missing+=("$f")
    done < "$E2E_WORK/files"
    [ ${#missing[@]} = 0 ] || { why "installed package lacks: ${missing[*]}"; return 1; }
    for f in /usr/bin/vtpm-hook /usr/bin/vtpm-runc /usr/share/containers/oci/hooks.d/vtpm-hook.json \
             /etc/vtpm-hook/policy.json /etc/modules-load.d/vtpm-hook.conf /lib/udev/rules.d/70-vtpm-hook.rules \
             /lib/systemd/system/vtpm-hook-cdi.service /lib/systemd/system/vtpm-hook-gc.service \
             /lib/systemd/system/vtpm-hook-gc.timer /lib/systemd/system/vtpm-hook-template.service \
             /usr/share/man/man8/vtpm-hook.8.gz \
             /usr/share/man/man8/vtpm-runc.8.gz /usr/share/man/man5/vtpm-hook-policy.5.gz \
             /usr/share/bash-completion/completions/vtpm-hook; do
        grep -qx "$f" "$E2E_WORK/files" || missing+=("$f")
    done
    [ ${#missing[@]} = 0 ] || { why "the package does not ship: ${missing[*]}"; return 1; }
    dpkg-query -W -f='${Conffiles}\n' vtpm-hook | grep -q ' /etc/vtpm-hook/policy.json ' ||
        { why "/etc/vtpm-hook/policy.json is not a conffile: $(dpkg-query -W -f='${Conffiles}' vtpm-hook | tr '\n' ' ')"; return 1; }
    [ "$(readlink -f /usr/bin/vtpm-runc)" = /usr/bin/vtpm-hook ] || { why "/usr/bin/vtpm-runc is not vtpm-hook"; return 1; }
    [ "$(jq -r .hook.path /usr/share/containers/oci/hooks.d/vtpm-hook.json)" = /usr/bin/vtpm-hook ] ||
        { why "hooks.d file names $(jq -r .hook.path /usr/share/containers/oci/hooks.d/vtpm-hook.json)"; return 1; }
    getent passwd vtpm-hook > /dev/null || { why "postinst did not create the user vtpm-hook"; return 1; }
    [ -c /dev/vtpmx ] || { why "postinst did not load tpm_vtpm_proxy (no /dev/vtpmx)"; return 1; }
    [ "$(jq -r '.devices[0].containerEdits.hooks[0].path' /run/cdi/vtpm-hook.json 2>/dev/null)" = /usr/bin/vtpm-hook ] ||
        { why "postinst wrote no CDI spec naming /usr/bin/vtpm-hook in /run/cdi"; return 1; }
    # the man pages render, and the completion knows the subcommands from the binary
    man -l /usr/share/man/man5/vtpm-hook-policy.5.gz 2>/dev/null | grep -q statePathRoots ||
        { why "vtpm-hook-policy(5) does not render the policy keys"; return 1; }
    man -l /usr/share/man/man8/vtpm-hook.8.gz 2>/dev/null | grep -q 'doctor' ||
        { why "vtpm-hook(8) does not list the doctor subcommand"; return 1; }
    man -l /usr/share/man/man8/vtpm-runc.8.gz 2>/dev/null | grep -q 'BinaryName' ||
        { why "vtpm-runc(8) lacks containerd's BinaryName"; return 1; }
    f=$(bash -c '. /usr/share/bash-completion/bash_completion; . /usr/share/bash-completion/completions/vtpm-hook
        COMP_WORDS=(vtpm-hook ""); COMP_CWORD=1; COMP_LINE="vtpm-hook "; COMP_POINT=10; _vtpm_hook; echo "${COMPREPLY[*]}"')
    [[ " $f " == *" setup "* && " $f " == *" gc "* ]] || { why "bash completion of subcommands: '$f'"; return 1; }
}

# ---------------------------------------------------------------- doctor
t_doctor() {
    # passes: nothing fails, and the only warnings are the engines the package leaves to the
    # administrator (the VM has dockerd and containerd, not yet configured: see t_docker)
    run_cmd doctor "$HOOK" doctor
    [ "$RC" = 0 ] || [ "$RC" = 2 ] && ! grep -q '^fail' "$E2E_WORK/doctor.out" &&
        ! grep '^warn' "$E2E_WORK/doctor.out" | grep -qviE 'docker|containerd' ||
        { why "doctor on the fresh install (exit $RC): $(grep -Ev '^(ok|info)' "$E2E_WORK/doctor.out" | tr '\n' ' ') $(head -c 200 "$E2E_WORK/doctor.err")"; return 1; }
    note "doctor: $(grep -c '' "$E2E_WORK/doctor.out") lines, exit $RC; $(grep -Ev '^(ok|info)' "$E2E_WORK/doctor.out" | cut -c1-90 | tr '\n' ';')"
    modprobe -r tpm_vtpm_proxy || { why "cannot unload tpm_vtpm_proxy"; return 1; }
    run_cmd doctor-nomod "$HOOK" doctor
    modprobe tpm_vtpm_proxy
    [ "$RC" = 1 ] || { why "doctor exit $RC with tpm_vtpm_proxy unloaded (1: blocked)"; return 1; }
    grep -q 'modprobe tpm_vtpm_proxy' "$E2E_WORK/doctor-nomod.out" ||
        { why "doctor without the module does not name the fix: $(tr '\n' ' ' < "$E2E_WORK/doctor-nomod.out")"; return 1; }
    note "$(grep -m1 -i 'modprobe' "$E2E_WORK/doctor-nomod.out")"
}
# after Docker's and containerd's entries (t_docker, t_containerd_fix): doctor is all ok, and
# without the CDI spec it warns (exit 2) with exactly that one line, naming the fix
t_doctor_all_ok() {
    run_cmd doctor-ok "$HOOK" doctor
    [ "$RC" = 0 ] && ! grep -Evq '^(ok|info): ' "$E2E_WORK/doctor-ok.out" ||
        { why "doctor on the configured host: exit $RC: $(grep -Ev '^(ok|info): ' "$E2E_WORK/doctor-ok.out" | tr '\n' ' ')"; return 1; }
    mv /run/cdi/vtpm-hook.json "$E2E_WORK/cdi.json"
    run_cmd doctor-nocdi "$HOOK" doctor
    mv "$E2E_WORK/cdi.json" /run/cdi/vtpm-hook.json
    [ "$RC" = 2 ] || { why "doctor without the CDI spec: exit $RC (2: warnings)"; return 1; }
    [ "$(grep -Evc '^(ok|info): ' "$E2E_WORK/doctor-nocdi.out")" = 1 ] &&
        grep -q '^warn: .*CDI.*vtpm-hook cdi --output' "$E2E_WORK/doctor-nocdi.out" ||
        { why "doctor without the CDI spec: $(grep -Ev '^(ok|info): ' "$E2E_WORK/doctor-nocdi.out" | tr '\n' ' ')"; return 1; }
    note "$(grep -m1 'cdi --output' "$E2E_WORK/doctor-nocdi.out")"
}

# ---------------------------------------------------------------- units
t_units() {
    local u cmd
    run_cmd verify systemd-analyze verify /lib/systemd/system/vtpm-hook-cdi.service \
        /lib/systemd/system/vtpm-hook-gc.service /lib/systemd/system/vtpm-hook-gc.timer \
        /lib/systemd/system/vtpm-hook-template.service
    [ "$RC" = 0 ] || { why "systemd-analyze verify: $(out_of verify)"; return 1; }
    ! grep -q 'vtpm-hook' "$E2E_WORK/verify.err" || { why "systemd-analyze verify warns: $(grep vtpm-hook "$E2E_WORK/verify.err" | head -n 3 | tr '\n' ' ')"; return 1; }
    # the test VM has no systemd: run each service's ExecStart as systemd would
    rm -f /run/cdi/vtpm-hook.json
    for u in vtpm-hook-cdi vtpm-hook-gc; do
        cmd=$(sed -n 's/^ExecStart=//p' "/lib/systemd/system/$u.service")
        [ -n "$cmd" ] || { why "$u.service has no ExecStart"; return 1; }
        # shellcheck disable=SC2086  # (the unit's command line, split as systemd splits it)
        run_cmd "$u" $cmd
        [ "$RC" = 0 ] || { why "$u.service's '$cmd' exited with $RC: $(out_of "$u")"; return 1; }
    done
    [ -s /run/cdi/vtpm-hook.json ] || { why "vtpm-hook-cdi.service's command wrote no /run/cdi/vtpm-hook.json"; return 1; }
    # its stop removes the spec (which names a binary a remove takes away)
    cmd=$(sed -n 's/^ExecStopPost=//p' /lib/systemd/system/vtpm-hook-cdi.service)
    # shellcheck disable=SC2086
    $cmd && [ ! -e /run/cdi/vtpm-hook.json ] || { why "vtpm-hook-cdi.service's ExecStopPost '$cmd' left the spec"; return 1; }
    cmd=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/vtpm-hook-cdi.service)
    # shellcheck disable=SC2086
    $cmd || { why "vtpm-hook-cdi.service's ExecStart '$cmd' (again)"; return 1; }
    grep -q '^OnCalendar=daily' /lib/systemd/system/vtpm-hook-gc.timer || { why "the gc timer is not daily"; return 1; }
    # the template's unit: its command serves the hooks' default run root until SIGTERM
    cmd=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/vtpm-hook-template.service)
    # shellcheck disable=SC2086
    $cmd > "$E2E_WORK/template.out" 2>&1 &
    local tpid=$! t0
    t0=$(now_ms)
    while [ ! -S /run/vtpm-hook/template.sock ] && [ $(( $(now_ms) - t0 )) -lt 20000 ]; do sleep 0.2; done
    [ -S /run/vtpm-hook/template.sock ] && (( (8#$(stat -c %a /run/vtpm-hook/template.sock) & 8#077) == 0 )) ||
        { why "vtpm-hook-template.service's '$cmd' serves no root-only /run/vtpm-hook/template.sock: $(tail -c 300 "$E2E_WORK/template.out")"; kill "$tpid"; return 1; }
    kill -TERM "$tpid"
    timeout 20 tail --pid="$tpid" -f /dev/null
    [ ! -e /run/vtpm-hook/template.sock ] || { why "the template left its socket after SIGTERM"; return 1; }
}

# ---------------------------------------------------------------- engines, no other step
PODMAN_W=$E2E_WORK/podman
# podman's defaults except what the VM lacks (systemd, network, overlayfs in an overlay):
# hooks.d and CDI directories are the defaults
PODMAN=(podman --root "$PODMAN_W/store" --runroot "$PODMAN_W/runroot" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend file)
podman_run() {   # podman_run NAME ARGS... (before the command)
    local name=$1; shift
    mkdir -p "$PODMAN_W"; [ -d "$PODMAN_W/rootfs" ] || make_rootfs "$PODMAN_W/rootfs"
    run_cmd "$name" "${PODMAN[@]}" run --rm --network none -v /usr:/usr:ro -v /etc:/etc:ro \
        "$@" --rootfs "$PODMAN_W/rootfs" /bin/sh -c "$TPM_SCRIPT"
}
t_podman_hooksd() {
    podman_run podman-hooksd --annotation io.vtpm-hook.vtpm=2
    note "FIGURE: first_podman_hooksd_ms=$MS"
    [ "$RC" = 0 ] || { why "podman run --annotation io.vtpm-hook.vtpm=2 exited with $RC: $(out_of podman-hooksd)"; return 1; }
    check_tpm "$E2E_WORK/podman-hooksd.out" || return 1
    expect_clean "" "podman run --rm (hooks.d)" || return 1
    [ -z "$(run_records)" ] || { why "run records left: $(run_records | tr '\n' ' ')"; return 1; }
}
t_podman_cdi() {
    podman_run podman-cdi --device vtpm-hook.io/tpm=2
    note "FIGURE: first_podman_cdi_ms=$MS"
    [ "$RC" = 0 ] || { why "podman run --device vtpm-hook.io/tpm=2 exited with $RC: $(out_of podman-cdi)"; return 1; }
    check_tpm "$E2E_WORK/podman-cdi.out" || return 1
    expect_clean "" "podman run --rm (CDI)" || return 1
}
# the README's config.json hooks, nothing else of ours
readme_bundle() {   # readme_bundle NAME SCRIPT
    make_bundle runc "$1" "" "$2" '.hooks = {
        "prestart": [{"path": "/usr/bin/vtpm-hook", "args": ["vtpm-hook", "setup"]}],
        "poststop": [{"path": "/usr/bin/vtpm-hook", "args": ["vtpm-hook", "teardown"]}]}'
}
t_runc_config() {
    readme_bundle pkg-runc "$TPM_SCRIPT" || return 1
    container_run runc pkg-runc || return 1
    [ "$RC" = 0 ] || { why "runc run exited with $RC: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    check_tpm "$BUNDLE/out" || return 1
    expect_clean pkg-runc "runc run" || return 1
    [ -d "$STATE_ROOT/pkg-runc" ] || { why "no state in $STATE_ROOT/pkg-runc"; return 1; }
    [ "$(stat -c %U "$STATE_ROOT/pkg-runc")" = vtpm-hook ] || { why "the state is not the emulator user's: $(stat -c %U "$STATE_ROOT/pkg-runc")"; return 1; }
}
DW=$E2E_WORK/docker
DOCKERD_PID=""
t_docker() { t_docker_body; local rc=$?; stop_daemon "$DOCKERD_PID" dockerd || rc=1; return $rc; }
t_docker_body() {
    rm -rf "$DW"; mkdir -p /etc/docker "$DW"
    # docs/integration.md's daemon.json lines, plus what the VM needs (no network, vfs)
    jq -n --arg D "$DW" '{"runtimes": {"vtpm": {"path": "/usr/bin/vtpm-runc"}},
        "data-root": "\($D)/data", "exec-root": "\($D)/exec", "pidfile": "\($D)/docker.pid",
        "storage-driver": "vfs", "bridge": "none", "iptables": false, "ip-masq": false}' > /etc/docker/daemon.json
    dockerd > "$DW/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    DIAG+=("$DW/dockerd.log")
    wait_daemon "$DOCKERD_PID" dockerd "$DW/dockerd.log" "$DOCKER" version || return 1
    make_rootfs "$DW/rootfs"
    tar -C "$DW/rootfs" -cf "$DW/rootfs.tar" . || { why "tar of the rootfs failed"; return 1; }
    run_cmd docker-import "$DOCKER" import "$DW/rootfs.tar" vtpm-pkg:1
    [ "$RC" = 0 ] || { why "docker import: $(out_of docker-import)"; return 1; }
    run_cmd docker-run "$DOCKER" run --rm --network none -v /usr:/usr:ro --runtime vtpm vtpm-pkg:1 /bin/sh -c "$TPM_SCRIPT"
    note "FIGURE: first_docker_ms=$MS"
    [ "$RC" = 0 ] || { why "docker run --runtime vtpm exited with $RC: $(out_of docker-run)"; return 1; }
    check_tpm "$E2E_WORK/docker-run.out" || return 1
    expect_clean "" "docker run --rm --runtime vtpm" || return 1
    run_cmd doctor-docker "$HOOK" doctor
    grep -qi '^ok: .*docker' "$E2E_WORK/doctor-docker.out" && ! grep -i 'docker' "$E2E_WORK/doctor-docker.out" | grep -qv '^ok' ||
        { why "doctor does not find Docker's vtpm runtime: $(grep -i docker "$E2E_WORK/doctor-docker.out" | tr '\n' ' ')"; return 1; }
}

# containerd: the fix doctor prints, applied to Debian's own config.toml as printed, gives a
# containerd whose CRI plugin serves and has the runtime vtpm with the installed vtpm-runc
CD_PID=""
t_containerd_fix() { t_containerd_fix_body; local rc=$?; stop_daemon "$CD_PID" containerd || rc=1; return $rc; }
t_containerd_fix_body() {
    local fix
    run_cmd doctor-cd "$HOOK" doctor
    fix=$(sed -n 's/^warn: containerd: .*(fix: \(.*\), then restart containerd)$/\1/p' "$E2E_WORK/doctor-cd.out")
    [ -n "$fix" ] || { why "doctor names no containerd fix: $(grep containerd "$E2E_WORK/doctor-cd.out" | tr '\n' ' ')"; return 1; }
    note "fix: $fix"
    sh -c "$fix" || { why "doctor's containerd fix failed: $fix"; return 1; }
    containerd > "$E2E_WORK/containerd.log" 2>&1 &
    CD_PID=$!
    DIAG+=("$E2E_WORK/containerd.log" "$E2E_WORK/cri-status.out" "$E2E_WORK/cri-status.err")
    wait_daemon "$CD_PID" containerd "$E2E_WORK/containerd.log" \
        /usr/bin/python3 "$HERE/cri/cri_client.py" --socket /run/containerd/containerd.sock call Version || return 1
    run_cmd cri-status /usr/bin/python3 "$HERE/cri/cri_client.py" --socket /run/containerd/containerd.sock \
        call Status '{"verbose": true}'
    # the client's answer: "OK <json>" or "ERR <code> <message>"
    [ "$RC" = 0 ] && grep -q '^OK ' "$E2E_WORK/cri-status.out" || { why "CRI Status: $(out_of cri-status)"; return 1; }
    sed 's/^OK //' "$E2E_WORK/cri-status.out" > "$E2E_WORK/cri-status.json"
    [ "$(jq -r '.info.config | fromjson | .containerd.runtimes.vtpm.options.BinaryName' "$E2E_WORK/cri-status.json")" = /usr/bin/vtpm-runc ] ||
        { why "the CRI plugin's runtime vtpm: $(jq -c '.info.config | fromjson | .containerd.runtimes | keys' "$E2E_WORK/cri-status.json" 2>&1)"; return 1; }
    note "CRI runtimes: $(jq -c '.info.config | fromjson | .containerd.runtimes | keys' "$E2E_WORK/cri-status.json")"
}

# ---------------------------------------------------------------- Kubernetes node
t_k8s_policy() {
    jq '.kubernetesIdentity = "containerd"' /etc/vtpm-hook/policy.json > "$E2E_WORK/policy.json" &&
        write_policy /etc/vtpm-hook/policy.json "$(cat "$E2E_WORK/policy.json")" || return 1
    run_cmd doctor-k8s "$HOOK" doctor
    grep -q '^ok: .*policy' "$E2E_WORK/doctor-k8s.out" ||
        { why "doctor on the Kubernetes policy: $(grep -i policy "$E2E_WORK/doctor-k8s.out" | tr '\n' ' ')"; return 1; }
}

# ---------------------------------------------------------------- upgrade, remove, purge
t_upgrade() {
    local before after
    [ -r "$DEB_NEXT" ] || { why "no PKG_DEB_NEXT package (the upgrade)"; return 1; }
    readme_bundle pkg-up "$NV_SCRIPT" || return 1
    container_run runc pkg-up || return 1
    grep -q '^NV-WRITTEN' "$BUNDLE/out" || { why "NV write before the upgrade: rc $RC $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    expect_clean pkg-up "runc run (writer)" || return 1
    # the administrator changes the policy: the upgrade must keep it
    jq '.statePathRoots = ["/srv/tpm-upgrade"]' /etc/vtpm-hook/policy.json > "$E2E_WORK/policy.json" &&
        write_policy /etc/vtpm-hook/policy.json "$(cat "$E2E_WORK/policy.json")" || return 1
    before=$(dpkg-query -W -f='${Version}' vtpm-hook)
    run_cmd apt-upgrade "${APT[@]}" install "$DEB_NEXT"
    [ "$RC" = 0 ] || { why "apt install of the next version exited with $RC: $(out_of apt-upgrade)"; return 1; }
    after=$(dpkg-query -W -f='${Version}' vtpm-hook)
    [ "$before" != "$after" ] || { why "the version did not change ($before)"; return 1; }
    note "upgraded $before -> $after"
    jq -e '.statePathRoots == ["/srv/tpm-upgrade"]' /etc/vtpm-hook/policy.json > /dev/null ||
        { why "the upgrade replaced the administrator's policy: $(jq -c . /etc/vtpm-hook/policy.json)"; return 1; }
    container_run runc pkg-up || return 1
    grep -q '^NV-READ package-secret' "$BUNDLE/out" || { why "NV secret after the upgrade: rc $RC $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    expect_clean pkg-up "runc run (reader)" || return 1
}
t_remove_purge() {
    local before
    readme_bundle pkg-live 'sleep 600' || return 1
    CLEANUP+=("runc pkg-live")
    timeout 60 runc create --bundle "$BUNDLE" pkg-live > "$BUNDLE/out" 2> "$BUNDLE/err" && timeout 30 runc start pkg-live ||
        { why "runc create/start: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    before=$(tree_fp "$STATE_ROOT")
    run_cmd apt-remove "${APT[@]}" remove vtpm-hook
    [ "$RC" = 0 ] || { why "apt remove exited with $RC: $(out_of apt-remove)"; return 1; }
    grep -q '^vtpm-hook: 1 container(s) have a live vTPM and keep it' "$E2E_WORK/apt-remove.out" "$E2E_WORK/apt-remove.err" ||
        { why "apt remove did not say a live container keeps its vTPM: $(out_of apt-remove)"; return 1; }
    [ ! -e /usr/bin/vtpm-hook ] && [ ! -e /usr/bin/vtpm-runc ] || { why "apt remove left the binaries"; return 1; }
    [ ! -e /lib/systemd/system/vtpm-hook-gc.timer ] || { why "apt remove left the units"; return 1; }
    [ ! -e /run/cdi/vtpm-hook.json ] || { why "apt remove left a CDI spec naming the removed binary"; return 1; }
    [ -e /etc/vtpm-hook/policy.json ] || { why "apt remove (not purge) removed the policy"; return 1; }
    # the live container's TPM still answers
    run_cmd exec-live timeout 60 runc exec pkg-live tpm2_getrandom -T device:/dev/tpmrm0 --hex 8
    [ "$RC" = 0 ] && grep -Eq '^[0-9a-f]{16}$' "$E2E_WORK/exec-live.out" ||
        { why "the live container's TPM after apt remove: rc $RC $(out_of exec-live)"; return 1; }
    timeout 30 runc kill pkg-live KILL; wait_status runc pkg-live stopped 60 || { why "pkg-live did not stop"; return 1; }
    timeout 30 runc delete pkg-live 2>/dev/null   # (its poststop hook is gone with the package)
    # its emulator saw the container's end and stopped, state saved; the run record stays
    # (no teardown ran) until a reinstalled gc removes it
    rm -f "$RUN_ROOT/pkg-live.json"
    expect_clean pkg-live "the live container's stop after apt remove" || return 1
    [ -s "$STATE_ROOT/pkg-live/tpm2-00.permall" ] || { why "no state of the live container after its stop"; return 1; }
    run_cmd apt-purge "${APT[@]}" purge vtpm-hook
    [ "$RC" = 0 ] || { why "apt purge exited with $RC: $(out_of apt-purge)"; return 1; }
    grep -q '^vtpm-hook: kept the TPM state in /var/lib/vtpm-hook' "$E2E_WORK/apt-purge.out" "$E2E_WORK/apt-purge.err" ||
        { why "apt purge did not say the state is kept: $(out_of apt-purge)"; return 1; }
    [ ! -e /etc/vtpm-hook/policy.json ] && [ ! -e /etc/modules-load.d/vtpm-hook.conf ] ||
        { why "apt purge left the configuration"; return 1; }
    for d in pkg-runc pkg-up pkg-live; do
        [ -s "$STATE_ROOT/$d/tpm2-00.permall" ] || { why "apt remove/purge lost $STATE_ROOT/$d/tpm2-00.permall"; return 1; }
    done
    [ "$(tree_fp "$STATE_ROOT")" != "" ] || { why "state root empty after purge (before: $before)"; return 1; }
    note "$(grep -h '^vtpm-hook: kept' "$E2E_WORK/apt-purge.out" "$E2E_WORK/apt-purge.err" | head -n1)"
}

# ---------------------------------------------------------------- run
run_if() { local n=$1; shift; [[ $n =~ $ONLY ]] && scenario "$n" "$@"; return 0; }
T_START=$(now_ms)
case $PHASE in
    install)
        run_if install        t_install
        run_if doctor         t_doctor
        run_if units          t_units
        run_if podman-hooksd  t_podman_hooksd
        run_if podman-cdi     t_podman_cdi
        run_if runc-config    t_runc_config
        run_if docker         t_docker
        run_if containerd-fix t_containerd_fix
        run_if doctor-all-ok  t_doctor_all_ok
        run_if k8s-policy     t_k8s_policy ;;
    remove)
        run_if upgrade        t_upgrade
        run_if remove-purge   t_remove_purge ;;
    *)  fatal "unknown PHASE '$PHASE'" ;;
esac
echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
