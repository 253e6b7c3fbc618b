#!/bin/bash
# tests/e2e/cri-tests.sh - a Kubernetes node at containerd 1.6's CRI: vtpm-runc as the runtime
# handler `vtpm`, the policy's "kubernetesIdentity": "containerd", pods driven the way the
# kubelet drives them.
#
#   cri-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM (`tests/e2e/run.sh cri` boots it). Debian 12 has no kubelet
# and no crictl: cri/cri_client.py (python3-grpcio, python3-protobuf, protoc) makes the
# kubelet's calls (runtime.v1 RuntimeService and ImageService) on containerd's socket, with
# cri/api.proto, a subset of k8s.io/cri-api's. No network, no CNI: host-network pods; the
# sandbox image is a static cri/pause.c built here; the workload image holds only symlinks
# and gets the host's /usr (tpm2-tools) through a read-only CRI mount. Both are imported with
# `ctr -n k8s.io images import`. containerd runs from Debian's package with a config of its own
# (root, state and socket under $E2E_WORK) whose CRI plugin has the runtime `vtpm`
# (io.containerd.runc.v2, BinaryName = $VTPM_RUNC) as docs/integration.md gives it.
#
# Scenarios (in this order; each after cri-runtime uses what the earlier ones left: the pod of
# namespace A, its secret, its EK name):
#   cri-runtime            containerd answers Version over CRI runtime.v1; the `vtpm` handler's
#                          BinaryName is $VTPM_RUNC; both images are known to the CRI plugin
#   pod-nv-write           pod A/db-0 (handler vtpm), container app (attempt 0) writes a secret
#                          into NV 0x1500020; its state is <state-root>/kubernetes/A_db-0_app,
#                          not <state-root>/<container id>; once it exits nothing is left.
#                          FIGURE: the first pod + container after containerd's start
#   sandbox-no-tpm         the pod's pause container: no /dev/tpm* in /proc/<pid>/root/dev, no
#                          run record (`vtpm-hook status --json`), no state, no hooks in its
#                          config.json
#   kubelet-restart        CreateContainer app attempt 1 in the same sandbox (a new container
#                          id) reads the secret and has the same EK; its /dev has the TPM, its
#                          record is listed; RemoveContainer of attempt 0; StopContainer
#   pod-remove-clean       attempt 2 running with its TPM, then StopPodSandbox + RemovePodSandbox
#                          as the kubelet deletes a pod: no emulator, keeper, proxy-fd holder,
#                          chip, /dev/tpm* beyond those before, run record or shim is left; the
#                          state directory stays
#   pod-recreate           pod A/db-0 created again (new sandbox, new pod UID): reads the secret,
#                          same EK
#   other-namespace        pod db-0 in namespace B: NV index absent, another EK, its own state
#   example-statefulset    examples/kubernetes/: the RuntimeClass's handler is vtpm; the
#                          StatefulSet's container (command, env) writes NV, stops at once on
#                          SIGTERM, and its restart reads NV back
# Environment: VTPM_RUNC (default: vtpm-runc beside the hook; when set, the hook is the file it
# links to, whatever the argument), CRI_POLICY (a policy file to use
# as /etc/vtpm-hook/policy.json, e.g. the installed package's; default: this script writes one
# with "kubernetesIdentity": "$CRI_K8S_IDENTITY" (default containerd; "off" shows the scenarios
# that need it fail) and wrapperHookOptions under $E2E_WORK), E2E_ONLY (regex of scenarios).
# Prints "PASS: name" / "FAIL: name: why", indented notes, "FIGURE: ..." lines and finally
# "N passed, M failed". Exit status: 0 all passed, 1 some failed, 2 the environment is unusable.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_WORK=${E2E_WORK:-/run/vtpm-cri}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck disable=SC2034  # (read by lib.sh's expect_clean)
SETTLE_TIMEOUT=30     # the shim runs the poststop hook (runc delete) after the CRI call returns

HOOK=${1:-${VTPM_HOOK:-$(cd "$HERE/../.." && pwd)/build/vtpm-hook}}
ONLY=${E2E_ONLY:-.}
PY=/usr/bin/python3            # Debian's, with python3-grpcio and python3-protobuf
POLICY_FILE=/etc/vtpm-hook/policy.json     # the only file vtpm-runc reads

# The hook is what the wrapper runs as its hooks: itself. A given VTPM_RUNC (e.g. an installed
# /usr/bin/vtpm-runc) decides, whatever hook the suite runner passed.
if [ -n "${VTPM_RUNC:-}" ]; then
    HOOK=$(readlink -f "$VTPM_RUNC") || HOOK=$VTPM_RUNC
fi
# it writes the wrapper's fixed policy path and starts containerd: only in the throw-away guest
[ -x /run/vtpmvm/stage2 ] || fatal "runs only inside the test VM (tests/e2e/run.sh cri): it writes $POLICY_FILE"
preflight containerd ctr containerd-shim-runc-v2 runc jq gcc protoc tar sha256sum "$PY" \
    tpm2_createprimary tpm2_readpublic tpm2_nvdefine tpm2_nvwrite tpm2_nvread timeout
"$PY" -c 'import grpc, google.protobuf' 2> /dev/null ||
    fatal "$PY cannot import grpc and google.protobuf (apt-get install python3-grpcio python3-protobuf)"
VTPM_RUNC=${VTPM_RUNC:-$(dirname "$HOOK")/vtpm-runc}
[ -x "$VTPM_RUNC" ] || fatal "no runtime wrapper $VTPM_RUNC (set VTPM_RUNC)"
[ "$(readlink -f "$VTPM_RUNC")" = "$(readlink -f "$HOOK")" ] || fatal "$VTPM_RUNC is not $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$E2E_WORK" "$LOG_DIR" /etc/vtpm-hook
# the policy: the one given (CRI_POLICY), else one written here
if [ -n "${CRI_POLICY:-}" ]; then
    [ -f "$CRI_POLICY" ] || fatal "CRI_POLICY=$CRI_POLICY is not a file"
    [ "$CRI_POLICY" -ef "$POLICY_FILE" ] || cp "$CRI_POLICY" "$POLICY_FILE" || fatal "cannot copy $CRI_POLICY to $POLICY_FILE"
else
    write_policy "$E2E_WORK/policy.json" "$(jq -n --arg k "${CRI_K8S_IDENTITY:-containerd}" \
        --arg S "$STATE_ROOT" --arg R "$RUN_ROOT" --arg L "$LOG_DIR/wrapper-hooks.log" '
        {"kubernetesIdentity": $k,
         "wrapperHookOptions": {"stateRoot": $S, "runRoot": $R, "logFile": $L, "logLevel": "debug"}}')" &&
        write_policy "$POLICY_FILE" "$(cat "$E2E_WORK/policy.json")" || fatal "cannot write the policy: $WHY"
fi
# where the hooks the wrapper adds keep state, records and log (the hook's defaults otherwise)
STATE_ROOT=$(jq -r '.wrapperHookOptions.stateRoot // "/var/lib/vtpm-hook"' "$POLICY_FILE") &&
    RUN_ROOT=$(jq -r '.wrapperHookOptions.runRoot // "/run/vtpm-hook"' "$POLICY_FILE") &&
    WLOG=$(jq -r '.wrapperHookOptions.logFile // ""' "$POLICY_FILE") &&
    IDENTITY=$(jq -r '.kubernetesIdentity // "off"' "$POLICY_FILE") || fatal "$POLICY_FILE is not JSON"
mkdir -p "$STATE_ROOT" "$RUN_ROOT"

echo "# kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/cgroup v2/;s/tmpfs/cgroup v1/'), tpm major $TPM_MAJOR"
echo "# $(containerd --version), $(runc --version | head -n1)"
echo "# handler vtpm: $VTPM_RUNC -> $(readlink -f "$VTPM_RUNC"); policy $POLICY_FILE: kubernetesIdentity $IDENTITY, state root $STATE_ROOT, run root $RUN_ROOT"
T_START=$(now_ms)
DEVS_BEFORE=$(echo /dev/tpm*)      # the host's TPM nodes before any pod (the glob itself if none)

# ---------------------------------------------------------------- containerd with CRI
CD=$E2E_WORK/containerd
SOCK=$CD/containerd.sock
CTR=(ctr --address "$SOCK" -n k8s.io)
PAUSE_IMAGE=localhost/vtpm-e2e/pause:1
TOOLS_IMAGE=localhost/vtpm-e2e/tools:1
CD_PID=""
mkdir -p "$CD/cni/net.d" "$CD/cni/bin" "$CD/pods"
# Only the runtime entry `vtpm` is what docs/integration.md tells a node's administrator to
# add (`runc` is containerd's default one, which a config that names runtimes must keep, or the
# CRI plugin does not load: "no corresponding runtime configured"); the rest keeps the test's containerd apart from the guest's paths, without CNI (host
# network only) and AppArmor (no profiles in the test VM).
cat > "$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CD/cni/bin"
    conf_dir = "$CD/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vtpm]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vtpm.options]
      BinaryName = "$VTPM_RUNC"
EOF

# The CRI client runs as a coprocess for the whole script: one Python start (seconds under TCG)
# and one connection. cri METHOD [JSON]: one call; CRI_OUT = the answer's JSON; a failed call
# returns 1 with WHY = the gRPC code and message.
CRIC_PID=""
cri_client_start() {
    local line
    coproc CRIC { exec "$PY" "$HERE/cri/cri_client.py" --socket "$SOCK" serve 2> "$CD/cri-client.err"; }
    read -r -t 120 -u "${CRIC[0]}" line && [ "$line" = READY ] ||
        { why "the CRI client did not start: $(tail -n 3 "$CD/cri-client.err" | tr '\n' ' ')"; return 1; }
}
cri_client_stop() {
    [ -n "$CRIC_PID" ] || return 0
    kill "$CRIC_PID" 2>/dev/null; wait "$CRIC_PID" 2>/dev/null; CRIC_PID=""
}
CRI_OUT=""
cri() {
    local m=$1 req=${2:-"{}"} line
    CRI_OUT=""
    [ -n "$CRIC_PID" ] && alive "$CRIC_PID" && [ -n "${CRIC[1]:-}" ] ||
        { why "CRI $m: the client is not running ($(tail -n 3 "$CD/cri-client.err" | tr '\n' ' '))"; return 1; }
    printf '%s %s\n' "$m" "${req//$'\n'/ }" >&"${CRIC[1]}"
    # the client's own deadline per call is 150 s (CRI_CALL_TIMEOUT): it always answers first
    read -r -t 200 -u "${CRIC[0]}" line ||
        { cri_client_stop; why "CRI $m: no answer within 200 s"; return 1; }
    case $line in
        "OK "*) CRI_OUT=${line#OK }; return 0 ;;
        *)      why "CRI $m failed: ${line#ERR }"; return 1 ;;
    esac
}
# jqo FILTER: FILTER on the last answer
jqo() { jq -r "$1" <<< "$CRI_OUT"; }

start_containerd() {
    local t0 ms
    cri_client_start || return 1
    t0=$(now_ms)
    containerd --config "$CD/config.toml" > "$CD/containerd.log" 2>&1 &
    CD_PID=$!
    until cri Version '{"version": "v1"}'; do
        alive "$CD_PID" || { why "containerd exited: $(tail -n 3 "$CD/containerd.log" | tr '\n' ' ')"; return 1; }
        [ $(( $(now_ms) - t0 )) -lt 120000 ] || { why "containerd's CRI did not answer within 120 s: $WHY"; return 1; }
        sleep 0.5
    done
    ms=$(( $(now_ms) - t0 ))
    WHY=""      # (the tries before it answered)
    echo "FIGURE: cri_containerd_ready_ms=$ms (containerd started -> CRI Version answered)"
}
# stop_containerd: pods left by a failure first (the kubelet's way), then containerd itself
stop_containerd() {
    local s
    [ -n "$CD_PID" ] || return 0
    if cri ListPodSandbox; then
        for s in $(jqo '.items[].id'); do
            cri StopPodSandbox "{\"pod_sandbox_id\": \"$s\"}"; cri RemovePodSandbox "{\"pod_sandbox_id\": \"$s\"}"
        done
    fi
    cri_client_stop
    stop_daemon "$CD_PID" containerd || echo "# $WHY"
    CD_PID=""
    # a shim outlives containerd while its pod lives: none may stay for a later script
    for s in $(live_named containerd-shim); do kill -KILL "$s" 2>/dev/null; done
}
at_exit stop_containerd

# ---------------------------------------------------------------- images (no registry)
# image_archive NAME ROOTFS ENTRYPOINT_JSON OUT: a docker-archive tarball (manifest.json,
# config, one uncompressed layer) as `ctr images import` reads it
image_archive() {
    local name=$1 root=$2 ep=$3 out=$4 d diff
    d=$(mktemp -d "$CD/image.XXXXXX")
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$d/layer.tar" . || { why "tar of $root failed"; return 1; }
    diff=$(sha256sum < "$d/layer.tar") && diff=${diff%% *}
    jq -n --arg d "sha256:$diff" --argjson ep "$ep" --arg arch "$(dpkg --print-architecture)" '
        {"architecture": $arch, "os": "linux",
         "config": {"Entrypoint": $ep, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
         "rootfs": {"type": "layers", "diff_ids": [$d]}}' > "$d/config.json" &&
        jq -n --arg n "$name" '[{"Config": "config.json", "RepoTags": [$n], "Layers": ["layer.tar"]}]' > "$d/manifest.json" &&
        tar -C "$d" -cf "$out" manifest.json config.json layer.tar || { why "cannot write the image archive $out"; return 1; }
    rm -rf "$d"
}
build_images() {
    local img=$CD/images
    mkdir -p "$img/pause/dev" "$img/pause/proc" "$img/pause/sys" "$img/pause/etc"
    gcc -static -Os -o "$img/pause/pause" "$HERE/cri/pause.c" 2> "$img/gcc.err" ||
        { why "gcc -static cri/pause.c: $(head -c 300 "$img/gcc.err")"; return 1; }
    image_archive "$PAUSE_IMAGE" "$img/pause" '["/pause"]' "$img/pause.tar" || return 1
    make_rootfs "$img/tools"        # bin -> usr/bin, ...; /usr comes from a CRI mount
    image_archive "$TOOLS_IMAGE" "$img/tools" null "$img/tools.tar" || return 1
}
import_images() {
    local f
    for f in pause tools; do
        timeout 120 "${CTR[@]}" images import "$CD/images/$f.tar" > "$CD/import-$f.out" 2>&1 ||
            { why "ctr -n k8s.io images import $f.tar: $(tail -n 3 "$CD/import-$f.out" | tr '\n' ' ')"; return 1; }
    done
}

# ---------------------------------------------------------------- pods, the kubelet's way
# pod_config NS NAME UID: the PodSandboxConfig (host network, so no CNI; own PID namespaces)
pod_config() {
    local dir=$CD/pods/$1_$2_$3
    mkdir -p "$dir"
    printf '{"metadata": {"name": "%s", "uid": "%s", "namespace": "%s", "attempt": 0}, "log_directory": "%s", "dns_config": {"servers": ["127.0.0.1"]}, "labels": {"io.kubernetes.pod.name": "%s", "io.kubernetes.pod.namespace": "%s", "io.kubernetes.pod.uid": "%s"}, "linux": {"security_context": {"namespace_options": {"network": "NODE", "pid": "CONTAINER", "ipc": "POD"}}}}' \
        "$2" "$3" "$1" "$dir" "$2" "$1" "$3"
}
new_uid() { local h; h=$(gen_secret)$(gen_secret); echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"; }

# run_pod NS NAME UID: RunPodSandbox with the handler vtpm; sets SID and PODCFG
run_pod() {
    PODCFG=$(pod_config "$1" "$2" "$3")
    cri RunPodSandbox "{\"config\": $PODCFG, \"runtime_handler\": \"vtpm\"}" || return 1
    SID=$(jqo .pod_sandbox_id)
    [[ $SID =~ ^[0-9a-f]{64}$ ]] || { why "RunPodSandbox gave no sandbox id: $CRI_OUT"; return 1; }
}
# remove_pod SID: StopPodSandbox, then RemovePodSandbox (the kubelet deleting a pod)
remove_pod() {
    cri StopPodSandbox "{\"pod_sandbox_id\": \"$1\"}" && cri RemovePodSandbox "{\"pod_sandbox_id\": \"$1\"}"
}

# The container's script: TPM devices, the EK's name (an ECC primary key of the endorsement
# hierarchy: the same seed gives the same name), then NV 0x1500020: read it, or (MODE=write)
# define it and write $SECRET; STAY=1: then wait for SIGTERM (exit 0).
# shellcheck disable=SC2016
APP_SCRIPT='T=device:/dev/tpmrm0
for d in /dev/tpm0 /dev/tpmrm0; do if [ -c $d ]; then echo "DEV $d"; else echo "NODEV $d"; fi; done
tpm2_createprimary -T $T -C e -G ecc256 -c /tmp/ek.ctx > /dev/null || { echo EK-FAILED; exit 3; }
echo "EKNAME $(tpm2_readpublic -T $T -c /tmp/ek.ctx | sed -n "s/^name: //p")"
if tpm2_nvread -T $T 0x1500020 -C o -s 16 -o /tmp/nv 2> /dev/null; then
  echo "NV-HAS $(cat /tmp/nv)"
elif [ "$MODE" = write ]; then
  tpm2_nvdefine -T $T 0x1500020 -C o -s 16 -a "ownerread|ownerwrite|authread|authwrite" > /dev/null || exit 4
  printf %s "$SECRET" > /tmp/s
  tpm2_nvwrite -T $T 0x1500020 -C o -i /tmp/s || exit 5
  echo "NV-WROTE $SECRET"
else
  echo NV-EMPTY
fi
echo READY
if [ "$STAY" = 1 ]; then trap "echo TERM; exit 0" TERM; sleep 600 & wait; fi'

# start_container CONFIG: CreateContainer (a ContainerConfig's JSON) in sandbox $SID with
# $PODCFG, then StartContainer; sets CID and CLOG (its CRI log file)
start_container() {
    cri CreateContainer "{\"pod_sandbox_id\": \"$SID\", \"config\": $1, \"sandbox_config\": $PODCFG}" || return 1
    CID=$(jqo .container_id)
    [[ $CID =~ ^[0-9a-f]{64}$ ]] || { why "CreateContainer gave no container id: $CRI_OUT"; return 1; }
    CLOG=$(jq -r .log_directory <<< "$PODCFG")/$(jq -r .log_path <<< "$1")
    DIAG+=("$CLOG")
    cri StartContainer "{\"container_id\": \"$CID\"}"
}
# app_config NAME ATTEMPT ENV_JSON COMMAND_JSON: a ContainerConfig as the kubelet makes it, the
# image tools with the host's /usr (tpm2-tools) mounted read-only
app_config() {
    jq -nc --arg n "$1" --argjson a "$2" --argjson env "$3" --argjson cmd "$4" --arg img "$TOOLS_IMAGE" '
        {"metadata": {"name": $n, "attempt": $a}, "image": {"image": $img},
         "command": $cmd, "envs": $env,
         "mounts": [{"container_path": "/usr", "host_path": "/usr", "readonly": true}],
         "log_path": "\($n)/\($a).log",
         "labels": {"io.kubernetes.container.name": $n},
         "linux": {"security_context": {"namespace_options": {"network": "NODE", "pid": "CONTAINER", "ipc": "POD"}}}}'
}
# start_app NAME ATTEMPT MODE STAY: the container running APP_SCRIPT
start_app() {
    start_container "$(app_config "$1" "$2" "$(jq -nc --arg m "$3" --arg s "$4" --arg x "$SECRET" \
        '[{"key": "MODE", "value": $m}, {"key": "STAY", "value": $s}, {"key": "SECRET", "value": $x}]')" \
        "$(jq -nc --arg s "$APP_SCRIPT" '["/bin/sh", "-c", $s]')")"
}
# ctr_state ID: CSTATE, CEXIT (ContainerStatus)
ctr_state() {
    cri ContainerStatus "{\"container_id\": \"$1\"}" || return 1
    [[ $CRI_OUT =~ \"state\":\"([A-Z_]+)\" ]] && CSTATE=${BASH_REMATCH[1]}
    [[ $CRI_OUT =~ \"exit_code\":(-?[0-9]+) ]] && CEXIT=${BASH_REMATCH[1]}
}
# wait_exited ID SECONDS: until the container has exited; CEXIT its status
wait_exited() {
    local t0; t0=$(now_ms); CSTATE=""
    while ctr_state "$1" && [ "$CSTATE" != CONTAINER_EXITED ]; do
        [ $(( $(now_ms) - t0 )) -lt $(( $2 * 1000 )) ] || { why "container ${1:0:12}: $CSTATE, not exited after $2 s"; return 1; }
        sleep 0.3
    done
    [ "$CSTATE" = CONTAINER_EXITED ]
}
# app_out: the container's output lines (the CRI log without "TIME STREAM TAG ")
app_out() { sed -n 's/^[^ ]* std[a-z]* [FP] //p' "$CLOG" 2>/dev/null; }
# wait_ready SECONDS: until the container printed READY (or exited without it)
wait_ready() {
    local t0; t0=$(now_ms)
    until app_out | grep -q '^READY$'; do
        ctr_state "$CID" && [ "$CSTATE" = CONTAINER_EXITED ] && ! app_out | grep -q '^READY$' &&
            { why "the container exited ($CEXIT) before READY: $(app_out | tr '\n' ' ')"; return 1; }
        [ $(( $(now_ms) - t0 )) -lt $(( $1 * 1000 )) ] || { why "no READY from the container within $1 s: $(app_out | tr '\n' ' ')"; return 1; }
        sleep 0.3
    done
}
ek_name() { app_out | sed -n 's/^EKNAME //p'; }
# pid_of KIND ID: the process id the CRI plugin reports (verbose info) for a sandbox or container
pid_of() {
    if [ "$1" = sandbox ]; then cri PodSandboxStatus "{\"pod_sandbox_id\": \"$2\", \"verbose\": true}" || return 1
    else cri ContainerStatus "{\"container_id\": \"$2\", \"verbose\": true}" || return 1; fi
    jqo '.info.info | fromjson | .pid'
}
# records: container ids with a live vTPM (`vtpm-hook status --json`)
records() { "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" status --json | jq -r '.[].containerId'; }
# bundle_config ID: the OCI config.json the runc v2 shim hands the runtime
bundle_config() { echo "$CD/state/io.containerd.runtime.v2.task/k8s.io/$1/config.json"; }
tpm_nodes() { local d=$1/dev f out=""; for f in "$d"/tpm*; do [ -e "$f" ] && out+="${f##*/} "; done; echo "${out% }"; }

need() { local v; for v in "$@"; do [ -n "${!v}" ] || { why "needs $v from an earlier scenario (run them in order)"; return 1; }; done; }

NS_A=cri-a-$(gen_secret | cut -c1-6)     # fresh namespaces: a given state root may hold older pods
NS_B=cri-b-${NS_A#cri-a-}
POD=db-0
SECRET=$(gen_secret)
CRI_READY="" SID_A="" EK_A="" CID0="" CID1=""
state_of() { echo "$STATE_ROOT/kubernetes/$1_${POD}_app"; }

# ---------------------------------------------------------------- scenarios
t_runtime() {
    DIAG+=("$CD/containerd.log" "$CD/cri-client.err")
    build_images || return 1
    start_containerd || return 1
    [ "$(jqo .runtime_name)" = containerd ] && [ "$(jqo .runtime_api_version)" = v1 ] ||
        { why "Version: $CRI_OUT"; return 1; }
    note "CRI Version: $(jqo '"\(.runtime_name) \(.runtime_version), API \(.runtime_api_version)"')"
    cri Status '{"verbose": true}' || return 1
    [ "$(jqo '.info.config | fromjson | .containerd.runtimes.vtpm.options.BinaryName')" = "$VTPM_RUNC" ] ||
        { why "the CRI plugin's runtime vtpm is not $VTPM_RUNC: $(jqo '.info.config | fromjson | .containerd.runtimes.vtpm' | tr '\n' ' ')"; return 1; }
    note "runtime conditions: $(jqo '[.status.conditions[] | "\(.type)=\(.status)"] | join(" ")') (no CNI: host-network pods only)"
    import_images || return 1
    local i
    for i in "$PAUSE_IMAGE" "$TOOLS_IMAGE"; do
        cri ImageStatus "{\"image\": {\"image\": \"$i\"}}" || return 1
        [ -n "$(jqo '.image.id // empty')" ] || { why "the CRI plugin does not know $i after the import: $CRI_OUT"; return 1; }
    done
    # shellcheck disable=SC2034  # (need reads it by name)
    CRI_READY=1
}

t_nv_write() {
    local t0 ms state
    need CRI_READY || return 1
    t0=$(now_ms)
    run_pod "$NS_A" "$POD" "$(new_uid)" || return 1
    SID_A=$SID
    start_app app 0 write 0 || return 1
    CID0=$CID
    ms=$(( $(now_ms) - t0 ))
    wait_ready 120 || return 1
    echo "FIGURE: cri_first_pod_ms=$ms (the first pod after containerd's start: RunPodSandbox + CreateContainer + StartContainer)"
    echo "FIGURE: cri_first_pod_tpm_ms=$(( $(now_ms) - t0 )) (the same, until the container had used its TPM: EK primary, NV define + write)"
    wait_exited "$CID0" 60 || return 1
    [ "$CEXIT" = 0 ] || { why "the container exited with $CEXIT: $(app_out | tr '\n' ' ')"; return 1; }
    app_out | grep -q '^DEV /dev/tpmrm0$' || { why "no /dev/tpmrm0 in the container: $(app_out | tr '\n' ' ')"; return 1; }
    app_out | grep -qx "NV-WROTE $SECRET" || { why "the secret was not written: $(app_out | tr '\n' ' ')"; return 1; }
    EK_A=$(ek_name)
    [ -n "$EK_A" ] || { why "no EK name: $(app_out | tr '\n' ' ')"; return 1; }
    state=$(state_of "$NS_A")
    [ -e "$state/tpm2-00.permall" ] ||
        { why "no TPM state in $state (kubernetesIdentity $IDENTITY): $(ls "$STATE_ROOT" "$STATE_ROOT/kubernetes" 2>&1 | tr '\n' ' ' | cut -c1-300)"; return 1; }
    [ ! -e "$STATE_ROOT/$CID0" ] || { why "state keyed by the container id too: $STATE_ROOT/$CID0"; return 1; }
    note "container ${CID0:0:12} (attempt 0): EK $EK_A, state $state"
    expect_clean "$CID0" "the container's exit" || return 1
}

t_sandbox() {
    local pid devs k
    need SID_A || return 1
    cri PodSandboxStatus "{\"pod_sandbox_id\": \"$SID_A\"}" || return 1
    [ "$(jqo .status.state)" = SANDBOX_READY ] && [ "$(jqo .status.runtime_handler)" = vtpm ] ||
        { why "sandbox ${SID_A:0:12}: $(jqo '"\(.status.state) handler \(.status.runtime_handler)"')"; return 1; }
    pid=$(pid_of sandbox "$SID_A") && alive "$pid" || { why "no live pause process for the sandbox ($pid)"; return 1; }
    [ "$(cat "/proc/$pid/comm")" = pause ] || { why "sandbox pid $pid is '$(cat "/proc/$pid/comm")', not pause"; return 1; }
    devs=$(tpm_nodes "/proc/$pid/root")
    [ -z "$devs" ] || { why "the pause container has $devs in its /dev"; return 1; }
    [ -d "/proc/$pid/root/dev" ] || { why "cannot see the pause container's /dev"; return 1; }
    ! records | grep -qx "$SID_A" || { why "vtpm-hook status lists the sandbox ${SID_A:0:12}"; return 1; }
    [ ! -e "$RUN_ROOT/$SID_A.json" ] && [ ! -e "$STATE_ROOT/$SID_A" ] ||
        { why "a run record or state of the sandbox id exists"; return 1; }
    k=$(cd "$STATE_ROOT/kubernetes" 2>/dev/null && echo "${NS_A}_${POD}_"*)
    [ "$k" = "${NS_A}_${POD}_app" ] || { why "Kubernetes states of the pod: '$k' (wanted only its container app's)"; return 1; }
    # the wrapper left the sandbox's config.json alone (no hooks), as the annotation asks
    jq -e '(.hooks // {} | length == 0) and .annotations["io.kubernetes.cri.container-type"] == "sandbox"' \
        "$(bundle_config "$SID_A")" > /dev/null ||
        { why "the sandbox's config.json: hooks $(jq -c '.hooks' "$(bundle_config "$SID_A")" 2>&1 | head -c 300)"; return 1; }
    note "pause pid $pid: /dev has $(ls "/proc/$pid/root/dev" | tr '\n' ' ')"
}

t_restart() {
    local pid
    need SID_A EK_A CID0 || return 1
    start_app app 1 read 1 || return 1
    CID1=$CID
    [ "$CID1" != "$CID0" ] || { why "attempt 1 has attempt 0's container id"; return 1; }
    wait_ready 120 || return 1
    app_out | grep -qx "NV-HAS $SECRET" ||
        { why "the restarted container (attempt 1, ${CID1:0:12}) does not read the secret: $(app_out | tr '\n' ' ')"; return 1; }
    [ "$(ek_name)" = "$EK_A" ] || { why "the restarted container's EK $(ek_name) is not $EK_A"; return 1; }
    # while it runs: its TPM is listed and in its /dev (what the sandbox lacks)
    records | grep -qx "$CID1" || { why "vtpm-hook status does not list ${CID1:0:12}: $(records | tr '\n' ' ')"; return 1; }
    pid=$(pid_of container "$CID1") && alive "$pid" || { why "no pid for ${CID1:0:12}"; return 1; }
    [ "$(tpm_nodes "/proc/$pid/root")" = "tpm0 tpmrm0" ] || { why "the container's /dev has '$(tpm_nodes "/proc/$pid/root")'"; return 1; }
    jq -e --arg w "$(readlink -f "$VTPM_RUNC")" '.hooks.createRuntime[0].path == $w and .hooks.poststop[0].path == $w' \
        "$(bundle_config "$CID1")" > /dev/null || { why "the container's config.json has no hooks of $VTPM_RUNC"; return 1; }
    # the kubelet removes the dead attempt: the TPM state is not the container's to take along
    cri RemoveContainer "{\"container_id\": \"$CID0\"}" || return 1
    [ -e "$(state_of "$NS_A")/tpm2-00.permall" ] || { why "RemoveContainer of attempt 0 took the state"; return 1; }
    cri StopContainer "{\"container_id\": \"$CID1\", \"timeout\": 30}" || return 1
    wait_exited "$CID1" 60 || return 1
    [ "$CEXIT" = 0 ] && app_out | grep -qx TERM || { why "StopContainer: exit $CEXIT, $(app_out | tail -n 2 | tr '\n' ' ')"; return 1; }
    expect_clean "$CID1" "StopContainer" || return 1
    cri RemoveContainer "{\"container_id\": \"$CID1\"}" || return 1
    note "attempt 1: container ${CID1:0:12}, same secret and EK"
}

t_remove() {
    local cid t0 left
    need SID_A || return 1
    start_app app 2 read 1 || return 1
    cid=$CID
    wait_ready 120 || return 1
    app_out | grep -qx "NV-HAS $SECRET" || { why "attempt 2: $(app_out | tr '\n' ' ')"; return 1; }
    [ -n "$(live_emulators)" ] && records | grep -qx "$cid" || { why "attempt 2 runs without a live emulator or record"; return 1; }
    # the launch measurement's image event: the CRI plugin's image name (measurementImage
    # "auto" follows kubernetesIdentity), none where the policy names no CRI runtime
    local ev want=none
    [ "$IDENTITY" = containerd ] && want=containerd
    ev=$("$HOOK" --run-root "$RUN_ROOT" log --id "$cid" | jq -c '.[1].content') ||
        { why "vtpm-hook log --id $cid failed"; return 1; }
    jq -e --arg w "$want" '.event == "image" and .source == $w and ($w == "none" or
        (.annotations["io.kubernetes.cri.image-name"] | test("vtpm-e2e/tools")))' <<< "$ev" > /dev/null ||
        { why "image event (policy kubernetesIdentity $IDENTITY): $ev"; return 1; }
    note "image event: $ev"
    # the kubelet deleting the pod: no StopContainer first
    t0=$(now_ms)
    remove_pod "$SID_A" || return 1
    note "StopPodSandbox + RemovePodSandbox: $(( $(now_ms) - t0 )) ms"
    SID_A=""
    expect_clean "$cid" "RemovePodSandbox" || return 1
    left=$(run_records | tr '\n' ' ')
    [ -z "$left" ] || { why "left in the run root $RUN_ROOT: $left"; return 1; }
    [ "$(echo /dev/tpm*)" = "$DEVS_BEFORE" ] || { why "/dev has $(echo /dev/tpm*), before the pods: $DEVS_BEFORE"; return 1; }
    cri ListPodSandbox || return 1
    [ "$(jqo '.items | length')" = 0 ] || { why "pods left: $(jqo '[.items[].id[:12]] | join(" ")')"; return 1; }
    cri ListContainers || return 1
    [ "$(jqo '.containers | length')" = 0 ] || { why "containers left: $(jqo '[.containers[].id[:12]] | join(" ")')"; return 1; }
    t0=$(now_ms)
    while [ -n "$(live_named containerd-shim)" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do sleep 0.2; done
    [ -z "$(live_named containerd-shim)" ] || { why "shim(s) left: $(live_named containerd-shim | tr '\n' ' ')"; return 1; }
    [ -e "$(state_of "$NS_A")/tpm2-00.permall" ] || { why "the pod's TPM state went with the pod"; return 1; }
}

# a later pod: run it, let its container read NV, remove it; MS = its start as for the first
pod_once() {
    local t0
    t0=$(now_ms)
    run_pod "$1" "$POD" "$(new_uid)" || return 1
    start_app app 0 read 0 || return 1
    MS=$(( $(now_ms) - t0 ))
    wait_ready 120 && wait_exited "$CID" 60 || return 1
    [ "$CEXIT" = 0 ] || { why "the container exited with $CEXIT: $(app_out | tr '\n' ' ')"; return 1; }
    remove_pod "$SID" || return 1
    expect_clean "$CID" "RemovePodSandbox" || return 1
}

t_recreate() {
    need EK_A || return 1
    pod_once "$NS_A" || return 1
    echo "FIGURE: cri_pod_ms=$MS (a later pod, the same calls)"
    app_out | grep -qx "NV-HAS $SECRET" ||
        { why "the re-created pod $NS_A/$POD does not read the secret: $(app_out | tr '\n' ' ')"; return 1; }
    [ "$(ek_name)" = "$EK_A" ] || { why "the re-created pod's EK $(ek_name) is not $EK_A"; return 1; }
}

t_other_ns() {
    local ek
    need EK_A || return 1
    pod_once "$NS_B" || return 1
    app_out | grep -qx NV-EMPTY || { why "pod $NS_B/$POD: $(app_out | tr '\n' ' ')"; return 1; }
    ek=$(ek_name)
    [ -n "$ek" ] && [ "$ek" != "$EK_A" ] || { why "pod $NS_B/$POD has EK '$ek' ($NS_A's: $EK_A)"; return 1; }
    [ -e "$(state_of "$NS_B")/tpm2-00.permall" ] || { why "no state $(state_of "$NS_B")"; return 1; }
    note "$NS_B/$POD: EK $ek"
}

# examples/kubernetes/: the StatefulSet's container (its command and env, the RuntimeClass's
# handler) as the kubelet would run its pod <name>-0; the image is the tools image (tpm2-tools
# from the host's /usr) instead of debian:12, so the example's apt-get step is skipped
EXAMPLES=$(cd "$HERE/../../examples/kubernetes" && pwd)
t_example() {
    local ex name env cmd ns t0
    need CRI_READY || return 1
    ex=$("$PY" - "$EXAMPLES/runtimeclass.yaml" "$EXAMPLES/statefulset.yaml" <<'PYEOF'
import json, sys, yaml
rc = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d["kind"] == "RuntimeClass")
ss = next(d for d in yaml.safe_load_all(open(sys.argv[2])) if d["kind"] == "StatefulSet")
pod = ss["spec"]["template"]["spec"]
print(json.dumps({"handler": rc["handler"], "class": rc["metadata"]["name"],
                  "runtimeClassName": pod.get("runtimeClassName"), "name": ss["metadata"]["name"],
                  "container": pod["containers"][0]}))
PYEOF
) || { why "cannot read the examples in $EXAMPLES"; return 1; }
    [ "$(jq -r '"\(.handler) \(.class) \(.runtimeClassName)"' <<< "$ex")" = "vtpm vtpm vtpm" ] ||
        { why "the examples' RuntimeClass/handler/runtimeClassName are not vtpm: $ex"; return 1; }
    name=$(jq -r .name <<< "$ex")-0
    # env: values, and the downward API's metadata.name (the pod's name)
    env=$(jq -c --arg pod "$name" '[.container.env[] | {"key": .name,
        "value": (.value // (if .valueFrom.fieldRef.fieldPath == "metadata.name" then $pod else error("env \(.name)") end))}]' <<< "$ex") &&
        cmd=$(jq -c '.container.command + (.container.args // [])' <<< "$ex") || { why "the example's env/command: $ex"; return 1; }
    ns=cri-e-${NS_A#cri-a-}
    run_pod "$ns" "$name" "$(new_uid)" || return 1
    start_container "$(app_config "$(jq -r .container.name <<< "$ex")" 0 "$env" "$cmd")" || return 1
    wait_grep "std[a-z]* F NV written: $name\$" "$CLOG" 120 || { why "the example's first start: $(app_out | tr '\n' ' ')"; return 1; }
    # its SIGTERM trap: StopContainer ends it at once, with status 0 (no 30 s grace, no SIGKILL)
    t0=$(now_ms)
    cri StopContainer "{\"container_id\": \"$CID\", \"timeout\": 30}" && wait_exited "$CID" 60 || return 1
    [ "$CEXIT" = 0 ] && [ $(( $(now_ms) - t0 )) -lt 20000 ] ||
        { why "StopContainer of the example: exit $CEXIT after $(( $(now_ms) - t0 )) ms"; return 1; }
    expect_clean "$CID" "StopContainer (example)" || return 1
    start_container "$(app_config "$(jq -r .container.name <<< "$ex")" 1 "$env" "$cmd")" || return 1
    wait_grep "std[a-z]* F NV read: $name *\$" "$CLOG" 120 || { why "the example's restart: $(app_out | tr '\n' ' ')"; return 1; }
    remove_pod "$SID" || return 1
    expect_clean "$CID" "RemovePodSandbox (example)" || return 1
    note "pod $ns/$name: $(app_out | grep '^NV read' | head -n 1)"
}

# ---------------------------------------------------------------- run
with_diag() { [ -z "$WLOG" ] || DIAG+=("$WLOG"); "$@"; local rc=$?; [ $rc = 0 ] || note "kernel: $(tpm_dmesg 5 | tr '\n' ' ')"; return $rc; }
run_if() { local n=$1; shift; [[ $n =~ $ONLY ]] && scenario "$n" with_diag "$@"; return 0; }

run_if cri-runtime      t_runtime
run_if pod-nv-write     t_nv_write
run_if sandbox-no-tpm   t_sandbox
run_if kubelet-restart  t_restart
run_if pod-remove-clean t_remove
run_if pod-recreate     t_recreate
run_if other-namespace  t_other_ns
run_if example-statefulset t_example

[ -z "$WLOG" ] || echo "FIGURE: setup_ms=$(grep -ho 'setup took [0-9]* ms' "$WLOG" 2>/dev/null | awk '{print $3}' | median) (the hook's own, per container)"
echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
