#!/bin/bash
# tests/e2e/attestation-tests.sh - a container's TPM attests like a physical one.
#
#   attestation-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM (tests/e2e/run.sh provisioning boots it, after
# provisioning-tests.sh): needs /dev/vtpmx, runc, jq, openssl, tpm2-tools (with
# tss2_*), python3. Scenarios:
#   attest-flow         createCerts container: the host exports the EK (`vtpm-hook ek`)
#                       and the CA (`vtpm-hook ca`); openssl verifies the EK certificate;
#                       host tpm2_makecredential (-T none) with the exported EK, container
#                       tpm2_activatecredential recovers the secret; container tpm2_quote
#                       over a PCR it extended, host tpm2_checkquote accepts it (and
#                       refuses another nonce); `status --json` names the EKs; the
#                       measured launch: the quote covers PCR 21 too, and the verifier
#                       (verify_measurements.py) checks `vtpm-hook log` against the bundle's
#                       config.json and the quote; `log` of the stopped container: one error
#   platform-closed     the same TPM in a new container: every platform-hierarchy command
#                       is refused, the EK certificate indices cannot be rewritten or
#                       undefined; owner and endorsement use work; tss2_provision (FAPI)
#                       with the exported CA; tpm2_clear -c l works, the EK still matches
#                       its certificate afterwards
#   platform-open       openPlatformHierarchy in linux.vtpms (the administrator's): the
#                       platform commands work again; the certificates stay write-locked
#   platform-annotation openPlatformHierarchy from an annotation: the start fails, one
#                       error line, nothing left behind
#   ek-export-errors    `vtpm-hook ek` of a TPM without certificates / an unknown
#                       container: one error line, exit 1
#   measured-crun       crun: ECC EK/AK, makecredential/activatecredential, quote over sha256:21, the verifier
#                       accepts log + config.json + quote; the workload cannot reset or extend
#                       PCR 21 (bad locality), write or remount its log copy; the TPM's PCR 21
#                       (every bank) and `vtpm-hook log` unchanged afterwards
#   measured-podman     podman (hooks.d): ECC EK/AK and the quote (no credential), config.json from podman
#   measured-variants   runc, tpm2_pcrread only: one env var, one arg, one capability, one
#                       mount option changed: PCR 21 differs, the verifier refuses the log with
#                       the base config.json and accepts it with its own; the same container
#                       run again: a fresh log (3 records) and the same PCR 21
# Prints "PASS: name" / "FAIL: name: why", notes and "FIGURE: ..." lines, and
# "N passed, M failed". Exit status: 0 all passed, 1 some failed, 2 unusable
# environment. E2E_ONLY=regex selects scenarios.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_WORK=${E2E_WORK:-/run/vtpm-attest}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$HERE/../.." && pwd)/build/vtpm-hook}}
ONLY=${E2E_ONLY:-.}

preflight runc crun podman jq openssl python3 tpm2_createek tpm2_createak tpm2_makecredential \
    tpm2_activatecredential tpm2_quote tpm2_checkquote tss2_provision timeout
echo "# kernel $(uname -r), $(runc --version | head -n1), $(tpm2_getrandom --version | head -n1)"
echo "# hook: $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES"
X=$E2E_WORK/x             # exchange directory: the container's /x (host <-> container)
T_START=$(now_ms)
ID=attest                 # one TPM (default state: <state-root>/attest) for the first two

# the hook as the administrator runs it on the host
hook() { timeout 30 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" "$@"; }

# cexec ID OUT SCRIPT: SCRIPT in the running (runc) container ID, output to OUT; its exit status
cexec() {
    ( timeout -k 5 120 runc exec "$1" /bin/sh -c "$3" < /dev/null > "$2" 2>&1 ) 2> /dev/null
}

# log_gone ID: `vtpm-hook log` of a container that is not running: exit 1, one error line
log_gone() {
    local out rc
    out=$(hook log --id "$1" 2>&1 > /dev/null); rc=$?
    [ "$rc" = 1 ] && [ "$(grep -c . <<< "$out")" = 1 ] ||
        { why "'vtpm-hook log' of the stopped container $1: exit $rc, stderr '$out' (wanted exit 1 and one line)"; return 1; }
    note "vtpm-hook log --id $1 (stopped): $out"
}

X_MOUNT='.mounts += [{"destination": "/x", "type": "bind", "source": "'$X'", "options": ["rbind", "rw"]}]'

# in-container: each platform-hierarchy command, ALLOWED or REFUSED (with the TPM's answer),
# in an order that leaves the TPM usable when they are allowed
PLATFORM_SCRIPT='T=device:/dev/tpmrm0; cd /tmp
try() { if "$@" > o.txt 2>&1; then echo "ALLOWED $*"; else echo "REFUSED $* :: $(grep -m1 -o "tpm:.*" o.txt | cut -c1-100)"; fi; }
echo "PH $(tpm2_getcap -T $T properties-variable | grep -m1 "phEnable:" | tr -d " ")"
try tpm2_pcrallocate -T $T sha1:all+sha256:all
try tpm2_changepps -T $T
try tpm2_clear -T $T -c p
echo x > x.bin
try tpm2_nvwrite -T $T -C p 0x1c00002 -i x.bin
try tpm2_nvundefine -T $T -C p 0x1c0000a
try tpm2_hierarchycontrol -T $T -C p phEnable clear
echo PLATFORM-DONE'

# ---------------------------------------------------------------- 1. the attestation flow
t_attest() {
    local out j nonce h expected t0
    rm -rf "$X"; mkdir -p "$X"
    make_bundle runc "$ID" '[{"createCerts": true}]' 'exec sleep 600' "$X_MOUNT" || return 1
    CLEANUP+=("runc $ID"); DIAG+=("$BUNDLE/out" "$BUNDLE/err" "$X/a.out" "$X/c.out" "$X/d.out" "$X/host.out")
    ( timeout -k 5 "$RUN_TIMEOUT" runc run -d --bundle "$BUNDLE" "$ID" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'runc run -d' failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    wait_status runc "$ID" running 20 || return 1

    # container: EK (from the template, as a verifier's agent makes it) and an AK under it.
    # /dev/tpm0 (no resource manager): the policy session must outlive one tool's connection.
    cexec "$ID" "$X/a.out" 'T=device:/dev/tpm0; set -e
      tpm2_createek -T $T -c /tmp/ek.ctx -G rsa -u /x/ek.pem -f pem
      tpm2_createak -T $T -C /tmp/ek.ctx -c /tmp/ak.ctx -G rsa -g sha256 -s rsassa -u /x/ak.pem -f pem -n /x/ak.name
      tpm2_flushcontext -T $T -t
      echo STEP-A-OK' || { why "createek/createak in the container failed: $(tail -n 2 "$X/a.out" | tr '\n' ' ')"; return 1; }

    # host: what a verifier gets from the host, and its checks
    hook ek --id "$ID" --json > "$X/ek.json" 2> "$X/host.out" || { why "'vtpm-hook ek --json' failed: $(cat "$X/host.out")"; return 1; }
    hook ek --id "$ID" > "$X/ek.txt" 2>> "$X/host.out" || { why "'vtpm-hook ek' failed: $(cat "$X/host.out")"; return 1; }
    hook ca > "$X/ca.pem" 2>> "$X/host.out" || { why "'vtpm-hook ca' failed: $(cat "$X/host.out")"; return 1; }
    [ "$(jq '.eks | length' "$X/ek.json")" = 2 ] || { why "'ek --json' has not 2 EKs: $(head -c 300 "$X/ek.json")"; return 1; }
    jq -r '.eks[] | select(.type == "rsa") | .certificate' "$X/ek.json" > "$X/ekcert-rsa.pem"
    jq -r '.eks[] | select(.type == "rsa") | .publicKey' "$X/ek.json" > "$X/ekpub-rsa.pem"
    jq -r '.eks[] | select(.type == "ecc") | .certificate' "$X/ek.json" > "$X/ekcert-ecc.pem"
    for g in rsa ecc; do
        out=$(openssl verify -CAfile "$X/ca.pem" "$X/ekcert-$g.pem" 2>&1) ||
            { why "$g EK certificate does not verify against 'vtpm-hook ca': $out"; return 1; }
    done
    [ "$(grep -c 'BEGIN CERTIFICATE' "$X/ek.txt")" = 2 ] && [ "$(grep -c 'BEGIN PUBLIC KEY' "$X/ek.txt")" = 2 ] ||
        { why "'vtpm-hook ek' (PEM) lacks 2 keys and 2 certificates: $(head -c 300 "$X/ek.txt")"; return 1; }
    # the exported EK is the one the TPM derives from its seed (what the agent just made)
    openssl pkey -pubin -in "$X/ek.pem" -outform der > "$X/ek-agent.der" 2>/dev/null &&
        openssl pkey -pubin -in "$X/ekpub-rsa.pem" -outform der > "$X/ek-host.der" 2>/dev/null &&
        cmp -s "$X/ek-agent.der" "$X/ek-host.der" || { why "the exported RSA EK differs from tpm2_createek's"; return 1; }
    [ "$(sha256sum < "$X/ek-host.der" | cut -d' ' -f1)" = "$(jq -r '.eks[] | select(.type == "rsa") | .publicKeySha256' "$X/ek.json")" ] ||
        { why "publicKeySha256 is not the SHA-256 of the EK's DER public key"; return 1; }
    j=$(hook status --json) || { why "'status --json' failed"; return 1; }
    jq -e --slurpfile e "$X/ek.json" '.[0].ek | length == 2 and
        (map(.publicKeySha256) | sort) == ($e[0].eks | map(.publicKeySha256) | sort)' <<< "$j" > /dev/null ||
        { why "'status --json' does not name the EKs: $(jq -c '.[0].ek' <<< "$j")"; return 1; }

    # host: a credential only this TPM's EK can unwrap, bound to the AK's name
    head -c 32 /dev/urandom > "$X/secret.bin"
    tpm2_makecredential -T none -G rsa -u "$X/ekpub-rsa.pem" -s "$X/secret.bin" \
        -n "$(od -An -v -tx1 "$X/ak.name" | tr -d ' \n')" -o "$X/cred.out" >> "$X/host.out" 2>&1 ||
        { why "host tpm2_makecredential failed: $(tail -n 2 "$X/host.out" | tr '\n' ' ')"; return 1; }
    cexec "$ID" "$X/c.out" 'T=device:/dev/tpm0; set -e
      tpm2_startauthsession -T $T --policy-session -S /tmp/s.ctx
      tpm2_policysecret -T $T -S /tmp/s.ctx -c e
      tpm2_activatecredential -T $T -c /tmp/ak.ctx -C /tmp/ek.ctx -i /x/cred.out -o /x/secret.out -P session:/tmp/s.ctx
      tpm2_flushcontext -T $T /tmp/s.ctx || true
      tpm2_flushcontext -T $T -t
      echo STEP-C-OK' || { why "tpm2_activatecredential in the container failed: $(tail -n 2 "$X/c.out" | tr '\n' ' ')"; return 1; }
    cmp -s "$X/secret.bin" "$X/secret.out" || { why "activatecredential recovered another secret"; return 1; }

    # container: extend PCR 16, quote it with the AK; host: checkquote with the AK
    h=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    nonce=$(head -c 16 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    cexec "$ID" "$X/d.out" "T=device:/dev/tpm0; set -e
      tpm2_pcrreset -T \$T 16
      tpm2_pcrextend -T \$T 16:sha256=$h
      tpm2_quote -T \$T -c /tmp/ak.ctx -l sha256:16,$MEASURE_PCR -q $nonce -m /x/q.msg -s /x/q.sig -o /x/q.pcrs -g sha256 > /dev/null
      tpm2_flushcontext -T \$T -t
      echo STEP-D-OK" || { why "extend + tpm2_quote in the container failed: $(tail -n 2 "$X/d.out" | tr '\n' ' ')"; return 1; }
    tpm2_checkquote -u "$X/ak.pem" -m "$X/q.msg" -s "$X/q.sig" -f "$X/q.pcrs" -g sha256 -q "$nonce" > "$X/check.out" 2>&1 ||
        { why "host tpm2_checkquote refused the quote: $(tail -n 2 "$X/check.out" | tr '\n' ' ')"; return 1; }
    expected=$(python3 -c "import hashlib,sys; print(hashlib.sha256(bytes(32) + bytes.fromhex(sys.argv[1])).hexdigest())" "$h")
    grep -qi "16: 0x$expected" "$X/check.out" ||
        { why "the quoted PCR 16 is not sha256(0..0 || $h) = $expected: $(grep -A3 sha256 "$X/check.out" | tr '\n' ' ')"; return 1; }
    if tpm2_checkquote -u "$X/ak.pem" -m "$X/q.msg" -s "$X/q.sig" -f "$X/q.pcrs" -g sha256 -q "00$nonce" > /dev/null 2>&1; then
        why "tpm2_checkquote accepted the quote with another nonce: the check cannot fail"; return 1
    fi
    note "EK (RSA) SHA-256 $(jq -r '.eks[0].publicKeySha256' "$X/ek.json" | cut -c1-16)..., quoted PCR 16 = ${expected:0:16}..."
    # the measured launch: the host's log, the bundle's config.json and the same quote
    t0=$(now_ms)
    hook log --id "$ID" > "$X/log.cel.json" 2>> "$X/host.out" || { why "'vtpm-hook log' failed: $(tail -n 1 "$X/host.out")"; return 1; }
    hook log --id "$ID" --replay > "$X/replay.json" 2>> "$X/host.out" || { why "'vtpm-hook log --replay' failed: $(tail -n 1 "$X/host.out")"; return 1; }
    verify_launch "$X" attest "$BUNDLE/config.json" "$X/log.cel.json" --pcrs "$X/check.out" --replay-json "$X/replay.json" ||
        { why "the verifier refused the measured launch: $(tr '\n' ' ' < "$X/attest.verify")"; return 1; }
    note "measured launch verified with the quote: $(cut -c1-120 "$X/attest.verify")"
    note "FIGURE: attest_measured_verify_ms=$(( $(now_ms) - t0 ))"
    timeout 60 runc delete -f "$ID" > /dev/null 2>&1 || { why "'runc delete -f' failed"; return 1; }
    expect_clean "$ID" "'runc delete -f'" || return 1
    log_gone "$ID" || return 1
    # stopped: the export still works (the copy in the state dir, no TPM asked)
    hook ek --id "$ID" --json > "$X/ek2.json" 2>> "$X/host.out" && cmp -s "$X/ek.json" "$X/ek2.json" ||
        { why "'vtpm-hook ek' of the stopped container differs or failed: $(tail -n 1 "$X/host.out")"; return 1; }
}

# check_platform FILE MODE: the PLATFORM_SCRIPT lines for MODE closed|open
check_platform() {
    local f=$1 mode=$2 c
    grep -q '^PLATFORM-DONE' "$f" || { why "the platform script did not finish"; return 1; }
    for c in "tpm2_pcrallocate" "tpm2_changepps" "tpm2_clear -T device:/dev/tpmrm0 -c p" \
             "tpm2_nvundefine" "tpm2_hierarchycontrol"; do
        if [ "$mode" = closed ]; then
            grep -q "^REFUSED $c" "$f" || { why "the workload could run $c: $(grep -m1 "$c" "$f")"; return 1; }
        else
            grep -q "^ALLOWED $c" "$f" || { why "with the platform kept open, $c failed: $(grep -m1 "$c" "$f")"; return 1; }
        fi
    done
    # the certificates are write-locked either way
    grep -q "^REFUSED tpm2_nvwrite" "$f" || { why "the EK certificate index could be rewritten: $(grep -m1 nvwrite "$f")"; return 1; }
    if [ "$mode" = closed ]; then grep -q '^PH phEnable:0' "$f"; else grep -q '^PH phEnable:1' "$f"; fi ||
        { why "phEnable is not what $mode wants: $(grep '^PH' "$f")"; return 1; }
}

# ---------------------------------------------------------------- 2. the platform closed
t_platform_closed() {
    local id=attest-again
    rm -rf "$X"; mkdir -p "$X"
    if [ ! -e "$STATE_ROOT/$ID/ek-certificates.pem" ]; then  # attest-flow did not run: make the TPM
        make_bundle runc "$id-new" '[{"createCerts": true, "statePath": "'"$STATE_ROOT/$ID"'"}]' true || return 1
        container_run runc "$id-new" || return 1
        [ "$RC" = 0 ] || { why "creating the TPM failed: $(tail -n 2 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    fi
    hook ca > "$X/ca.pem" || { why "'vtpm-hook ca' failed"; return 1; }
    # the same TPM as attest-flow (its statePath), started again: closed at every power-on
    make_bundle runc "$id" "[{\"createCerts\": true, \"statePath\": \"$STATE_ROOT/$ID\"}]" "$PLATFORM_SCRIPT
T=device:/dev/tpmrm0; cd /tmp
tpm2_createprimary -T \$T -C o -c p.ctx > /dev/null && echo OWNER-PRIMARY-OK
tpm2_createprimary -T \$T -C e -c e.ctx > /dev/null && echo ENDORSEMENT-PRIMARY-OK
tpm2_flushcontext -T \$T -t
tpm2_nvdefine -T \$T -C o 0x1500016 -s 8 -a 'ownerread|ownerwrite' > /dev/null && printf 12345678 | tpm2_nvwrite -T \$T -C o 0x1500016 -i - && echo OWNER-NV-OK
# FAPI: the EK certificate from NV, checked against the host's CA, then named in the config
tpm2_nvread -T \$T -C o 0x1c0000a -o ecc.der > /dev/null && openssl x509 -inform der -in ecc.der -out ecc.pem &&
  openssl verify -CAfile /x/ca.pem ecc.pem > /dev/null && echo FAPI-CERT-VERIFIED
mkdir -p fapi && printf '{\"profile_name\": \"P_ECCP256SHA256\", \"profile_dir\": \"/etc/tpm2-tss/fapi-profiles/\", \"user_dir\": \"/tmp/fapi/user\", \"system_dir\": \"/tmp/fapi/system\", \"tcti\": \"device:/dev/tpmrm0\", \"system_pcrs\": [], \"log_dir\": \"/tmp/fapi/log\", \"ek_cert_file\": \"file:///tmp/ecc.pem\"}' > fapi/config.json
if TSS2_FAPICONF=/tmp/fapi/config.json tss2_provision > fapi.out 2>&1; then echo FAPI-PROVISION-OK; else echo \"FAPI-PROVISION-FAIL \$(tail -n 2 fapi.out | tr '\n' ' ')\"; fi
TSS2_FAPICONF=/tmp/fapi/config.json tss2_list > fapi-list.out 2>&1 && echo \"FAPI-LIST \$(tr '\n' ' ' < fapi-list.out)\"
tpm2_clear -T \$T -c l && echo CLEAR-LOCKOUT-OK
tpm2_nvread -T \$T -C o 0x1500016 > /dev/null 2>&1 && echo OWNER-NV-SURVIVED-CLEAR
tpm2_nvread -T \$T -C o 0x1c00002 -o rsa.der > /dev/null && openssl x509 -inform der -in rsa.der -noout -pubkey | openssl pkey -pubin -outform der > cert.der &&
  tpm2_createek -T \$T -c ek.ctx -G rsa -u ek.pem -f pem > /dev/null && openssl pkey -pubin -in ek.pem -outform der > ek.der &&
  cmp -s cert.der ek.der && echo EK-MATCHES-CERT-AFTER-CLEAR
echo ALL-DONE" "$X_MOUNT" || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] || { why "'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    check_platform "$BUNDLE/out" closed || return 1
    for w in OWNER-PRIMARY-OK ENDORSEMENT-PRIMARY-OK OWNER-NV-OK FAPI-CERT-VERIFIED FAPI-PROVISION-OK \
             CLEAR-LOCKOUT-OK EK-MATCHES-CERT-AFTER-CLEAR ALL-DONE; do
        grep -q "^$w" "$BUNDLE/out" || { why "no $w: $(grep -E '^(FAPI|OWNER|EK|CLEAR)' "$BUNDLE/out" | tr '\n' ' ' | cut -c1-300)"; return 1; }
    done
    ! grep -q '^OWNER-NV-SURVIVED-CLEAR' "$BUNDLE/out" || { why "tpm2_clear -c l did not clear the owner's NV"; return 1; }
    grep -q '/HS/SRK' <<< "$(grep '^FAPI-LIST' "$BUNDLE/out")" || { why "tss2_list after tss2_provision: $(grep '^FAPI-LIST' "$BUNDLE/out")"; return 1; }
    note "$(grep -E '^(REFUSED|PH)' "$BUNDLE/out" | sed 's/ -T device:\/dev\/tpmrm0//' | cut -c1-110 | tr '\n' ';')"
    expect_clean "$id" "'runc run' returned" || return 1
}

# ---------------------------------------------------------------- 3. kept open by the administrator
t_platform_open() {
    local id=attest-open
    make_bundle runc "$id" '[{"createCerts": true, "openPlatformHierarchy": true}]' "$PLATFORM_SCRIPT" || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] || { why "'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    check_platform "$BUNDLE/out" open || return 1
    note "$(grep -E '^(ALLOWED|REFUSED|PH)' "$BUNDLE/out" | sed 's/ -T device:\/dev\/tpmrm0//' | cut -c1-90 | tr '\n' ';')"
    expect_clean "$id" "'runc run' returned" || return 1
}

# ---------------------------------------------------------------- 4. never from an annotation
t_platform_annotation() {
    local id=attest-ann ann
    ann='[{"vtpmVersion": "2", "openPlatformHierarchy": true}]'
    make_bundle runc "$id" "" 'echo CONTAINER-RAN' ".annotations[\"io.vtpm-hook.vtpms\"] = $(jq -Rn --arg a "$ann" '$a')" || return 1
    container_run runc "$id" || return 1
    [ "$RC" != 0 ] || { why "the container started with openPlatformHierarchy from an annotation"; return 1; }
    ! grep -q CONTAINER-RAN "$BUNDLE/out" || { why "the container's process ran"; return 1; }
    grep -q 'openPlatformHierarchy.* may not come from an annotation' "$LOG" ||
        { why "no clear error in the hook log: $(grep -i error "$LOG" | tail -n 1)"; return 1; }
    expect_clean "$id" "the failed 'runc run'" || return 1
    [ ! -e "$STATE_ROOT/$id" ] || { why "state dir $STATE_ROOT/$id left behind"; return 1; }
}

# ---------------------------------------------------------------- 5. export errors
t_ek_errors() {
    local id=attest-nocerts out rc
    make_bundle runc "$id" "" 'exec sleep 600' || return 1
    CLEANUP+=("runc $id")
    ( timeout -k 5 "$RUN_TIMEOUT" runc run -d --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'runc run -d' failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    wait_status runc "$id" running 20 || return 1
    for args in "ek --id $id" "ek --id no-such-container" "ek --id ../etc" "ek --id $id --index 1"; do
        # shellcheck disable=SC2086
        out=$(hook $args 2>&1 > /dev/null); rc=$?
        [ "$rc" = 1 ] && [ "$(grep -c . <<< "$out")" = 1 ] ||
            { why "'vtpm-hook $args': exit $rc, stderr '$out' (wanted exit 1 and one line)"; return 1; }
        note "vtpm-hook $args: $out"
    done
    j=$(hook status --json) || { why "'status --json' failed"; return 1; }
    [ "$(jq -c '.[0].ek' <<< "$j")" = "[]" ] || { why "'status --json' names EKs of a TPM without certificates: $(jq -c '.[0].ek' <<< "$j")"; return 1; }
    timeout 60 runc delete -f "$id" > /dev/null 2>&1 || { why "'runc delete -f' failed"; return 1; }
    expect_clean "$id" "'runc delete -f'" || return 1
}

# ---------------------------------------------------------------- 6. measured launch (issue 20)
# in the container after the quote: what the workload may try against its launch record
# shellcheck disable=SC2016
NEGATIVE_SCRIPT='T=device:/dev/tpm0; L=/run/vtpm-hook/measurements.cel.json
try() { if "$@" > /tmp/o.txt 2>&1; then echo "ALLOWED $1"; else echo "REFUSED $1 :: $(grep -m1 -o "tpm:.*" /tmp/o.txt)"; fi; }
[ -f $L ] && echo LOG-PRESENT
try tpm2_pcrreset -T $T '"$MEASURE_PCR"'
try tpm2_pcrextend -T $T '"$MEASURE_PCR"':sha256=0000000000000000000000000000000000000000000000000000000000000007
if (echo x > $L) 2> /tmp/w.txt; then echo "ALLOWED write"; else echo "REFUSED write :: $(cat /tmp/w.txt)"; fi
if mount -o remount,bind,rw $L > /tmp/m.txt 2>&1; then echo "ALLOWED remount"; else echo "REFUSED remount :: $(cat /tmp/m.txt)"; fi
cat $L > /x/container.cel.json
tpm2_pcrread -T $T sha1:'"$MEASURE_PCR"'+sha256:'"$MEASURE_PCR"'+sha384:'"$MEASURE_PCR"'+sha512:'"$MEASURE_PCR"' > /x/pcrread.txt && echo PCRREAD-OK
echo NEG-DONE'

# same_json A B: the same JSON value (key order and layout aside)
same_json() { [ "$(jq -cS . "$1" 2>&1)" = "$(jq -cS . "$2" 2>&1)" ]; }

t_measured_crun() {
    local id=measured-crun f t0
    rm -rf "$X"; mkdir -p "$X"
    make_bundle crun "$id" "" 'exec sleep 600' "$X_MOUNT" || return 1
    CLEANUP+=("crun $id"); DIAG+=("$BUNDLE/out" "$BUNDLE/err" "$X/mq-a.out" "$X/mq-b.out" "$X/neg.out" "$X/host.out")
    ( timeout -k 5 "$RUN_TIMEOUT" crun run -d --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'crun run -d' failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    wait_status crun "$id" running 20 || return 1
    hook log --id "$id" > "$X/log.cel.json" 2> "$X/host.out" || { why "'vtpm-hook log' failed: $(tail -n 1 "$X/host.out")"; return 1; }
    t0=$(now_ms)
    measured_quote "$X" --credential crun exec "$id" || return 1
    verify_launch "$X" quote "$BUNDLE/config.json" "$X/log.cel.json" --pcrs "$X/q.check" ||
        { why "the verifier refused crun's measured launch: $(tr '\n' ' ' < "$X/quote.verify")"; return 1; }
    note "ECC quote verified: $(cut -c1-120 "$X/quote.verify")"
    note "FIGURE: measured_crun_quote_ms=$(( $(now_ms) - t0 ))"

    # the workload against its record: PCR reset/extend refused by locality, the log copy read-only
    t0=$(now_ms)
    in_container "$X" neg.out "$NEGATIVE_SCRIPT" crun exec "$id"
    grep -q '^NEG-DONE' "$X/neg.out" && grep -q '^LOG-PRESENT' "$X/neg.out" && grep -q '^PCRREAD-OK' "$X/neg.out" ||
        { why "the negative checks did not run through: $(tr '\n' ' ' < "$X/neg.out" | cut -c1-300)"; return 1; }
    grep -q '^REFUSED tpm2_pcrreset :: tpm:.*bad locality' "$X/neg.out" ||
        { why "tpm2_pcrreset $MEASURE_PCR in the container: $(grep -m1 pcrreset "$X/neg.out") (wanted refused: bad locality)"; return 1; }
    grep -q '^REFUSED tpm2_pcrextend :: tpm:.*bad locality' "$X/neg.out" ||
        { why "tpm2_pcrextend $MEASURE_PCR in the container: $(grep -m1 pcrextend "$X/neg.out") (wanted refused: bad locality)"; return 1; }
    grep -q '^REFUSED write :: .*Read-only file system' "$X/neg.out" ||
        { why "writing the container's log copy: $(grep -m1 write "$X/neg.out") (wanted: Read-only file system)"; return 1; }
    grep -q '^REFUSED remount' "$X/neg.out" || { why "remounting the log copy rw: $(grep -m1 remount "$X/neg.out")"; return 1; }
    note "$(grep '^REFUSED' "$X/neg.out" | cut -c1-90 | tr '\n' ';')"
    hook log --id "$id" > "$X/log-after.cel.json" 2>> "$X/host.out" || { why "'vtpm-hook log' (after) failed"; return 1; }
    cmp -s "$X/log.cel.json" "$X/log-after.cel.json" || { why "'vtpm-hook log' changed while the workload attacked it"; return 1; }
    same_json "$X/container.cel.json" "$X/log.cel.json" ||
        { why "the container's copy differs from the host's log: $(head -c 200 "$X/container.cel.json")"; return 1; }
    # every bank of PCR 21 the TPM has, after the attempts, against the log (a bank the log
    # lacks fails too)
    verify_launch "$X" after "$BUNDLE/config.json" "$X/log.cel.json" --pcrs "$X/pcrread.txt" ||
        { why "after the attempts: $(tr '\n' ' ' < "$X/after.verify")"; return 1; }
    [ "$(pcr_of "$X/pcrread.txt" sha256)" = "$(pcr_of "$X/q.check" sha256)" ] ||
        { why "PCR $MEASURE_PCR changed after the quote: $(pcr_of "$X/pcrread.txt" sha256) vs $(pcr_of "$X/q.check" sha256)"; return 1; }
    note "after the attempts: $(cut -c1-160 "$X/after.verify")"
    note "FIGURE: measured_crun_negatives_ms=$(( $(now_ms) - t0 ))"
    timeout 60 crun delete -f "$id" > /dev/null 2>&1 || { why "'crun delete -f' failed"; return 1; }
    expect_clean "$id" "'crun delete -f'" || return 1
    log_gone "$id" || return 1
}

PODMAN_M=$E2E_WORK/podman
PODMAN=(podman --root "$PODMAN_M/store" --runroot "$PODMAN_M/runroot" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend file --hooks-dir "$PODMAN_M/hooks.d")
t_measured_podman() { t_measured_podman_body; local rc=$?; timeout 60 "${PODMAN[@]}" rm -af -t 0 > /dev/null 2>&1; return $rc; }
t_measured_podman_body() {
    local L=$LOG_DIR/podman.log id cfg t0
    rm -rf "$X"; mkdir -p "$X"
    podman_hooksd "$PODMAN_M" "$L" || return 1
    DIAG+=("$L" "$X/podman.err" "$X/mq-a.out" "$X/mq-b.out" "$X/host.out")
    t0=$(now_ms)
    ( timeout -k 5 "$RUN_TIMEOUT" "${PODMAN[@]}" run -d --name measured --network none --annotation io.vtpm-hook.vtpm=2 \
        -v /usr:/usr:ro -v /etc:/etc:ro -v "$X:/x" --rootfs "$PODMAN_M/rootfs" /bin/sh -c 'exec sleep 600' \
        < /dev/null > "$X/podman.out" 2> "$X/podman.err" ) 2> /dev/null ||
        { why "podman run -d failed: $(tail -n 3 "$X/podman.err" | tr '\n' ' ')"; return 1; }
    id=$(head -n1 "$X/podman.out")
    [[ $id =~ ^[0-9a-f]{64}$ ]] || { why "podman run -d printed no container id: $(head -c 200 "$X/podman.out")"; return 1; }
    note "FIGURE: measured_podman_run_ms=$(( $(now_ms) - t0 ))"
    # the runtime's config.json (what the hook read)
    cfg=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.OCIConfigPath}}' "$id" 2>> "$X/podman.err")
    [ -f "$cfg" ] || cfg=$(find "$PODMAN_M/store" "$PODMAN_M/runroot" -path "*$id/userdata/config.json" 2> /dev/null | head -n1)
    [ -f "$cfg" ] || { why "no config.json of podman container $id"; return 1; }
    cp "$cfg" "$X/config.json"
    hook log --id "$id" > "$X/log.cel.json" 2> "$X/host.out" || { why "'vtpm-hook log' failed: $(tail -n 1 "$X/host.out")"; return 1; }
    t0=$(now_ms)
    measured_quote "$X" "${PODMAN[@]}" exec "$id" || return 1
    verify_launch "$X" quote "$X/config.json" "$X/log.cel.json" --pcrs "$X/q.check" ||
        { why "the verifier refused podman's measured launch: $(tr '\n' ' ' < "$X/quote.verify")"; return 1; }
    note "ECC quote verified: $(cut -c1-120 "$X/quote.verify") (config.json: $cfg)"
    note "FIGURE: measured_podman_quote_ms=$(( $(now_ms) - t0 ))"
    timeout 60 "${PODMAN[@]}" rm -f -t 0 "$id" > /dev/null 2>> "$X/podman.err" || { why "podman rm -f failed"; return 1; }
    expect_clean "$id" "'podman rm -f'" || return 1
}

# measured_run NAME ID: `runc run` of the bundle just made (the variants' script); its PCR 21 and
# log copied to $X/NAME.pcrs, $X/NAME.cel.json, its config.json to $X/NAME.config.json
# shellcheck disable=SC2016
VARIANT_SCRIPT='tpm2_pcrread -T device:/dev/tpmrm0 sha256:'"$MEASURE_PCR"' > /x/pcrs.txt && cat /run/vtpm-hook/measurements.cel.json > /x/log.cel.json && echo MEASURE-READ'
measured_run() {
    local name=$1 id=$2
    rm -f "$X/pcrs.txt" "$X/log.cel.json"
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] && grep -q '^MEASURE-READ' "$BUNDLE/out" ||
        { why "$name: 'runc run' exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    mv "$X/pcrs.txt" "$X/$name.pcrs" && mv "$X/log.cel.json" "$X/$name.cel.json" && cp "$BUNDLE/config.json" "$X/$name.config.json"
}

t_measured_variants() {
    local v filter base t0
    rm -rf "$X"; mkdir -p "$X"
    t0=$(now_ms)
    make_bundle runc measured-var "" "$VARIANT_SCRIPT" "$X_MOUNT" || return 1
    measured_run base measured-var || return 1
    base=$(pcr_of "$X/base.pcrs" sha256)
    [[ $base =~ ^[0-9A-Fa-f]{64}$ ]] || { why "no sha256 PCR $MEASURE_PCR in the base run's pcrread: $(head -c 200 "$X/base.pcrs")"; return 1; }
    # the same container again (same id, bundle and state): a fresh log, the same value
    measured_run restart measured-var || return 1
    [ "$(pcr_of "$X/restart.pcrs" sha256)" = "$base" ] ||
        { why "the restarted container's PCR $MEASURE_PCR is $(pcr_of "$X/restart.pcrs" sha256), the first run's $base"; return 1; }
    same_json "$X/restart.cel.json" "$X/base.cel.json" || { why "the restart's log differs from the first run's"; return 1; }
    # the verifications, run at the end in one python process (one start: seconds under TCG)
    printf '%s\n' "restart --config $X/base.config.json --log $X/restart.cel.json --pcrs $X/restart.pcrs" > "$X/batch"
    for v in env arg capability mount-option; do
        case $v in
            env)          filter='.process.env += ["MEASURED_VARIANT=1"]' ;;
            arg)          filter='.process.args += ["variant"]' ;;
            capability)   filter='.process.capabilities.bounding += ["CAP_CHOWN"]' ;;
            mount-option) filter='(.mounts[] | select(.destination == "/tmp") | .options) += ["noexec"]' ;;
        esac
        make_bundle runc "measured-$v" "" "$VARIANT_SCRIPT" "$X_MOUNT | $filter" || return 1
        measured_run "$v" "measured-$v" || return 1
        [ "$(pcr_of "$X/$v.pcrs" sha256)" != "$base" ] || { why "$v changed: PCR $MEASURE_PCR is still the base's"; return 1; }
        printf '%s\n' "$v-own --config $X/$v.config.json --log $X/$v.cel.json --pcrs $X/$v.pcrs" \
                      "$v-base --config $X/base.config.json --log $X/$v.cel.json --pcrs $X/$v.pcrs" >> "$X/batch"
    done
    timeout 120 python3 "$VERIFY_PY" --batch "$X/batch" > "$X/batch.out" 2>&1 || { why "verifier --batch: $(tail -n 3 "$X/batch.out")"; return 1; }
    DIAG+=("$X/batch.out")
    grep -qx 'restart exit 0' "$X/batch.out" || { why "restart: $(grep '^restart ' "$X/batch.out" | tr '\n' ' ')"; return 1; }
    note "base and restart: PCR $MEASURE_PCR sha256 ${base:0:16}..., logs equal, verified (3 records)"
    for v in env arg capability mount-option; do
        grep -qx "$v-own exit 0" "$X/batch.out" || { why "$v with its own config.json: $(grep "^$v-own " "$X/batch.out" | tr '\n' ' ')"; return 1; }
        grep -qx "$v-base exit 1" "$X/batch.out" && grep -q "^$v-base FAIL event1: " "$X/batch.out" ||
            { why "$v with the base config.json (wanted refused, event1): $(grep "^$v-base " "$X/batch.out" | tr '\n' ' ')"; return 1; }
        note "$(grep -m1 "^$v-base FAIL" "$X/batch.out" | cut -c1-150)"
    done
    # (one check that nothing is left, for the last run: the others are the same path)
    expect_clean measured-mount-option "the last 'runc run'" || return 1
    note "FIGURE: measured_variants_ms=$(( $(now_ms) - t0 )) (6 runc runs)"
}

run_if() { local n=$1; shift; [[ $n =~ $ONLY ]] && scenario "$n" "$@"; return 0; }
run_if attest-flow          t_attest
run_if platform-closed      t_platform_closed
run_if platform-open        t_platform_open
run_if platform-annotation  t_platform_annotation
run_if ek-export-errors     t_ek_errors
run_if measured-crun        t_measured_crun
run_if measured-podman      t_measured_podman
run_if measured-variants    t_measured_variants

echo "FIGURE: attestation_test_time_ms=$(( $(now_ms) - T_START ))"
finish
