#!/bin/bash
# tests/e2e/engine-tests.sh - end-to-end tests of vtpm-runc, the runtime wrapper, under runc,
# containerd 1.6 (ctr) and Docker 20.10.
#
#   engine-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK; vtpm-runc lies beside it)
#
# Runs as root INSIDE the test VM (`tests/e2e/run.sh engines` boots it): needs /dev/vtpmx, runc,
# containerd + ctr + containerd-shim-runc-v2, dockerd + docker (Debian's docker.io), jq,
# tpm2-tools. It writes the wrapper's policy file /etc/vtpm-hook/policy.json (the guest's / is a
# throw-away overlay): hook options pointing at this suite's state and run roots. Scenarios:
#   passthrough-runc     --version, state, list, kill, delete: same output and status as runc's;
#                        a config.json that has the hooks already is byte-identical after
#                        `vtpm-runc create` and `vtpm-runc run`
#   wrapper-runc         a stock config.json: `vtpm-runc run` adds the hooks once (every other
#                        field kept, a second run changes nothing), the TPM works;
#                        VTPM_HOOK_VTPM=none: no hooks, no TPM; =1.2: a TPM 1.2; =3: one error
#                        line, exit 1, config.json untouched
#   policy-runtime       the policy's "runtime": /usr/bin/crun runs the containers (TPM checks)
#                        and answers --version; the wrapper itself as "runtime" is refused
#   containerd-ctr       containerd started here: `ctr run --runc-binary vtpm-runc --rootfs`
#                        runs tpm2_getrandom + tpm2_pcrread; an NV index written in one run is
#                        read in a second run of the same id; VTPM_HOOK_VTPM=none: no TPM;
#                        start times: plain runc, the wrapper with "none", the wrapper's vTPM
#   docker               dockerd started here (daemon.json "runtimes", vfs, no network), an
#                        image from `docker import`: `docker run --runtime vtpm`, NV written by
#                        `docker run --name x` read after `docker start -a x` and after
#                        `docker restart x`, -e
#                        VTPM_HOOK_VTPM=none: no TPM; start times as for containerd; the
#                        measured launch: ECC EK/AK quote over PCR 21 in a `docker run -d`
#                        container, the verifier (verify_measurements.py) accepts
#                        `vtpm-hook log`, the shim bundle's config.json and the quote
#                        (image event: source none)
# Prints "PASS: name" / "FAIL: name: why", indented notes and "FIGURE: ..." lines, and finally
# "N passed, M failed". Exit status: 0 all passed, 1 some failed, 2 the environment is unusable.
# E2E_ONLY=regex selects scenarios; TIMES=N start-time samples per variant (default 3).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_WORK=${E2E_WORK:-/run/vtpm-engines}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck disable=SC2034  # (read by lib.sh's expect_clean)
SETTLE_TIMEOUT=30     # engines run poststop (runc delete) after the client returns

HOOK=${1:-${VTPM_HOOK:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/vtpm-hook}}
ONLY=${E2E_ONLY:-.}
TIMES=${TIMES:-3}
DOCKER=/usr/bin/docker      # Debian's client (20.10), whatever else is on PATH
POLICY_FILE=/etc/vtpm-hook/policy.json

# it writes the wrapper's fixed policy path and starts daemons: only in the throw-away guest
[ -x /run/vtpmvm/stage2 ] || fatal "runs only inside the test VM (tests/e2e/run.sh engines): it writes $POLICY_FILE"
preflight runc crun jq containerd ctr containerd-shim-runc-v2 dockerd "$DOCKER" tpm2_getrandom \
    tpm2_pcrread tpm2_nvdefine tpm2_nvwrite tpm2_nvread tpm2_createek tpm2_createak tpm2_makecredential \
    tpm2_activatecredential tpm2_quote tpm2_checkquote python3 timeout cmp tar
WRAPPER=$(dirname "$HOOK")/vtpm-runc
[ -x "$WRAPPER" ] || fatal "no $WRAPPER (the build makes it: a link to vtpm-hook)"
[ "$(readlink -f "$WRAPPER")" = "$(readlink -f "$HOOK")" ] || fatal "$WRAPPER is not $HOOK"
# `vtpm-runc` by name for container_run and cleanup (the build directory has no runc: the
# wrapper still finds the real one further down PATH)
PATH=$(dirname "$HOOK"):$PATH

echo "# kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/cgroup v2/;s/tmpfs/cgroup v1/'), tpm major $TPM_MAJOR"
echo "# $(runc --version | head -n1), $(containerd --version), $($DOCKER --version)"
echo "# wrapper: $WRAPPER -> $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES" /etc/vtpm-hook
WLOG=$LOG_DIR/wrapper-hooks.log     # the log file of every hook the wrapper adds
POLICY_JSON=$(jq -nc --arg S "$STATE_ROOT" --arg R "$RUN_ROOT" --arg L "$WLOG" \
    '{"wrapperHookOptions": {"stateRoot": $S, "runRoot": $R, "logFile": $L, "logLevel": "debug"}}')
write_policy "$POLICY_FILE" "$POLICY_JSON" || fatal "cannot write $POLICY_FILE"
T_START=$(now_ms)

strip_time() { sed -E 's/time="[^"]*" ?//g'; }

# same_as_runc WHAT ARGS...: `vtpm-runc ARGS` and `runc ARGS` print the same (stdout, stderr
# without logrus' timestamps) and exit with the same status
same_as_runc() {
    local what=$1 a b; shift
    a=$(timeout 30 "$WRAPPER" "$@" 2> "$E2E_WORK/w.err"; echo "rc=$?")
    b=$(timeout 30 runc "$@" 2> "$E2E_WORK/r.err"; echo "rc=$?")
    [ "$a" = "$b" ] || { why "$what: vtpm-runc printed '${a:0:200}', runc '${b:0:200}'"; return 1; }
    [ "$(strip_time < "$E2E_WORK/w.err")" = "$(strip_time < "$E2E_WORK/r.err")" ] ||
        { why "$what: stderr differs: vtpm-runc '$(head -c 200 "$E2E_WORK/w.err")', runc '$(head -c 200 "$E2E_WORK/r.err")'"; return 1; }
    note "$what: same output, ${a##*rc=}"
}

# ---------------------------------------------------------------- 1. passthrough
t_passthrough() {
    local id=eng-pt
    same_as_runc "--version" --version || return 1
    same_as_runc "list (none)" list || return 1
    same_as_runc "state of an unknown id" state eng-nosuch || return 1
    same_as_runc "kill of an unknown id" kill eng-nosuch KILL || return 1
    same_as_runc "delete of an unknown id" delete eng-nosuch || return 1
    # a config.json with the hooks (path = vtpm-hook, the wrapper's own file) stays as it is
    make_bundle runc "$id" "" "$TPM2_SCRIPT
exec sleep 120" || return 1
    cp "$BUNDLE/config.json" "$E2E_WORK/pt-before.json"
    CLEANUP+=("runc $id")
    timeout 60 "$WRAPPER" create --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ||
        { why "vtpm-runc create failed: $(head -c 300 "$BUNDLE/err")"; return 1; }
    cmp -s "$BUNDLE/config.json" "$E2E_WORK/pt-before.json" ||
        { why "config.json with the hooks changed under 'vtpm-runc create'"; return 1; }
    same_as_runc "state (created)" state "$id" || return 1
    timeout 30 "$WRAPPER" start "$id" || { why "vtpm-runc start failed"; return 1; }
    wait_status runc "$id" running 30 || return 1
    local t0; t0=$(now_ms)
    until grep -q '^TPM-OK' "$BUNDLE/out"; do
        [ $(( $(now_ms) - t0 )) -lt 60000 ] || { why "the container's TPM checks did not finish: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
        sleep 0.2
    done
    check_tpm2_output "$BUNDLE/out" || return 1
    same_as_runc "state (running)" state "$id" || return 1
    same_as_runc "list (one)" list || return 1
    same_as_runc "list --format json" list --format json || return 1
    same_as_runc "delete of a running container" delete "$id" || return 1
    timeout 30 "$WRAPPER" kill "$id" KILL || { why "vtpm-runc kill failed"; return 1; }
    wait_status runc "$id" stopped 30 || return 1
    same_as_runc "kill of a stopped container" kill "$id" KILL || return 1
    timeout 60 "$WRAPPER" delete "$id" || { why "vtpm-runc delete failed"; return 1; }
    same_as_runc "delete again" delete "$id" || return 1
    expect_clean "$id" "vtpm-runc delete" || return 1
    # and `run` in the foreground
    make_bundle runc eng-pt-run "" "$TPM2_SCRIPT" || return 1
    cp "$BUNDLE/config.json" "$E2E_WORK/pt-before.json"
    container_run vtpm-runc eng-pt-run || return 1
    [ "$RC" = 0 ] || { why "vtpm-runc run exited with $RC: $(tail -n 3 "$BUNDLE/err")"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    cmp -s "$BUNDLE/config.json" "$E2E_WORK/pt-before.json" ||
        { why "config.json with the hooks changed under 'vtpm-runc run'"; return 1; }
    expect_clean eng-pt-run "vtpm-runc run" || return 1
}

# ---------------------------------------------------------------- 2. runc's stock config
# stock_bundle NAME SCRIPT [ENV]: make_bundle without any hooks (what an engine writes), and
# ENV ("VAR=value") added to process.env
stock_bundle() {
    make_bundle runc "$1" "" "$2" "del(.hooks) | .process.env += (if \"${3:-}\" == \"\" then [] else [\"${3:-}\"] end)"
}

t_wrapper() {
    local id=eng-wr
    stock_bundle "$id" "$TPM2_SCRIPT" || return 1
    cp "$BUNDLE/config.json" "$E2E_WORK/wr-stock.json"
    container_run vtpm-runc "$id" || return 1
    [ "$RC" = 0 ] || { why "vtpm-runc run exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$BUNDLE/out" || return 1
    expect_clean "$id" "vtpm-runc run" || return 1
    jq -e --arg w "$(readlink -f "$WRAPPER")" --arg S "$STATE_ROOT" '
        (.hooks.createRuntime | length == 1) and (.hooks.poststop | length == 1)
        and .hooks.createRuntime[0].path == $w
        and .hooks.createRuntime[0].args[-1] == "setup" and .hooks.poststop[0].args[-1] == "teardown"
        and (.hooks.createRuntime[0].args | index($S) != null)' "$BUNDLE/config.json" > /dev/null ||
        { why "hooks in config.json are not what the wrapper should add: $(jq -c .hooks "$BUNDLE/config.json")"; return 1; }
    [ "$(jq -S 'del(.hooks)' "$BUNDLE/config.json")" = "$(jq -S 'del(.hooks)' "$E2E_WORK/wr-stock.json")" ] ||
        { why "fields other than hooks changed"; return 1; }
    [ -d "$STATE_ROOT/$id" ] || { why "no state in $STATE_ROOT/$id (the policy's stateRoot)"; return 1; }
    cp "$BUNDLE/config.json" "$E2E_WORK/wr-once.json"
    container_run vtpm-runc "$id" || return 1
    [ "$RC" = 0 ] && check_tpm2_output "$BUNDLE/out" || { why "second vtpm-runc run: rc $RC; $WHY"; return 1; }
    cmp -s "$BUNDLE/config.json" "$E2E_WORK/wr-once.json" || { why "second run changed config.json"; return 1; }
    expect_clean "$id" "second vtpm-runc run" || return 1

    # VTPM_HOOK_VTPM=none: no hooks, no TPM
    stock_bundle eng-wr-none "$TPM2_SCRIPT" VTPM_HOOK_VTPM=none || return 1
    cp "$BUNDLE/config.json" "$E2E_WORK/wr-none.json"
    container_run vtpm-runc eng-wr-none || return 1
    grep -q '^NODEV /dev/tpm0' "$BUNDLE/out" || { why "VTPM_HOOK_VTPM=none: $(head -n 2 "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    cmp -s "$BUNDLE/config.json" "$E2E_WORK/wr-none.json" || { why "VTPM_HOOK_VTPM=none changed config.json"; return 1; }
    expect_clean eng-wr-none "vtpm-runc run (none)" || return 1

    # VTPM_HOOK_VTPM=1.2: a TPM 1.2 (/dev/tpm0, no /dev/tpmrm0)
    stock_bundle eng-wr-12 'for d in /dev/tpm0 /dev/tpmrm0; do if [ -c $d ]; then echo "DEV $d"; else echo "NODEV $d"; fi; done' \
        VTPM_HOOK_VTPM=1.2 || return 1
    container_run vtpm-runc eng-wr-12 || return 1
    grep -q '^DEV /dev/tpm0' "$BUNDLE/out" && grep -q '^NODEV /dev/tpmrm0' "$BUNDLE/out" ||
        { why "VTPM_HOOK_VTPM=1.2: $(tr '\n' ' ' < "$BUNDLE/out") $(head -c 300 "$BUNDLE/err")"; return 1; }
    jq -e '.annotations["io.vtpm-hook.vtpm"] == "1.2"' "$BUNDLE/config.json" > /dev/null ||
        { why "VTPM_HOOK_VTPM=1.2 gave no annotation"; return 1; }
    expect_clean eng-wr-12 "vtpm-runc run (1.2)" || return 1

    # a bad value: one error line, exit 1, nothing started, config.json untouched
    stock_bundle eng-wr-bad "true" VTPM_HOOK_VTPM=3 || return 1
    cp "$BUNDLE/config.json" "$E2E_WORK/wr-bad.json"
    container_run vtpm-runc eng-wr-bad || return 1
    [ "$RC" = 1 ] || { why "VTPM_HOOK_VTPM=3: exit $RC, not 1"; return 1; }
    [ "$(wc -l < "$BUNDLE/err")" = 1 ] && grep -q '^vtpm-runc: error: .*VTPM_HOOK_VTPM must be 2, 1.2 or none' "$BUNDLE/err" ||
        { why "VTPM_HOOK_VTPM=3: stderr '$(head -c 300 "$BUNDLE/err")'"; return 1; }
    cmp -s "$BUNDLE/config.json" "$E2E_WORK/wr-bad.json" || { why "a failed wrapper changed config.json"; return 1; }
    [ -z "$(runtime_status runc eng-wr-bad)" ] || { why "runc knows eng-wr-bad after the wrapper failed"; return 1; }
}

# the policy's "runtime": crun instead of runc
t_policy_runtime() { t_policy_runtime_body; local rc=$?; write_policy "$POLICY_FILE" "$POLICY_JSON" || rc=1; return $rc; }
t_policy_runtime_body() {
    write_policy "$POLICY_FILE" "$(jq -c '.runtime = "/usr/bin/crun"' <<< "$POLICY_JSON")" || return 1
    [ "$(timeout 30 vtpm-runc --version 2>&1)" = "$(timeout 30 crun --version 2>&1)" ] ||
        { why "vtpm-runc --version is not crun's under runtime /usr/bin/crun"; return 1; }
    stock_bundle eng-crun "$TPM2_SCRIPT" || return 1
    CLEANUP+=("crun eng-crun" "runc eng-crun")
    DIAG+=("$BUNDLE/out" "$BUNDLE/err")
    # detached, so that the container stays known to its runtime until the delete: crun's,
    # not runc's (not only --version)
    ( timeout -k 5 "$RUN_TIMEOUT" vtpm-runc run -d --bundle "$BUNDLE" eng-crun < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "vtpm-runc run -d (crun) failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    [ -n "$(runtime_status crun eng-crun)" ] || { why "crun does not know eng-crun after vtpm-runc run -d under runtime /usr/bin/crun"; return 1; }
    [ -z "$(runtime_status runc eng-crun)" ] || { why "runc knows eng-crun: vtpm-runc ran it under runc, not crun"; return 1; }
    wait_status crun eng-crun stopped "$RUN_TIMEOUT" || return 1
    note "crun state eng-crun: $(runtime_status crun eng-crun); runc state: none"
    check_tpm2_output "$BUNDLE/out" || return 1
    timeout 60 vtpm-runc delete eng-crun > /dev/null 2> "$E2E_WORK/crun-delete.err" ||
        { why "vtpm-runc delete (crun): $(head -c 200 "$E2E_WORK/crun-delete.err")"; return 1; }
    expect_clean eng-crun "vtpm-runc run -d + delete (crun)" || return 1
    # the real runtime may not be the wrapper itself
    write_policy "$POLICY_FILE" "$(jq -c --arg w "$WRAPPER" '.runtime = $w' <<< "$POLICY_JSON")" || return 1
    timeout 30 vtpm-runc --version > /dev/null 2> "$E2E_WORK/self.err" && { why "runtime = the wrapper itself was accepted"; return 1; }
    grep -q '^vtpm-runc: error: the real runtime .* is vtpm-runc itself' "$E2E_WORK/self.err" ||
        { why "runtime = the wrapper: '$(head -c 200 "$E2E_WORK/self.err")'"; return 1; }
}

# ---------------------------------------------------------------- 3. containerd
CD=$E2E_WORK/containerd
CD_PID=""
CTR=(ctr --address "$CD/containerd.sock")
start_containerd() {
    mkdir -p "$CD"
    cat > "$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CD/containerd.sock"
EOF
    containerd --config "$CD/config.toml" > "$CD/containerd.log" 2>&1 &
    CD_PID=$!
    DIAG+=("$CD/containerd.log")
    wait_daemon "$CD_PID" containerd "$CD/containerd.log" "${CTR[@]}" version
}
# ctr_run ID RUNC ENV SCRIPT: `ctr run --rm` of the symlink rootfs with /usr and /etc from the
# host; output in $CD/ID.out/.err, RC and MS set
ctr_run() {
    local id=$1 rt=$2 env=$3 script=$4 t0
    DIAG+=("$CD/$id.out" "$CD/$id.err")
    t0=$(now_ms)
    ( timeout -k 5 "$RUN_TIMEOUT" "${CTR[@]}" run --rm --runc-binary "$rt" --rootfs \
        --mount type=bind,src=/usr,dst=/usr,options=rbind:ro \
        --mount type=bind,src=/etc,dst=/etc,options=rbind:ro \
        ${env:+--env "$env"} "$CD/rootfs" "$id" /bin/sh -c "$script" \
        < /dev/null > "$CD/$id.out" 2> "$CD/$id.err" ) 2> /dev/null
    RC=$?
    MS=$(( $(now_ms) - t0 ))
}

NV_SCRIPT=$(nv_script 0x1500016 engine-check)
NODEV_SCRIPT='if [ -e /dev/tpm0 ] || [ -e /dev/tpmrm0 ]; then echo HAS-TPM; else echo NO-TPM; fi'

t_containerd() {
    t_containerd_body; local rc=$?
    stop_daemon "$CD_PID" containerd || rc=1
    return $rc
}
t_containerd_body() {
    local i with="" without="" none=""
    rm -rf "$CD"; mkdir -p "$CD"
    make_rootfs "$CD/rootfs"
    start_containerd || return 1
    ctr_run eng-ctr "$WRAPPER" "" "$TPM2_SCRIPT"
    [ "$RC" = 0 ] || { why "ctr run (vtpm-runc) exited with $RC: $(tail -n 3 "$CD/eng-ctr.err" "$CD/eng-ctr.out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$CD/eng-ctr.out" || return 1
    expect_clean eng-ctr "ctr run --rm (vtpm-runc)" || return 1

    ctr_run eng-ctr-nv "$WRAPPER" "" "$NV_SCRIPT"
    grep -q '^NV-WRITTEN' "$CD/eng-ctr-nv.out" || { why "NV write: rc $RC, $(tail -n 3 "$CD/eng-ctr-nv.err" "$CD/eng-ctr-nv.out" | tr '\n' ' ')"; return 1; }
    expect_clean eng-ctr-nv "ctr run --rm (NV writer)" || return 1
    ctr_run eng-ctr-nv "$WRAPPER" "" "$NV_SCRIPT"
    grep -q '^NV-READ engine-check' "$CD/eng-ctr-nv.out" || { why "NV read in the second run: rc $RC, $(tail -n 3 "$CD/eng-ctr-nv.err" "$CD/eng-ctr-nv.out" | tr '\n' ' ')"; return 1; }
    expect_clean eng-ctr-nv "ctr run --rm (NV reader)" || return 1

    ctr_run eng-ctr-none "$WRAPPER" VTPM_HOOK_VTPM=none "$NODEV_SCRIPT"
    [ "$RC" = 0 ] && grep -q '^NO-TPM' "$CD/eng-ctr-none.out" || { why "VTPM_HOOK_VTPM=none: rc $RC, $(tr '\n' ' ' < "$CD/eng-ctr-none.out")"; return 1; }
    [ ! -e "$STATE_ROOT/eng-ctr-none" ] || { why "VTPM_HOOK_VTPM=none made a TPM state"; return 1; }

    # start time of `ctr run --rm ... true`: plain runc, the wrapper without a TPM, the vTPM
    for i in $(seq "$TIMES"); do
        ctr_run "eng-ctr-t$i" runc "" true; [ "$RC" = 0 ] || { why "timing run (runc) rc $RC"; return 1; }
        without+="$MS "
        ctr_run "eng-ctr-n$i" "$WRAPPER" VTPM_HOOK_VTPM=none true; [ "$RC" = 0 ] || { why "timing run (none) rc $RC"; return 1; }
        none+="$MS "
        ctr_run "eng-ctr-v$i" "$WRAPPER" "" true; [ "$RC" = 0 ] || { why "timing run (vtpm) rc $RC"; return 1; }
        with+="$MS "
    done
    note "FIGURE: ctr_run_ms_runc=$(printf '%s\n' $without | median)"
    note "FIGURE: ctr_run_ms_wrapper_none=$(printf '%s\n' $none | median)"
    note "FIGURE: ctr_run_ms_vtpm=$(printf '%s\n' $with | median)"
    expect_clean "" "the timing runs" || return 1
}

# ---------------------------------------------------------------- 4. Docker
DW=$E2E_WORK/docker
DOCKERD_PID=""
DK=("$DOCKER" -H "unix://$DW/docker.sock")
start_dockerd() {
    mkdir -p "$DW"
    jq -n --arg w "$WRAPPER" --arg D "$DW" '{
        "runtimes": {"vtpm": {"path": $w}},
        "hosts": ["unix://\($D)/docker.sock"], "data-root": "\($D)/data", "exec-root": "\($D)/exec",
        "pidfile": "\($D)/docker.pid", "storage-driver": "vfs",
        "bridge": "none", "iptables": false, "ip-masq": false, "log-level": "warn"}' > "$DW/daemon.json"
    dockerd --config-file "$DW/daemon.json" > "$DW/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    DIAG+=("$DW/dockerd.log")
    wait_daemon "$DOCKERD_PID" dockerd "$DW/dockerd.log" "${DK[@]}" version || return 1
    note "dockerd $("${DK[@]}" version --format '{{.Server.Version}}' 2>&1)"
}

# docker_do NAME ARGS...: one docker command, output in $DW/NAME.out/.err, RC and MS set
docker_do() {
    local name=$1 t0; shift
    DIAG+=("$DW/$name.out" "$DW/$name.err")
    t0=$(now_ms)
    ( timeout -k 5 "$RUN_TIMEOUT" "${DK[@]}" "$@" < /dev/null > "$DW/$name.out" 2> "$DW/$name.err" ) 2> /dev/null
    RC=$?
    MS=$(( $(now_ms) - t0 ))
}
# the measured launch seen from a verifier: an ECC quote over PCR 21 of a `docker run -d`
# container, `vtpm-hook log` and the config.json the shim gave the runtime (the wrapper's)
docker_measured() {
    local id cfg x=$DW/x t0
    t0=$(now_ms)
    mkdir -p "$x"
    docker_do meas-run "${DRUN[@]}" -d --name eng-dk-meas --runtime vtpm -v "$x:/x" vtpm-e2e:1 /bin/sh -c 'exec sleep 600'
    [ "$RC" = 0 ] || { why "docker run -d --runtime vtpm: rc $RC, $(head -c 300 "$DW/meas-run.err")"; return 1; }
    id=$(head -n1 "$DW/meas-run.out")
    [[ $id =~ ^[0-9a-f]{64}$ ]] || { why "docker run -d printed no id: $(head -c 200 "$DW/meas-run.out")"; return 1; }
    cfg=$(find "$DW/exec" /run/containerd -path "*/moby/$id/config.json" 2> /dev/null | head -n1)
    [ -f "$cfg" ] || { why "no config.json of $id under $DW/exec or /run/containerd (.../moby/<id>/config.json)"; return 1; }
    cp "$cfg" "$x/config.json"
    timeout 30 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" log --id "$id" > "$x/log.cel.json" 2> "$x/host.out" ||
        { why "'vtpm-hook log' of the Docker container: $(tail -n 1 "$x/host.out")"; return 1; }
    DIAG+=("$x/mq-a.out" "$x/mq-b.out" "$x/host.out" "$x/mq-host.out")
    measured_quote "$x" "${DK[@]}" exec "$id" || return 1
    verify_launch "$x" quote "$x/config.json" "$x/log.cel.json" --pcrs "$x/q.check" --image-source none ||
        { why "the verifier refused Docker's measured launch: $(tr '\n' ' ' < "$x/quote.verify")"; return 1; }
    note "Docker: ECC quote verified: $(cut -c1-120 "$x/quote.verify") (config.json: ${cfg#"$DW/"})"
    docker_do meas-rm rm -f eng-dk-meas
    [ "$RC" = 0 ] || { why "docker rm -f: $(head -c 300 "$DW/meas-rm.err")"; return 1; }
    expect_clean "$id" "docker rm -f (measured)" || return 1
    note "FIGURE: docker_measured_ms=$(( $(now_ms) - t0 ))"
}

# the image has only the symlinks; /usr comes from the host (ld.so finds the libraries without
# /etc/ld.so.cache: Debian's default paths)
DRUN=(run --network none -v /usr:/usr:ro)

t_docker() {
    t_docker_body; local rc=$?
    timeout 60 "${DK[@]}" rm -f eng-dk-nv eng-dk-meas > /dev/null 2>&1
    stop_daemon "$DOCKERD_PID" dockerd || rc=1
    return $rc
}
t_docker_body() {
    local i with="" without="" none="" id
    rm -rf "$DW"; mkdir -p "$DW"
    make_rootfs "$DW/rootfs"
    start_dockerd || return 1
    tar -C "$DW/rootfs" -cf "$DW/rootfs.tar" . || { why "tar of the rootfs failed"; return 1; }
    docker_do import import "$DW/rootfs.tar" vtpm-e2e:1
    [ "$RC" = 0 ] || { why "docker import: $(head -c 300 "$DW/import.err")"; return 1; }

    docker_do run1 "${DRUN[@]}" --rm --runtime vtpm vtpm-e2e:1 /bin/sh -c "$TPM2_SCRIPT"
    [ "$RC" = 0 ] || { why "docker run --runtime vtpm exited with $RC: $(tail -n 3 "$DW/run1.err" "$DW/run1.out" | tr '\n' ' ')"; return 1; }
    check_tpm2_output "$DW/run1.out" || return 1
    expect_clean "" "docker run --rm --runtime vtpm" || return 1
    docker_measured || return 1

    docker_do nv1 "${DRUN[@]}" --name eng-dk-nv --runtime vtpm vtpm-e2e:1 /bin/sh -c "$NV_SCRIPT"
    grep -q '^NV-WRITTEN' "$DW/nv1.out" || { why "NV write: rc $RC, $(tail -n 3 "$DW/nv1.err" "$DW/nv1.out" | tr '\n' ' ')"; return 1; }
    id=$("${DK[@]}" inspect --format '{{.Id}}' eng-dk-nv 2> "$DW/inspect.err") && [[ $id =~ ^[0-9a-f]{64}$ ]] ||
        { why "docker inspect eng-dk-nv: '$id' $(head -c 200 "$DW/inspect.err")"; return 1; }
    expect_clean "$id" "docker run --name (NV writer)" || return 1
    [ -d "$STATE_ROOT/$id" ] || { why "no state $STATE_ROOT/<container id> ($id)"; return 1; }
    docker_do nv2 start -a eng-dk-nv
    grep -q '^NV-READ engine-check' "$DW/nv2.out" || { why "NV read after docker start: rc $RC, $(tail -n 3 "$DW/nv2.err" "$DW/nv2.out" | tr '\n' ' ')"; return 1; }
    expect_clean "$id" "docker start -a (NV reader)" || return 1
    docker_do restart restart eng-dk-nv
    [ "$RC" = 0 ] || { why "docker restart: $(head -c 300 "$DW/restart.err")"; return 1; }
    docker_do wait wait eng-dk-nv
    docker_do logs logs eng-dk-nv
    [ "$(grep -c '^NV-READ engine-check' "$DW/logs.out")" = 2 ] ||
        { why "NV not read after docker restart: logs '$(tr '\n' ' ' < "$DW/logs.out")'"; return 1; }
    expect_clean "$id" "docker restart (NV reader)" || return 1
    docker_do rm rm eng-dk-nv
    [ "$RC" = 0 ] || { why "docker rm: $(head -c 300 "$DW/rm.err")"; return 1; }

    docker_do none "${DRUN[@]}" --rm --runtime vtpm -e VTPM_HOOK_VTPM=none vtpm-e2e:1 /bin/sh -c "$NODEV_SCRIPT"
    [ "$RC" = 0 ] && grep -q '^NO-TPM' "$DW/none.out" || { why "-e VTPM_HOOK_VTPM=none: rc $RC, $(tr '\n' ' ' < "$DW/none.out") $(head -c 200 "$DW/none.err")"; return 1; }

    # start time of `docker run --rm ... true`: runc, the wrapper without a TPM, the vTPM
    for i in $(seq "$TIMES"); do
        docker_do "t$i" "${DRUN[@]}" --rm --runtime runc vtpm-e2e:1 true; [ "$RC" = 0 ] || { why "timing run (runc) rc $RC"; return 1; }
        without+="$MS "
        docker_do "n$i" "${DRUN[@]}" --rm --runtime vtpm -e VTPM_HOOK_VTPM=none vtpm-e2e:1 true; [ "$RC" = 0 ] || { why "timing run (none) rc $RC"; return 1; }
        none+="$MS "
        docker_do "v$i" "${DRUN[@]}" --rm --runtime vtpm vtpm-e2e:1 true; [ "$RC" = 0 ] || { why "timing run (vtpm) rc $RC"; return 1; }
        with+="$MS "
    done
    note "FIGURE: docker_run_ms_runc=$(printf '%s\n' $without | median)"
    note "FIGURE: docker_run_ms_wrapper_none=$(printf '%s\n' $none | median)"
    note "FIGURE: docker_run_ms_vtpm=$(printf '%s\n' $with | median)"
    expect_clean "" "the timing runs" || return 1
}

# ---------------------------------------------------------------- run
with_diag() { DIAG+=("$WLOG"); "$@"; local rc=$?; [ $rc = 0 ] || note "kernel: $(tpm_dmesg 5 | tr '\n' ' ')"; return $rc; }
run_if() { local n=$1; shift; [[ $n =~ $ONLY ]] && scenario "$n" with_diag "$@"; return 0; }

run_if passthrough-runc t_passthrough
run_if wrapper-runc     t_wrapper
run_if policy-runtime   t_policy_runtime
run_if containerd-ctr   t_containerd
run_if docker           t_docker

echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
