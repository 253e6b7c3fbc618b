#!/bin/bash
# tests/e2e/provisioning-tests.sh - end-to-end tests of vtpm-hook's provisioning
# features and of podman (hooks.d + annotation).
#
#   provisioning-tests.sh [/abs/path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs as root INSIDE the test VM (tests/e2e/run.sh provisioning boots it):
# needs /dev/vtpmx, runc, podman, jq, tpm2-tools, openssl. Scenarios:
#   podman-hooksd-annotation  podman + hooks.d file + --annotation io.vtpm-hook.vtpm=2;
#                             a podman container without the annotation gets no TPM
#   create-certs              createCerts: RSA + ECC EK certificates in NV, verified
#                             against the local CA, public keys = tpm2_createek's
#   create-certs-5-concurrent five containers at once, fresh CA location: one CA
#   pcr-banks                 pcrBanks "sha256,sha384": exactly these banks
#   run-as                    runAs "nobody": the emulator's uid/gid, state file owners
#   encryption                encryptionKeyFile: NV survives, no plaintext in the
#                             state file, `emulate` without the key fails
#   annotations-runc          io.vtpm-hook.vtpm + io.vtpm-hook.pcr-banks in config.json;
#                             io.vtpm-hook.vtpm=3 fails the start, nothing left behind
#   status                    `vtpm-hook status` (table and --json) of a running container
#   cdi-podman-tpm2           the spec of `vtpm-hook cdi` in /etc/cdi; podman run --device
#   cdi-podman-tpm12          vtpm-hook.io/tpm=2 (=1.2): the TPM works inside, nothing is
#                             left after podman rm; podman start time without/with the device
#   cdi-gc                    `vtpm-hook gc --unused-for 0`: a stopped container's state goes,
#                             a running one's and the CA dir stay
#   export-import             `vtpm-hook export`, the state wiped, `import` under a new id:
#                             NV, persistent key, EKs; a tampered archive, a wrong key refused
#   podman-checkpoint-import  podman checkpoint --export, vtpm-hook export, state and container
#                             gone, vtpm-hook import, podman restore --import: PCR 8, NV, EK kept
# Prints "PASS: name" / "FAIL: name: why", indented notes and "FIGURE: ..."
# lines, and finally "N passed, M failed". Exit status: 0 all passed, 1 some
# failed, 2 the environment is unusable. E2E_ONLY=regex selects scenarios.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_WORK=${E2E_WORK:-/run/vtpm-prov}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HOOK=${1:-${VTPM_HOOK:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/vtpm-hook}}
ONLY=${E2E_ONLY:-.}
T=device:/dev/tpmrm0        # the TCTI inside the containers

# ---------------------------------------------------------------- preflight
preflight runc podman criu jq openssl tpm2_getrandom tpm2_nvread tpm2_nvdefine tpm2_createek tpm2_getcap timeout cmp

echo "# kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/cgroup v2/;s/tmpfs/cgroup v1/'), tpm major $TPM_MAJOR"
echo "# $(runc --version | head -n1), $(podman --version), $(openssl version)"
echo "# hook: $HOOK"

rm -rf "$E2E_WORK"
mkdir -p "$STATE_ROOT" "$RUN_ROOT" "$LOG_DIR" "$BUNDLES" "$E2E_WORK/tpms"
# explicit statePaths live under $TPMS: the administrator's policy allows that root besides
# --state-root (make_bundle passes --policy to both hooks)
TPMS=$E2E_WORK/tpms
POLICY=$E2E_WORK/policy.json
write_policy "$POLICY" "{\"statePathRoots\": [\"$TPMS\"]}" || fatal "cannot write $POLICY"
T_START=$(now_ms)

# ---------------------------------------------------------------- helpers
# banks_selected FILE: the banks of `tpm2_getcap pcrs` output that have PCRs
# selected, space separated, in output order ("sha256 sha384")
banks_selected() {
    sed -n 's/^ *- *\([a-z0-9_]*\): *\[\(.*\)\] *$/\1 \2/p' "$1" |
        awk 'NF > 1 { printf "%s%s", sep, $1; sep = " " }'
}
# banks_listed FILE: every bank `tpm2_getcap pcrs` lists
banks_listed() { sed -n 's/^ *- *\([a-z0-9_]*\): *\[.*$/\1/p' "$1" | tr '\n' ' ' | sed 's/ $//'; }

fail_run() { why "$1 exited with $RC: $(tail -n 3 "$BUNDLE/err" "$BUNDLE/out" | tr '\n' ' ')"; }

# prestart args with extra global options (before the subcommand): jq filter for make_bundle
ca_jq() {   # ca_jq KEY CERT MOUNT_DIR
    printf '.hooks.prestart[0].args |= (.[0:1] + ["--ca-key", "%s", "--ca-cert", "%s"] + .[1:])
      | .mounts += [{"destination": "/ca", "type": "bind", "source": "%s", "options": ["rbind", "ro"]}]' "$1" "$2" "$3"
}

# ---------------------------------------------------------------- 1. podman
PODMAN_W=$E2E_WORK/podman
PODMAN=(podman --root "$PODMAN_W/store" --runroot "$PODMAN_W/runroot" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend file --hooks-dir "$PODMAN_W/hooks.d")
t_podman() { t_podman_body; local rc=$?; timeout 60 "${PODMAN[@]}" rm -af > /dev/null 2>&1; return $rc; }
t_podman_body() {
    local W=$PODMAN_W L=$LOG_DIR/podman.log out err rc t0 ms id
    podman_hooksd "$W" "$L" || return 1
    out=$W/out; err=$W/err
    DIAG+=("$L" "$out" "$err")
    # (--rootfs last: its path is the first argument, the command follows)
    local base_args=(--network none -v /usr:/usr:ro -v /etc:/etc:ro --rootfs "$W/rootfs")
    local run_args=(run --rm --annotation io.vtpm-hook.vtpm=2 "${base_args[@]}")
    local script='for d in /dev/tpm0 /dev/tpmrm0; do
  if [ -c $d ]; then echo "DEV $d c $(stat -c %t:%T $d)"; else echo "NODEV $d"; fi; done
r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) || { echo "getrandom failed rc=$?"; exit 3; }
echo "RANDOM $r"'
    note "FIGURE: podman_cmd: ${PODMAN[*]} ${run_args[*]} /bin/sh -c '...tpm2_getrandom -T device:/dev/tpmrm0 --hex 8'"
    t0=$(now_ms)
    ( timeout -k 5 "$RUN_TIMEOUT" "${PODMAN[@]}" "${run_args[@]}" /bin/sh -c "$script" < /dev/null > "$out" 2> "$err" ) 2> /dev/null
    rc=$?; ms=$(( $(now_ms) - t0 ))
    note "FIGURE: podman_run_ms=$ms (with the annotation, until 'podman run --rm' returned)"
    case $rc in 124|137) why "podman run did not finish within ${RUN_TIMEOUT}s (live vtpm-emu: $(live_emulators | tr '\n' ' '))"; return 1 ;; esac
    [ "$rc" = 0 ] || { why "podman run (annotated) exited with $rc: $(tail -n 3 "$err" "$out" | tr '\n' ' ')"; return 1; }
    grep -q '^DEV /dev/tpm0 c' "$out" && grep -q '^DEV /dev/tpmrm0 c' "$out" ||
        { why "no /dev/tpm0 + /dev/tpmrm0 in the annotated podman container: $(grep DEV "$out" | tr '\n' ' ')"; return 1; }
    grep -Eq '^RANDOM [0-9a-f]{16}$' "$out" || { why "tpm2_getrandom in podman: $(grep -m1 RANDOM "$out" || echo no output)"; return 1; }
    note "$(grep '^RANDOM' "$out")"
    id=$(sed -n 's/^.*container \([0-9a-f]\{64\}\): setup took.*$/\1/p' "$L" | tail -n1)
    [ -n "$id" ] || { why "no 'setup took' line in the hook log $L"; return 1; }
    grep -q "container $id: .*torn down" "$L" || { why "the hook log has no teardown of $id (podman's poststop did not run?)"; return 1; }
    expect_clean "$id" "'podman run --rm' returned" || return 1
    [ -z "$(run_records)" ] || { why "run records left: $(run_records | tr '\n' ' ')"; return 1; }
    [ -d "$STATE_ROOT/$id" ] || { why "no state dir $STATE_ROOT/$id (podman container id)"; return 1; }

    # without the annotation: hooks.d does not match, no TPM, no hook run
    mv "$L" "$L.annotated"; DIAG+=("$L.annotated")
    run_args=(run --rm "${base_args[@]}")
    ( timeout -k 5 "$RUN_TIMEOUT" "${PODMAN[@]}" "${run_args[@]}" /bin/sh -c "$script" < /dev/null > "$out" 2> "$err" ) 2> /dev/null
    rc=$?
    case $rc in 124|137) why "podman run (no annotation) did not finish within ${RUN_TIMEOUT}s"; return 1 ;; esac
    grep -q '^NODEV /dev/tpm0' "$out" && grep -q '^NODEV /dev/tpmrm0' "$out" ||
        { why "podman container without the annotation: $(grep DEV "$out" | tr '\n' ' ') (rc $rc)"; return 1; }
    [ "$rc" = 3 ] || { why "without a TPM tpm2_getrandom should fail (script exit 3), podman exited with $rc"; return 1; }
    [ ! -e "$L" ] || { why "the hook ran for a container without the annotation: $(head -n 3 "$L" | tr '\n' ' ')"; return 1; }
    [ -z "$(run_records)" ] || { why "run record for a container without the annotation: $(run_records | tr '\n' ' ')"; return 1; }
    expect_clean "" "'podman run --rm' (no annotation) returned" || return 1
}

# ---------------------------------------------------------------- 2. createCerts
# in-container script: both EK certificates read from NV, verified against
# /ca/cert.pem, their public keys compared with tpm2_createek's
CERTS_SCRIPT='cd /tmp
for a in rsa:0x1c00002 ecc:0x1c0000a; do
  g=${a%%:*}; nv=${a#*:}
  tpm2_nvread -T device:/dev/tpmrm0 -C o $nv -o $g.der > /dev/null || { echo "NVREAD-FAIL $g"; continue; }
  echo "NVREAD-OK $g $(wc -c < $g.der) bytes"
  openssl x509 -inform der -in $g.der -out $g.pem || { echo "NOT-DER $g"; continue; }
  echo "SUBJECT $g $(openssl x509 -in $g.pem -noout -subject -issuer | tr "\n" " ")"
  v=$(openssl verify -CAfile ${CA_CERT:-/ca/cert.pem} $g.pem 2>&1); echo "VERIFY $g $v" | tr "\n" " "; echo
  [ -d /out ] && cp $g.der /out/$(hostname)-$g.der
  [ -n "${NO_CREATEEK:-}" ] && continue
  t0=$(date +%s%N)
  tpm2_createek -T device:/dev/tpmrm0 -G $g -u $g-ek.pem -f pem -c $g-ek.ctx > /dev/null || { echo "CREATEEK-FAIL $g"; continue; }
  echo "CREATEEK-MS $g $(( ($(date +%s%N) - t0) / 1000000 ))"
  openssl x509 -in $g.pem -noout -pubkey | openssl pkey -pubin -outform der > $g-cert-pub.der
  openssl pkey -pubin -in $g-ek.pem -outform der > $g-ek-pub.der
  if [ -s $g-ek-pub.der ] && cmp -s $g-cert-pub.der $g-ek-pub.der; then echo "PUBKEY-MATCH $g"; else echo "PUBKEY-DIFFER $g"; fi
done
echo "PERSISTENT $(tpm2_getcap -T device:/dev/tpmrm0 handles-persistent | tr "\n" " ")"
echo CERTS-DONE'

# check_certs_output FILE [nokeys]: RSA + ECC lines of CERTS_SCRIPT all good
# (nokeys: the script ran with NO_CREATEEK=1, no public key comparison)
check_certs_output() {
    local f=$1 nokeys=${2:-} g
    for g in rsa ecc; do
        grep -q "^NVREAD-OK $g" "$f" || { why "$g EK certificate: tpm2_nvread failed ($(grep -m1 "$g" "$f"))"; return 1; }
        ! grep -q "^NOT-DER $g" "$f" || { why "$g EK certificate in NV is not DER"; return 1; }
        grep -q "^VERIFY $g [^ ]*: OK" "$f" || { why "$g EK certificate does not verify against the CA: $(grep "^VERIFY $g" "$f")"; return 1; }
        [ -n "$nokeys" ] || grep -q "^PUBKEY-MATCH $g" "$f" || { why "$g: certificate public key vs tpm2_createek: $(grep -E "^(PUBKEY|CREATEEK)[^ ]* $g" "$f")"; return 1; }
    done
    grep -q '^CERTS-DONE' "$f" || { why "the container script did not reach its end"; return 1; }
}

t_certs() {
    local id=prov-certs dir=$TPMS/certs-tpm ca=$E2E_WORK/ca vt
    mkdir -p "$ca"       # the mount point must exist; the CA files in it are the hook's
    vt=$(jq -nc --arg p "$dir" '[{"statePath": $p, "createCerts": true}]')
    make_bundle runc "$id" "$vt" "$CERTS_SCRIPT" "$(ca_jq "$ca/key.pem" "$ca/cert.pem" "$ca")" || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] || { fail_run "'runc run' (createCerts)"; return 1; }
    [ -s "$ca/key.pem" ] && [ -s "$ca/cert.pem" ] || { why "the hook did not create the CA: $(ls -A "$ca" | tr '\n' ' ')"; return 1; }
    check_certs_output "$BUNDLE/out" || return 1
    note "$(grep -m1 '^SUBJECT rsa' "$BUNDLE/out" | cut -c1-200)"
    note "$(grep '^PERSISTENT' "$BUNDLE/out"); tpm2_createek ms: $(sed -n 's/^CREATEEK-MS //p' "$BUNDLE/out" | tr '\n' ' ')"
    note "CA: $(openssl x509 -in "$ca/cert.pem" -noout -subject) key $(openssl pkey -in "$ca/key.pem" -noout -text 2>/dev/null | head -n1)"
    # (without this line on the first run, the second run's "not made again" would be vacuous)
    grep -q 'EKs and EK certificates created' "$LOG" || { why "no 'EKs and EK certificates created' line in the hook log of the first run"; return 1; }
    expect_clean "$id" "'runc run' (createCerts) returned" || return 1

    # a second container with the same state: certificates are still there, not re-made
    make_bundle runc "$id-again" "$vt" "$CERTS_SCRIPT" "$(ca_jq "$ca/key.pem" "$ca/cert.pem" "$ca")
        | .process.env += [\"NO_CREATEEK=1\"]" || return 1
    container_run runc "$id-again" || return 1
    [ "$RC" = 0 ] || { fail_run "'runc run' (createCerts, existing TPM)"; return 1; }
    check_certs_output "$BUNDLE/out" nokeys || return 1
    if grep -q 'EKs and EK certificates created' "$LOG"; then
        why "the certificates were made again for a TPM that already has them"; return 1
    fi
    expect_clean "$id-again" "'runc run' (createCerts, existing TPM) returned" || return 1
}

# five containers at once, createCerts, a CA location that does not exist yet
t_certs_concurrent() {
    local ca=$E2E_WORK/ca5 outd=$E2E_WORK/certs5-out i id ids=() pids=() vt bad="" rc f t0 ms n
    rm -rf "$ca" "$outd"; mkdir -p "$ca" "$outd"
    for i in 1 2 3 4 5; do
        id=prov-certs5-$i
        vt=$(jq -nc --arg p "$TPMS/certs5-tpm-$i" '[{"statePath": $p, "createCerts": true}]')
        make_bundle runc "$id" "$vt" "$CERTS_SCRIPT" "$(ca_jq "$ca/sub/key.pem" "$ca/sub/cert.pem" "$ca")
            | .mounts += [{\"destination\": \"/out\", \"type\": \"bind\", \"source\": \"$outd\", \"options\": [\"rbind\", \"rw\"]}]
            | .process.env += [\"CA_CERT=/ca/sub/cert.pem\", \"NO_CREATEEK=1\"]" || return 1
        ids+=("$id"); CLEANUP+=("runc $id")
    done
    DIAG=()
    t0=$(now_ms)
    for id in "${ids[@]}"; do
        ( timeout -k 5 "$RUN_TIMEOUT" runc run --bundle "$BUNDLES/$id" "$id" \
            < /dev/null > "$BUNDLES/$id/out" 2> "$BUNDLES/$id/err"; echo $? > "$BUNDLES/$id/rc" ) 2> /dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    ms=$(( $(now_ms) - t0 ))
    note "FIGURE: certs5_wall_ms=$ms (5 x 'runc run' with createCerts, started together)"
    for id in "${ids[@]}"; do
        read -r rc < "$BUNDLES/$id/rc"
        if [ "$rc" != 0 ] || ! check_certs_output "$BUNDLES/$id/out" nokeys; then
            bad+="$id(rc $rc${WHY:+: $WHY}) "; WHY=""
            DIAG+=("$LOG_DIR/$id.log" "$BUNDLES/$id/out" "$BUNDLES/$id/err")
        fi
    done
    [ -z "$bad" ] || { why "$bad"; return 1; }
    # the CA exists once: one key, one certificate, nothing else but the lock
    [ "$(ls -A "$ca/sub" | sort | tr '\n' ' ')" = ".ca.lock cert.pem key.pem " ] ||
        { why "CA directory holds: $(ls -A "$ca/sub" | tr '\n' ' ')"; return 1; }
    n=$(grep -c 'BEGIN CERTIFICATE' "$ca/sub/cert.pem")
    [ "$n" = 1 ] || { why "$ca/sub/cert.pem has $n certificates"; return 1; }
    [ "$(openssl x509 -in "$ca/sub/cert.pem" -noout -pubkey)" = "$(openssl pkey -in "$ca/sub/key.pem" -pubout)" ] ||
        { why "the CA key does not belong to the CA certificate"; return 1; }
    # every certificate (read out of each TPM's NV) verifies against the final CA file
    n=0
    for f in "$outd"/*.der; do
        [ -e "$f" ] || continue
        openssl x509 -inform der -in "$f" -out "$f.pem" 2>/dev/null &&
            openssl verify -CAfile "$ca/sub/cert.pem" "$f.pem" > /dev/null 2>&1 ||
            { why "$(basename "$f") does not verify against $ca/sub/cert.pem on the host"; return 1; }
        n=$((n + 1))
    done
    [ "$n" = 10 ] || { why "$n certificates copied out of the containers, wanted 10 (5 RSA + 5 ECC)"; return 1; }
    n=$(for f in "$outd"/*-rsa.der.pem; do openssl x509 -in "$f" -noout -pubkey | sha256sum; done | sort -u | grep -c .)
    [ "$n" = 5 ] || { why "the 5 RSA EK certificates have $n distinct public keys"; return 1; }
    ms=$(for id in "${ids[@]}"; do grep -ho 'setup took [0-9]* ms' "$LOG_DIR/$id.log"; done | awk '{print $3}' | sort -n | tr '\n' ' ')
    note "FIGURE: certs5_setup_ms=${ms% } (each hook's own time, concurrent)"
    expect_clean "" "all 5 'runc run' returned" || return 1
}

# ---------------------------------------------------------------- 3. pcrBanks
t_pcr_banks() {
    local id=prov-pcr-banks vt got
    vt=$(jq -nc --arg p "$TPMS/pcr-banks-tpm" '[{"statePath": $p, "pcrBanks": "sha256,sha384"}]')
    make_bundle runc "$id" "$vt" 'tpm2_getcap -T device:/dev/tpmrm0 pcrs || exit 3
tpm2_pcrread -T device:/dev/tpmrm0 sha384:0 > /dev/null && echo PCRREAD-SHA384-OK
echo BANKS-DONE' || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] && grep -q '^BANKS-DONE' "$BUNDLE/out" || { fail_run "'runc run' (pcrBanks)"; return 1; }
    got=$(banks_selected "$BUNDLE/out")
    note "tpm2_getcap pcrs: banks listed '$(banks_listed "$BUNDLE/out")', with PCRs selected '$got'"
    [ "$got" = "sha256 sha384" ] || { why "banks with PCRs selected: '$got', wanted 'sha256 sha384'"; return 1; }
    grep -q '^PCRREAD-SHA384-OK' "$BUNDLE/out" || { why "tpm2_pcrread sha384:0 failed"; return 1; }
    grep -q 'PCR banks allocated' "$LOG" && note "hook: $(grep -m1 'PCR banks allocated' "$LOG" | sed 's/^.*\] //;s/^.*: PCR/PCR/')"
    expect_clean "$id" "'runc run' (pcrBanks) returned" || return 1
}

# ---------------------------------------------------------------- 4. runAs
t_run_as() {
    local id=prov-run-as dir=$TPMS/run-as-tpm vt emu ids owners
    vt=$(jq -nc --arg p "$dir" '[{"statePath": $p, "runAs": "nobody"}]')
    make_bundle runc "$id" "$vt" 'r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) || exit 3; echo "RANDOM $r"' || return 1
    CLEANUP+=("runc $id"); DIAG+=("$BUNDLE/out" "$BUNDLE/err" "$BUNDLE/ctl.err")
    ( timeout -k 5 "$RUN_TIMEOUT" runc create --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'runc create' (runAs) failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    emu=$(live_emulators)
    [ "$(echo "$emu" | wc -w)" = 1 ] || { why "wanted one live vtpm-emu after create, found '$emu'"; return 1; }
    ids="$(awk '/^Uid:/ {print "uid", $2, $3, $4, $5} /^Gid:/ {print "gid", $2, $3, $4, $5}' "/proc/$emu/status" | tr '\n' ' ')"
    note "emulator $emu: $ids; groups: $(sed -n 's/^Groups:\s*//p' "/proc/$emu/status")"
    [ "$ids" = "uid 65534 65534 65534 65534 gid 65534 65534 65534 65534 " ] ||
        { why "emulator $emu runs as $ids, wanted uid/gid 65534 (real, effective, saved, fs)"; return 1; }
    # supplementary groups: none but nobody's own (initgroups)
    [ -z "$(sed -n 's/^Groups:\s*//p' "/proc/$emu/status" | tr ' ' '\n' | grep -vx -e 65534 -e '')" ] ||
        { why "emulator has other supplementary groups: $(grep ^Groups "/proc/$emu/status")"; return 1; }
    grep -q '^CapEff:\s*0*$' "/proc/$emu/status" || { why "emulator has capabilities: $(grep ^Cap "/proc/$emu/status" | tr '\n' ' ')"; return 1; }
    timeout 60 runc start "$id" > /dev/null 2> "$BUNDLE/ctl.err" || { why "'runc start' failed: $(tail -n 3 "$BUNDLE/ctl.err" | tr '\n' ' ')"; return 1; }
    wait_status runc "$id" stopped "$RUN_TIMEOUT" || return 1
    grep -Eq '^RANDOM [0-9a-f]{16}$' "$BUNDLE/out" || { why "tpm2_getrandom with runAs: $(tail -n 3 "$BUNDLE/out" "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    timeout 60 runc delete "$id" > /dev/null 2> "$BUNDLE/ctl.err" || { why "'runc delete' failed: $(tail -n 3 "$BUNDLE/ctl.err" | tr '\n' ' ')"; return 1; }
    expect_clean "$id" "'runc delete' (runAs) returned" || return 1
    owners=$(cd "$dir" && stat -c '%u:%g %n' . * .[!.]* 2>/dev/null | tr '\n' ';')
    note "state dir owners: $owners"
    [ -e "$dir/tpm2-00.permall" ] || { why "no tpm2-00.permall in $dir: $(ls -A "$dir" | tr '\n' ' ')"; return 1; }
    # the directory (created by this setup) and every file the emulator wrote, .lock included
    [ -z "$(cd "$dir" && stat -c '%u:%g %n' . * .[!.]* 2>/dev/null | grep -v '^65534:65534 ')" ] ||
        { why "state dir or files not owned by 65534:65534: $owners"; return 1; }
}

# ---------------------------------------------------------------- 5. encryption
ENC_DATA='vtpm-prov-SECRET-marker-0123456'    # 31 bytes
t_encryption() {
    local dir=$TPMS/enc-tpm key=$E2E_WORK/enc.key vt n out err rc got want
    head -c 32 /dev/urandom > "$key"; chmod 600 "$key"
    vt=$(jq -nc --arg p "$dir" --arg k "$key" '[{"statePath": $p, "encryptionKeyFile": $k}]')
    make_bundle runc prov-enc-1 "$vt" "set -e
tpm2_nvdefine -T $T 0x1500020 -C o -s 32 -a 'ownerread|ownerwrite' > /dev/null
printf '%s' '$ENC_DATA' > /tmp/d
tpm2_nvwrite -T $T 0x1500020 -C o -i /tmp/d
echo WRITE-OK" || return 1
    container_run runc prov-enc-1 || return 1
    [ "$RC" = 0 ] && grep -q '^WRITE-OK' "$BUNDLE/out" || { fail_run "writer (encrypted state)"; return 1; }
    expect_clean prov-enc-1 "the writer returned" || return 1
    note "state files: $(ls -A "$dir" | tr '\n' ' ')"
    [ -s "$dir/tpm2-00.permall" ] || { why "no tpm2-00.permall in $dir"; return 1; }
    n=$(cat "$dir"/tpm2-00.* | grep -caF "$ENC_DATA")
    [ "$n" = 0 ] || { why "the NV data is in the state files in plaintext ($n matches)"; return 1; }

    make_bundle runc prov-enc-2 "$vt" "tpm2_nvread -T $T 0x1500020 -C o -s ${#ENC_DATA} -o /tmp/r || exit 5
echo \"NV \$(cat /tmp/r)\"" || return 1
    container_run runc prov-enc-2 || return 1
    [ "$RC" = 0 ] || { fail_run "reader (encrypted state)"; return 1; }
    got=$(sed -n 's/^NV //p' "$BUNDLE/out")
    [ "$got" = "$ENC_DATA" ] || { why "NV read back '$got', written '$ENC_DATA'"; return 1; }
    expect_clean prov-enc-2 "the reader returned" || return 1

    # the state without the key: emulate refuses, naming the key
    out=$E2E_WORK/enc-emulate.out; err=$E2E_WORK/enc-emulate.err; DIAG+=("$err")
    ( timeout -k 5 30 "$HOOK" emulate --state-dir "$dir" < /dev/null > "$out" 2> "$err" ) 2> /dev/null
    rc=$?
    note "emulate without the key: exit $rc, stderr: $(head -c 300 "$err" | tr '\n' '|')"
    case $rc in 0) why "'vtpm-hook emulate' without the key exited 0"; return 1 ;;
                124|137) why "'vtpm-hook emulate' without the key hung"; return 1 ;; esac
    grep -qi 'key' "$err" || { why "the error of 'emulate' without the key does not mention the key: $(head -c 300 "$err")"; return 1; }
    # with the key, emulate opens the same state (the NV index is there)
    got=$(timeout 60 tpm2_nvread -T "cmd:exec $HOOK emulate --state-dir $dir --key-file $key" 0x1500020 -C o -s ${#ENC_DATA} 2> "$err")
    [ "$got" = "$ENC_DATA" ] || { why "'emulate --key-file' + tpm2_nvread gave '$got': $(head -c 300 "$err")"; return 1; }
    # control: the same NV write on an unencrypted TPM does show the plaintext
    local plain=$E2E_WORK/enc-control
    mkdir -p "$plain"
    want=$E2E_WORK/enc-control.data; printf '%s' "$ENC_DATA" > "$want"
    timeout 60 tpm2_nvdefine -T "cmd:exec $HOOK emulate --state-dir $plain" 0x1500020 -C o -s 32 -a 'ownerread|ownerwrite' > /dev/null 2>> "$err" &&
        timeout 60 tpm2_nvwrite -T "cmd:exec $HOOK emulate --state-dir $plain" 0x1500020 -C o -i "$want" 2>> "$err" ||
        { why "control (unencrypted NV write via emulate) failed, so the plaintext check proves nothing: $(tail -n 2 "$err" | tr '\n' ' ')"; return 1; }
    n=$(cat "$plain"/tpm2-00.* | grep -caF "$ENC_DATA")
    note "control: the unencrypted state files contain the NV data $n time(s)"
    [ "$n" -ge 1 ] || { why "control failed: the plaintext is not found even in an unencrypted state, so the check proves nothing"; return 1; }
}

# ---------------------------------------------------------------- 6. annotations (runc)
t_annotations() {
    local id=prov-ann got rc
    make_bundle runc "$id" "" 'tpm2_getcap -T device:/dev/tpmrm0 pcrs || exit 3
for d in /dev/tpm0 /dev/tpmrm0 /dev/tpm1; do [ -c $d ] && echo "DEV $d"; done
echo ANN-DONE' '.annotations = {"io.vtpm-hook.vtpm": "2", "io.vtpm-hook.pcr-banks": "sha256"} | del(.linux.vtpms)' || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] && grep -q '^ANN-DONE' "$BUNDLE/out" || { fail_run "'runc run' (annotations)"; return 1; }
    [ "$(grep '^DEV' "$BUNDLE/out" | tr '\n' ' ')" = "DEV /dev/tpm0 DEV /dev/tpmrm0 " ] ||
        { why "devices in the container: $(grep '^DEV' "$BUNDLE/out" | tr '\n' ' ')"; return 1; }
    got=$(banks_selected "$BUNDLE/out")
    note "banks listed '$(banks_listed "$BUNDLE/out")', with PCRs selected '$got'"
    [ "$got" = sha256 ] || { why "banks with PCRs selected: '$got', wanted 'sha256'"; return 1; }
    [ -d "$STATE_ROOT/$id" ] || { why "default state dir $STATE_ROOT/$id missing"; return 1; }
    expect_clean "$id" "'runc run' (annotations) returned" || return 1

    # malformed: io.vtpm-hook.vtpm=3 fails the start, one line from the hook
    id=prov-ann-bad
    make_bundle runc "$id" "" 'echo SHOULD-NOT-RUN' '.annotations = {"io.vtpm-hook.vtpm": "3"} | del(.linux.vtpms)' || return 1
    container_run runc "$id" || return 1
    [ "$RC" != 0 ] || { why "'runc run' with io.vtpm-hook.vtpm=3 exited 0"; return 1; }
    ! grep -q SHOULD-NOT-RUN "$BUNDLE/out" || { why "the container ran despite the bad annotation"; return 1; }
    # (runc quotes the hook's stderr: " comes as \")
    tr -d '\\' < "$BUNDLE/err" | grep -qF 'vtpm-hook: error: annotation io.vtpm-hook.vtpm must be "2", "1.2" or "none", not "3"' ||
        { why "runc's stderr lacks the hook's error: $(head -c 400 "$BUNDLE/err" | tr '\n' '|')"; return 1; }
    note "runc exit $RC, stderr: $(head -c 400 "$BUNDLE/err" | tr '\n' '|')"
    [ "$(grep -o 'stderr: .*' "$BUNDLE/err" | grep -o '\\n' | wc -l)" = 1 ] ||
        { why "the hook's stderr (as quoted by runc) is not one line"; return 1; }
    expect_clean "$id" "the failed 'runc run'" || return 1
    [ ! -e "$STATE_ROOT/$id" ] || { why "state dir $STATE_ROOT/$id left behind"; return 1; }
    [ -z "$(runtime_status runc "$id")" ] || { why "runc still knows $id: $(runtime_status runc "$id")"; return 1; }
}

# ---------------------------------------------------------------- 7. status
t_status() {
    local id=prov-status out j pid n
    make_bundle runc "$id" "" 'exec sleep 600' || return 1
    CLEANUP+=("runc $id"); DIAG+=("$BUNDLE/out" "$BUNDLE/err" "$E2E_WORK/status.out")
    ( timeout -k 5 "$RUN_TIMEOUT" runc run -d --bundle "$BUNDLE" "$id" < /dev/null > "$BUNDLE/out" 2> "$BUNDLE/err" ) 2> /dev/null ||
        { why "'runc run -d' failed: $(tail -n 3 "$BUNDLE/err" | tr '\n' ' ')"; return 1; }
    wait_status runc "$id" running 20 || return 1
    out=$E2E_WORK/status.out
    timeout 20 "$HOOK" --run-root "$RUN_ROOT" status > "$out" 2>&1 || { why "'vtpm-hook status' failed: $(head -c 300 "$out")"; return 1; }
    note "status: $(tail -n +2 "$out" | tr -s ' ')"
    n=$(tail -n +2 "$out" | grep -c .)
    [ "$n" = 1 ] || { why "'status' has $n rows, wanted 1: $(cat "$out")"; return 1; }
    j=$(timeout 20 "$HOOK" --run-root "$RUN_ROOT" status --json) || { why "'vtpm-hook status --json' failed"; return 1; }
    echo "$j" > "$out.json"; DIAG+=("$out.json")
    [ "$(jq length <<< "$j")" = 1 ] || { why "'status --json' has $(jq length <<< "$j") rows"; return 1; }
    pid=$(jq -r '.[0].emulatorPid' <<< "$j")
    jq -e --arg id "$id" --arg sp "$STATE_ROOT/$id" '.[0] | .containerId == $id and (.hostDevice | test("^/dev/tpm[0-9]+$"))
        and .containerDevice == "/dev/tpm0" and .alive == true and .vtpmVersion == "2" and .statePath == $sp' <<< "$j" > /dev/null ||
        { why "'status --json' row: $(jq -c '.[0]' <<< "$j")"; return 1; }
    [ "$(live_emulators)" = "$pid" ] || { why "emulatorPid $pid is not the live vtpm-emu ($(live_emulators | tr '\n' ' '))"; return 1; }
    [ -e "/sys/class/tpm/$(jq -r '.[0].hostDevice' <<< "$j" | sed 's,/dev/,,')" ] || { why "hostDevice $(jq -r '.[0].hostDevice' <<< "$j") has no /sys/class/tpm entry"; return 1; }
    # the table row carries the same facts
    local row; row=$(tail -n +2 "$out" | tr -s ' ')
    for w in "$id" "$(jq -r '.[0].hostDevice' <<< "$j")" /dev/tpm0 "$pid" 2 yes "$STATE_ROOT/$id"; do
        [[ " $row " == *" $w "* ]] || { why "table row lacks '$w': $row"; return 1; }
    done
    timeout 60 runc delete -f "$id" > /dev/null 2>&1 || { why "'runc delete -f' failed"; return 1; }
    expect_clean "$id" "'runc delete -f'" || return 1
    j=$(timeout 20 "$HOOK" --run-root "$RUN_ROOT" status --json) || { why "'status --json' after delete failed"; return 1; }
    [ "$(jq length <<< "$j")" = 0 ] || { why "'status --json' after delete: $j"; return 1; }
    timeout 20 "$HOOK" --run-root "$RUN_ROOT" status > "$out" 2>&1 || { why "'vtpm-hook status' after delete failed: $(head -c 300 "$out")"; return 1; }
    n=$(tail -n +2 "$out" | grep -c .)
    [ "$n" = 0 ] || { why "'status' after delete has $n rows"; return 1; }
}

# ---------------------------------------------------------------- CDI (podman --device)
# The spec `vtpm-hook cdi --output /etc/cdi/vtpm-hook.json` installs (the guest's / is an
# overlay: the file stays in the VM), with a state root of its own so that gc below only sees
# what these containers left. No hooks.d file: the CDI device alone brings the TPM.
CDI_W=$E2E_WORK/podman-cdi
CDI_STATE=$E2E_WORK/cdi-state
CDI_LOG=$LOG_DIR/cdi.log
CDI_SPEC=/etc/cdi/vtpm-hook.json
cdi_podman() {
    echo podman --root "$CDI_W/store" --runroot "$CDI_W/runroot" --storage-driver vfs \
        --cgroup-manager cgroupfs --events-backend file --hooks-dir "$CDI_W/hooks.d"
}
# cdi_prepare: once per VM boot, the rootfs, the empty hooks.d and the installed spec
cdi_prepare() {
    [ -s "$CDI_SPEC" ] && [ -d "$CDI_W/rootfs" ] && return 0
    rm -rf "$CDI_W"; mkdir -p "$CDI_W/hooks.d"
    make_rootfs "$CDI_W/rootfs"
    printf '%s\n' "$TPM12_PY" > "$CDI_W/rootfs/root/tpm12.py"
    timeout 20 "$HOOK" --state-root "$CDI_STATE" --run-root "$RUN_ROOT" --log-file "$CDI_LOG" \
        --log-level debug cdi --output "$CDI_SPEC" 2> "$CDI_W/cdi.err" ||
        { why "vtpm-hook cdi --output $CDI_SPEC failed: $(head -c 300 "$CDI_W/cdi.err")"; return 1; }
    [ "$(jq -r '[.cdiVersion, .kind, (.devices | map(.name) | join(","))] | join(" ")' "$CDI_SPEC")" = \
      "0.5.0 vtpm-hook.io/tpm 2,1.2" ] || { why "unexpected spec: $(jq -c . "$CDI_SPEC" | head -c 300)"; return 1; }
    [ "$(stat -c %a "$CDI_SPEC")" = 644 ] || { why "$CDI_SPEC has mode $(stat -c %a "$CDI_SPEC")"; return 1; }
}
# shellcheck disable=SC2016
CDI_TPM2_SCRIPT='for d in /dev/tpm0 /dev/tpmrm0; do
  if [ -c $d ]; then echo "DEV $d c $(stat -c %t:%T $d)"; else echo "NODEV $d"; fi; done
r=$(tpm2_getrandom -T device:/dev/tpmrm0 --hex 8) || { echo "getrandom failed rc=$?"; exit 3; }
echo "RANDOM $r"'
CDI_TPM12_SCRIPT='if [ -e /dev/tpmrm0 ]; then echo HAS-TPMRM0; else echo NO-TPMRM0; fi
[ -c /dev/tpm0 ] && echo "DEV /dev/tpm0 c"
python3 /root/tpm12.py'

# cdi_run NAME DEVICE-OR-"" SCRIPT [podman run options...]: `podman run` (no --rm) of the CDI
# rootfs; sets RC, OUT, ERR and MS (until podman returned)
cdi_run() {
    local name=$1 dev=$2 script=$3 t0; shift 3
    local P; P=$(cdi_podman)
    OUT=$CDI_W/$name.out; ERR=$CDI_W/$name.err
    DIAG+=("$OUT" "$ERR")
    t0=$(now_ms)
    # shellcheck disable=SC2086
    ( timeout -k 5 "$RUN_TIMEOUT" $P run --name "$name" ${dev:+--device "$dev"} --network none \
        -v /usr:/usr:ro -v /etc:/etc:ro "$@" --rootfs "$CDI_W/rootfs" /bin/sh -c "$script" \
        < /dev/null > "$OUT" 2> "$ERR" ) 2> /dev/null
    RC=$?; MS=$(( $(now_ms) - t0 ))
}
# shellcheck disable=SC2046  # (cdi_podman is split into words on purpose)
cdi_podman_rm() { timeout 60 $(cdi_podman) rm -f -t 0 "$@" > /dev/null 2>&1; }
# shellcheck disable=SC2046
cdi_id() { timeout 30 $(cdi_podman) inspect -f '{{.Id}}' "$1" 2> /dev/null; }

# podman run --device vtpm-hook.io/tpm=VERSION: the TPM works inside; after `podman rm`
# nothing is left (no emulator, keeper, chip or run record) but the state of that version
t_cdi() { t_cdi_body "$@"; local rc=$?; cdi_podman_rm -a; return $rc; }
t_cdi_body() {
    local v=$1 name=cdi-tpm${1/./} id blob
    DIAG+=("$CDI_LOG")
    cdi_prepare || return 1
    if [ "$v" = 2 ]; then
        # the price of the device: the same container without it, then with it
        cdi_run cdi-base "" true; cdi_podman_rm cdi-base
        note "FIGURE: podman_cdi_run_ms_without_device=$MS (rc $RC)"
        cdi_run cdi-timed vtpm-hook.io/tpm=2 true; cdi_podman_rm cdi-timed
        note "FIGURE: podman_cdi_run_ms_with_device=$MS (rc $RC)"
        cdi_run "$name" vtpm-hook.io/tpm=2 "$CDI_TPM2_SCRIPT"
    else
        cdi_run "$name" vtpm-hook.io/tpm=1.2 "$CDI_TPM12_SCRIPT"
    fi
    case $RC in 124|137) why "podman run did not finish within ${RUN_TIMEOUT}s (live vtpm-emu: $(live_emulators | tr '\n' ' '))"; return 1 ;; esac
    [ "$RC" = 0 ] || { why "podman run --device vtpm-hook.io/tpm=$v exited with $RC: $(tail -n 3 "$ERR" "$OUT" | tr '\n' ' ')"; return 1; }
    if [ "$v" = 2 ]; then
        grep -q '^DEV /dev/tpm0 c' "$OUT" && grep -q '^DEV /dev/tpmrm0 c' "$OUT" ||
            { why "no /dev/tpm0 + /dev/tpmrm0: $(grep DEV "$OUT" | tr '\n' ' ')"; return 1; }
        grep -Eq '^RANDOM [0-9a-f]{16}$' "$OUT" || { why "tpm2_getrandom: $(grep -m1 RANDOM "$OUT" || echo no output)"; return 1; }
        note "$(grep '^RANDOM' "$OUT")"
        blob=tpm2-00.permall
    else
        grep -q '^NO-TPMRM0' "$OUT" || { why "/dev/tpmrm0 exists in a TPM 1.2 container"; return 1; }
        grep -q '^TPM12-OK' "$OUT" || { why "TPM 1.2 check: $(grep -E '^(TAG|RESP)' "$OUT" | tr '\n' ' ')"; return 1; }
        note "$(grep -E '^(TAG|VERSION)' "$OUT" | tr '\n' ';')"
        blob=tpm-00.permall
    fi
    id=$(cdi_id "$name")
    [ -n "$id" ] || { why "podman inspect $name gave no id"; return 1; }
    grep -q "container $id: setup took" "$CDI_LOG" || { why "no setup of $id in the hook log"; return 1; }
    cdi_podman_rm "$name" || { why "podman rm $name failed"; return 1; }
    grep -q "container $id: .*torn down" "$CDI_LOG" || { why "the hook log has no teardown of $id (the CDI poststop hook did not run?)"; return 1; }
    expect_clean "$id" "'podman rm'" || return 1
    [ -z "$(run_records)" ] || { why "run records left: $(run_records | tr '\n' ' ')"; return 1; }
    [ -f "$CDI_STATE/$id/$blob" ] || { why "no $blob in $CDI_STATE/$id: $(ls -A "$CDI_STATE/$id" 2>&1 | tr '\n' ' ')"; return 1; }
}

# vtpm-hook gc --unused-for 0 after real containers: the state of stopped ones goes, that of a
# running one (run record, locked by its emulator) stays, and so does the CA directory
t_cdi_gc() { t_cdi_gc_body; local rc=$?; cdi_podman_rm -a; return $rc; }
t_cdi_gc_body() {
    local P id_run stopped out err
    DIAG+=("$CDI_LOG")
    cdi_prepare || return 1
    P=$(cdi_podman)
    cdi_run cdi-gc-stopped vtpm-hook.io/tpm=2 true
    [ "$RC" = 0 ] || { why "podman run (stopped one) exited with $RC: $(tail -n 3 "$ERR" | tr '\n' ' ')"; return 1; }
    stopped=$(cdi_id cdi-gc-stopped)
    cdi_podman_rm cdi-gc-stopped
    cdi_run cdi-gc-running vtpm-hook.io/tpm=2 "sleep 120" -d
    [ "$RC" = 0 ] || { why "podman run -d exited with $RC: $(tail -n 3 "$ERR" | tr '\n' ' ')"; return 1; }
    id_run=$(cdi_id cdi-gc-running)
    [ -e "$RUN_ROOT/$id_run.json" ] || { why "no run record of the running container"; return 1; }
    mkdir -p "$CDI_STATE/ca"; touch -d '2000-01-01' "$CDI_STATE/ca"
    out=$CDI_W/gc.out; err=$CDI_W/gc.err; DIAG+=("$out" "$err")
    timeout 30 "$HOOK" --state-root "$CDI_STATE" --run-root "$RUN_ROOT" gc --unused-for 0 > "$out" 2> "$err" ||
        { why "gc exited with $?: $(head -n 3 "$err" | tr '\n' ' ')"; return 1; }
    [ ! -s "$err" ] || { why "gc wrote to stderr: $(head -n 3 "$err" | tr '\n' ' ')"; return 1; }
    grep -qx "$CDI_STATE/$stopped" "$out" || { why "gc did not remove the stopped container's state: $(tr '\n' ' ' < "$out")"; return 1; }
    [ ! -e "$CDI_STATE/$stopped" ] || { why "$CDI_STATE/$stopped is still there"; return 1; }
    [ -d "$CDI_STATE/$id_run" ] && ! grep -q "$id_run" "$out" || { why "gc took the running container's state"; return 1; }
    [ -d "$CDI_STATE/ca" ] || { why "gc removed the CA directory"; return 1; }
    note "gc removed $(wc -l < "$out") dir(s); kept $(ls "$CDI_STATE" | tr '\n' ' ')"
    timeout 60 $P exec cdi-gc-running tpm2_getrandom -T device:/dev/tpmrm0 --hex 4 > /dev/null 2>&1 ||
        { why "the running container's TPM does not answer after gc"; return 1; }
    cdi_podman_rm cdi-gc-running || { why "podman rm -f of the running container failed"; return 1; }
    expect_clean "$id_run" "'podman rm -f' (running)" || return 1
}

# with_dmesg FN ARGS: on failure, show the kernel's TPM messages of the scenario
with_dmesg() {
    local n0 f=$E2E_WORK/dmesg-$1.txt
    n0=$(dmesg 2>/dev/null | wc -l)
    "$@" && [ -z "$WHY" ] && return 0
    dmesg 2>/dev/null | tail -n +$((n0 + 1)) | grep -iE 'tpm|vtpm' | tail -n 20 > "$f"
    DIAG+=("$f")
    return 1
}
# ---------------------------------------------------------------- Kubernetes identity
# The annotations containerd's CRI plugin (or CRI-O) sets itself, on runc containers; the
# policy names the runtime (kubernetesIdentity). A restarted container has a new id but the same
# namespace/pod/container: it gets the same TPM (NV survives); another pod another TPM; the
# pod's pause container none. Annotations of the runtime the policy does not name are ignored.
K8S_NV_SCRIPT='T=device:/dev/tpmrm0
if [ ! -c /dev/tpm0 ]; then echo NO-TPM; exit 0; fi
if v=$(tpm2_nvread -T $T -C o 0x1500030 2>/dev/null); then echo "NV-HAS $v"; else echo NV-EMPTY; fi
if [ -n "${WRITE:-}" ]; then tpm2_nvdefine -T $T 0x1500030 -C o -s ${#WRITE} -a "ownerread|ownerwrite" > /dev/null &&
  printf %s "$WRITE" | tpm2_nvwrite -T $T -C o 0x1500030 -i - && echo "NV-WROTE $WRITE"; fi'
# k8s_run ID ANNOTATIONS_JSON [WRITE]: one runc container under the kubernetesIdentity policy
k8s_run() {
    local id=$1 ann=$2 write=${3:-}
    make_bundle runc "$id" "" "$K8S_NV_SCRIPT" ".annotations += $ann | .process.env += [\"WRITE=$write\"]" || return 1
    container_run runc "$id" || return 1
    [ "$RC" = 0 ] || { fail_run "'runc run' ($id)"; return 1; }
    expect_clean "$id" "'runc run' ($id) returned" || return 1
}
cri() {  # cri RUNTIME NAMESPACE POD CONTAINER [TYPE]: the annotations that runtime sets
    case $1 in
        containerd) jq -nc --arg n "$2" --arg p "$3" --arg c "$4" --arg t "${5:-container}" \
            '{"io.kubernetes.cri.sandbox-namespace": $n, "io.kubernetes.cri.sandbox-name": $p,
              "io.kubernetes.cri.container-name": $c, "io.kubernetes.cri.container-type": $t}' ;;
        cri-o) jq -nc --arg n "$2" --arg p "$3" --arg c "$4" \
            '{"io.kubernetes.pod.namespace": $n, "io.kubernetes.pod.name": $p, "io.kubernetes.container.name": $c}' ;;
    esac
}
t_k8s_identity() {
    local out POLICY=$E2E_WORK/policy-k8s.json
    write_policy "$POLICY" '{"kubernetesIdentity": "containerd"}' || return 1
    k8s_run k8s-a1 "$(cri containerd shop db-0 postgres)" "secret-db0" || return 1
    grep -q '^NV-WROTE secret-db0' "$BUNDLE/out" || { why "first container: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    [ -e "$STATE_ROOT/kubernetes/shop_db-0_postgres/tpm2-00.permall" ] ||
        { why "no state in $STATE_ROOT/kubernetes/shop_db-0_postgres: $(ls -R "$STATE_ROOT" | tr '\n' ' ' | cut -c1-300)"; return 1; }
    [ ! -e "$STATE_ROOT/k8s-a1" ] || { why "state keyed by the container id too"; return 1; }
    # the restart: a new container id, the same namespace/pod/container
    k8s_run k8s-a2 "$(cri containerd shop db-0 postgres)" || return 1
    grep -q '^NV-HAS secret-db0' "$BUNDLE/out" || { why "the restarted container lost its TPM: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    # another pod (and the same pod in another namespace): another TPM
    k8s_run k8s-b1 "$(cri containerd shop db-1 postgres)" || return 1
    grep -q '^NV-EMPTY' "$BUNDLE/out" || { why "pod db-1 sees db-0's TPM: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    k8s_run k8s-c1 "$(cri containerd other db-0 postgres)" || return 1
    grep -q '^NV-EMPTY' "$BUNDLE/out" || { why "namespace other sees shop's TPM: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    # the pause container gets none
    k8s_run k8s-pause "$(cri containerd shop db-0 "" sandbox | jq -c 'del(.["io.kubernetes.cri.container-name"])')" || return 1
    grep -q '^NO-TPM' "$BUNDLE/out" || { why "the pod's sandbox container got a TPM"; return 1; }
    # CRI-O's annotations count only when the policy names CRI-O
    k8s_run k8s-o1 "$(cri cri-o shop db-0 postgres)" || return 1
    grep -q '^NV-EMPTY' "$BUNDLE/out" && [ -e "$STATE_ROOT/k8s-o1" ] ||
        { why "CRI-O annotations were trusted under a containerd policy: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    write_policy "$POLICY" '{"kubernetesIdentity": "cri-o"}' || return 1
    k8s_run k8s-o2 "$(cri cri-o shop db-0 postgres)" || return 1
    grep -q '^NV-HAS secret-db0' "$BUNDLE/out" || { why "CRI-O's identity did not find the pod's TPM: $(tr '\n' ' ' < "$BUNDLE/out")"; return 1; }
    k8s_run k8s-o-pause "$(cri cri-o shop db-0 POD)" || return 1
    grep -q '^NO-TPM' "$BUNDLE/out" || { why "CRI-O's infra container (POD) got a TPM"; return 1; }
    # a name Kubernetes would not allow fails the start, nothing left
    make_bundle runc k8s-bad "" "echo CONTAINER-RAN" ".annotations += $(cri cri-o shop ../x postgres)" || return 1
    container_run runc k8s-bad || return 1
    [ "$RC" != 0 ] && ! grep -q CONTAINER-RAN "$BUNDLE/out" || { why "a pod named '../x' started"; return 1; }
    [ "$(grep -c '\] error: ' "$LOG")" = 1 ] &&
        [ "$(grep '\] error: ' "$LOG" | sed 's/^.*\] error: //')" = 'annotation io.kubernetes.pod.name is not a Kubernetes name: "../x"' ] ||
        { why "the pod named '../x' failed for another reason: $(grep '\] error: ' "$LOG" | head -c 300)"; return 1; }
    expect_clean k8s-bad "the refused start" || return 1
    # gc: the pods' states are default state too
    out=$(timeout 60 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" gc --unused-for 0 --dry-run) ||
        { why "gc --dry-run failed"; return 1; }
    grep -q "kubernetes/shop_db-0_postgres$" <<< "$out" || { why "gc does not see Kubernetes state: $out"; return 1; }
}

# ---------------------------------------------------------------- export / import (issue 21)
# A TPM moved as to another host: NV secret, persistent signing key, EKs and their
# certificates written by one container; `vtpm-hook export`; its state wiped; `import` under a
# new container id; the new container has the same TPM. A tampered archive and a wrong key are
# refused with one line and leave no state dir.
MOVE_SECRET=moved-secret-$$
MOVE_WRITER="set -e
cd /tmp
tpm2_nvdefine -T $T 0x1500030 -C o -s 32 -a 'ownerread|ownerwrite' > /dev/null
printf '%s' '$MOVE_SECRET' > d; tpm2_nvwrite -T $T 0x1500030 -C o -i d
tpm2_pcrextend -T $T 8:sha256=0000000000000000000000000000000000000000000000000000000000000001
echo \"PCR8 \$(tpm2_pcrread -T $T sha256:8 | sed -n 's/.*8 *: *0x//p')\"
tpm2_createprimary -T $T -C o -G ecc256:ecdsa-sha256 -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' -c p.ctx > /dev/null
tpm2_evictcontrol -T $T -C o -c p.ctx 0x81000030 > /dev/null
tpm2_readpublic -T $T -c 0x81000030 -f pem -o pub.pem > /dev/null
echo \"PUB \$(base64 -w0 pub.pem)\"
tpm2_nvread -T $T -C o 0x1c0000a -o ek.der > /dev/null
echo \"EKCERT \$(sha256sum < ek.der | cut -c1-64)\"
echo WRITER-OK"
MOVE_READER="cd /tmp
tpm2_nvread -T $T 0x1500030 -C o -s ${#MOVE_SECRET} -o r > /dev/null || exit 5
echo \"NV \$(cat r)\"
echo \"PCR8 \$(tpm2_pcrread -T $T sha256:8 | sed -n 's/.*8 *: *0x//p')\"
printf 'signed after the move' > m
tpm2_sign -T $T -c 0x81000030 -g sha256 -f plain -o sig m > /dev/null || exit 6
echo \"SIG \$(base64 -w0 sig)\"
tpm2_nvread -T $T -C o 0x1c0000a -o ek.der > /dev/null
echo \"EKCERT \$(sha256sum < ek.der | cut -c1-64)\"
echo READER-OK"
move_hook() {   # move_hook TAG ARGS...: the hook as the administrator runs it; sets RC, MERR
    local tag=$1; shift
    MERR=$E2E_WORK/move-$tag.err; DIAG+=("$MERR")
    ( timeout -k 5 120 "$HOOK" --state-root "$STATE_ROOT" --run-root "$RUN_ROOT" --policy "$POLICY" "$@" ) \
        > "$E2E_WORK/move-$tag.out" 2> "$MERR"
    RC=$?
}
t_move() {
    local ca=$E2E_WORK/ca-move key=$E2E_WORK/move.key arch=$E2E_WORK/move.bin vt t0 ms ek1 ek2 bad f
    mkdir -p "$ca"
    head -c 32 /dev/urandom > "$key"; chmod 600 "$key"
    vt='[{"createCerts": true}]'
    make_bundle runc prov-move-1 "$vt" "$MOVE_WRITER" "$(ca_jq "$ca/key.pem" "$ca/cert.pem" "$ca")" || return 1
    container_run runc prov-move-1 || return 1
    [ "$RC" = 0 ] && grep -q '^WRITER-OK' "$BUNDLE/out" || { fail_run "the writer"; return 1; }
    expect_clean prov-move-1 "the writer returned" || return 1
    sed -n 's/^PUB //p' "$BUNDLE/out" | base64 -d > "$E2E_WORK/move-pub.pem"
    local cert1 pcr1; cert1=$(sed -n 's/^EKCERT //p' "$BUNDLE/out"); pcr1=$(sed -n 's/^PCR8 //p' "$BUNDLE/out")
    move_hook ek ek --id prov-move-1 --json; ek1=$(jq -c .eks "$E2E_WORK/move-ek.out")
    [ "$RC" = 0 ] && [ "$ek1" != "[]" ] || { why "vtpm-hook ek of the stopped writer: rc $RC $(head -c 200 "$MERR")"; return 1; }

    t0=$(now_ms)
    move_hook export export --id prov-move-1 --key-file "$key" --output "$arch"
    ms=$(( $(now_ms) - t0 ))
    [ "$RC" = 0 ] && [ -s "$arch" ] || { why "export: rc $RC: $(head -c 300 "$MERR")"; return 1; }
    note "FIGURE: export_ms=$ms ($(stat -c %s "$arch") bytes)"
    grep -qaF "$MOVE_SECRET" "$arch" && { why "the NV secret is readable in the archive"; return 1; }
    # as on another host: the state is gone
    rm -rf "${STATE_ROOT:?}/prov-move-1"

    # refused, one line each, nothing made: a flipped byte, another key, a password for a key
    cp "$arch" "$E2E_WORK/move-bad.bin"
    printf '\x5a' | dd of="$E2E_WORK/move-bad.bin" bs=1 seek=$(( $(stat -c %s "$arch") / 2 )) conv=notrunc 2> /dev/null
    head -c 32 /dev/urandom > "$E2E_WORK/move-other.key"; chmod 600 "$E2E_WORK/move-other.key"
    printf 'pw\n' > "$E2E_WORK/move.pw"; chmod 600 "$E2E_WORK/move.pw"
    for bad in "bad --key-file $key --input $E2E_WORK/move-bad.bin" \
               "otherkey --key-file $E2E_WORK/move-other.key --input $arch" \
               "pw --password-file $E2E_WORK/move.pw --input $arch"; do
        # shellcheck disable=SC2086  # (fixed words, no spaces in the paths)
        move_hook import-${bad%% *} import --id prov-move-x ${bad#* }
        [ "$RC" != 0 ] && [ "$(wc -l < "$MERR")" = 1 ] ||
            { why "import ${bad%% *}: rc $RC, stderr: $(head -c 300 "$MERR" | tr '\n' '|')"; return 1; }
        [ ! -e "$STATE_ROOT/prov-move-x" ] || { why "import ${bad%% *} left $STATE_ROOT/prov-move-x"; return 1; }
        note "import ${bad%% *}: $(cat "$MERR")"
    done

    t0=$(now_ms)
    move_hook import import --id prov-move-2 --key-file "$key" --input "$arch"
    ms=$(( $(now_ms) - t0 ))
    [ "$RC" = 0 ] || { why "import: rc $RC: $(head -c 300 "$MERR")"; return 1; }
    note "FIGURE: import_ms=$ms"
    move_hook import-again import --id prov-move-2 --key-file "$key" --input "$arch"
    [ "$RC" != 0 ] && grep -q -- '--force' "$MERR" || { why "a second import over the TPM: rc $RC $(head -c 200 "$MERR")"; return 1; }
    move_hook ek ek --id prov-move-2 --json; ek2=$(jq -c .eks "$E2E_WORK/move-ek.out")
    [ "$ek1" = "$ek2" ] || { why "the EKs differ after the move: $(head -c 200 <<< "$ek2")"; return 1; }

    make_bundle runc prov-move-2 "$vt" "$MOVE_READER" "$(ca_jq "$ca/key.pem" "$ca/cert.pem" "$ca")" || return 1
    container_run runc prov-move-2 || return 1
    [ "$RC" = 0 ] && grep -q '^READER-OK' "$BUNDLE/out" || { fail_run "the reader"; return 1; }
    expect_clean prov-move-2 "the reader returned" || return 1
    ! grep -q 'EKs and EK certificates created' "$LOG" || { why "the moved TPM got new EKs"; return 1; }
    [ "$(sed -n 's/^NV //p' "$BUNDLE/out")" = "$MOVE_SECRET" ] || { why "NV after the move: $(grep '^NV' "$BUNDLE/out")"; return 1; }
    [ "$(sed -n 's/^EKCERT //p' "$BUNDLE/out")" = "$cert1" ] || { why "the EK certificate in NV differs after the move"; return 1; }
    sed -n 's/^SIG //p' "$BUNDLE/out" | base64 -d > "$E2E_WORK/move.sig"
    printf 'signed after the move' > "$E2E_WORK/move.msg"
    f=$(openssl dgst -sha256 -verify "$E2E_WORK/move-pub.pem" -signature "$E2E_WORK/move.sig" "$E2E_WORK/move.msg" 2>&1) ||
        { why "the persistent key's signature does not verify with its public key from before the move: $f"; return 1; }
    # control: the same signature does not verify another message
    printf 'something else' > "$E2E_WORK/move.msg2"
    ! openssl dgst -sha256 -verify "$E2E_WORK/move-pub.pem" -signature "$E2E_WORK/move.sig" "$E2E_WORK/move.msg2" > /dev/null 2>&1 ||
        { why "control failed: the signature verifies any message"; return 1; }
    note "NV, persistent key, EKs and EK certificate the same; PCR 8 was $pcr1 before, $(sed -n 's/^PCR8 //p' "$BUNDLE/out") after (a fresh Startup)"
}

# ---------------------------------------------------------------- podman checkpoint --export / restore --import
# The procedure of docs/integration.md: a podman container (hooks.d, runc) uses its TPM;
# `podman container checkpoint --export` (podman's cleanup runs the hooks.d poststop: the TPM is
# saved with Shutdown(STATE)); `vtpm-hook export` beside podman's archive; the container and
# its TPM state gone as on another host; `vtpm-hook import` under the same id, then `podman
# container restore --import`: the same TPM answers, PCR 8 and NV as at the checkpoint, the same
# EK. Podman 4.3 keeps no hooks.d poststop for an imported container: the emulator ends with the
# container and saves the TPM; only the run record is left, for `vtpm-hook gc`.
PCK_SCRIPT="set -e
pcr8() { tpm2_pcrread -T $T sha256:8 | sed -n 's/.*8 *: *0x//p'; }
ek() { tpm2_createek -T $T -G ecc -c /tmp/ek.ctx -u /tmp/ek.pub > /dev/null; sha256sum < /tmp/ek.pub | cut -c1-16; }
state() { p=\$(pcr8); n=\$(tpm2_nvread -T $T 0x1500060 -C o -s 8); e=\$(ek); echo \"\$p \$n EK \$e\"; }
tpm2_nvdefine -T $T 0x1500060 -C o -s 8 -a 'ownerread|ownerwrite' > /dev/null
printf 'pck-nv-1' > /tmp/d; tpm2_nvwrite -T $T 0x1500060 -C o -i /tmp/d
tpm2_pcrextend -T $T 8:sha256=0000000000000000000000000000000000000000000000000000000000000003
state > /out/s1
while [ ! -e /out/go ]; do sleep 0.2; done
state > /out/s2
sleep 1000"
PODMAN_CK=("${PODMAN[@]}" --runtime runc)   # crun runs no hook at a restore
t_podman_ck() { t_podman_ck_body; local rc=$?; timeout 60 "${PODMAN_CK[@]}" rm -af -t 0 > /dev/null 2>&1; return $rc; }
t_podman_ck_body() {
    local L=$LOG_DIR/podman-ck.log out=$E2E_WORK/pck-out arch=$E2E_WORK/pck.tar key=$E2E_WORK/pck.key
    local tarch=$E2E_WORK/pck.vtpm err=$E2E_WORK/pck.err id t0 s1 s2
    podman_hooksd "$PODMAN_W" "$L" || return 1
    rm -rf "$out"; mkdir -p "$out"; DIAG+=("$L" "$err")
    head -c 32 /dev/urandom > "$key"; chmod 600 "$key"
    # an image (podman restores --import only containers of one): the rootfs skeleton
    tar -C "$PODMAN_W/rootfs" -c . | timeout 120 "${PODMAN_CK[@]}" import -q - localhost/vtpm-skel:1 > /dev/null 2> "$err" ||
        { why "podman import: $(tail -n 2 "$err")"; return 1; }
    id=$(timeout 120 "${PODMAN_CK[@]}" run -d --network none --annotation io.vtpm-hook.vtpm=2 -v /usr:/usr:ro -v /etc:/etc:ro \
         -v "$out:/out" localhost/vtpm-skel:1 /bin/sh -c "$PCK_SCRIPT" < /dev/null 2> "$err") ||
        { why "podman run -d: $(tail -n 2 "$err")"; return 1; }
    wait_file "$out/s1" 90 || { why "the container did not use its TPM: $(tail -n 2 "$L")"; return 1; }
    s1=$(cat "$out/s1")
    [[ $s1 =~ ^[0-9A-F]{64}\ pck-nv-1\ EK\ [0-9a-f]{16}$ ]] || { why "the container's TPM state reads '$s1'"; return 1; }

    t0=$(now_ms)
    timeout 300 "${PODMAN_CK[@]}" container checkpoint --export "$arch" "$id" > /dev/null 2> "$err" ||
        { why "podman container checkpoint --export: $(tail -n 2 "$err")"; return 1; }
    note "FIGURE: podman_checkpoint_export_ms=$(( $(now_ms) - t0 )) ($(stat -c %s "$arch") bytes)"
    expect_clean "$id" "podman container checkpoint (the poststop hook ran)" || return 1
    t0=$(now_ms)
    move_hook pck-export export --id "$id" --key-file "$key" --output "$tarch"
    [ "$RC" = 0 ] || { why "vtpm-hook export: rc $RC: $(head -c 300 "$MERR")"; return 1; }
    note "FIGURE: podman_tpm_export_ms=$(( $(now_ms) - t0 ))"
    # "another host": neither the container nor its TPM state is here any more
    timeout 60 "${PODMAN_CK[@]}" rm "$id" > /dev/null 2>&1 || { why "podman rm of the checkpointed container"; return 1; }
    [ -d "$STATE_ROOT/${id:?}" ] || { why "no state dir $STATE_ROOT/$id to wipe"; return 1; }
    rm -rf "${STATE_ROOT:?}/${id:?}"
    move_hook pck-import import --id "$id" --key-file "$key" --input "$tarch"
    [ "$RC" = 0 ] || { why "vtpm-hook import: rc $RC: $(head -c 300 "$MERR")"; return 1; }

    mv "$L" "$L.ck"; DIAG+=("$L.ck"); t0=$(now_ms)
    timeout 300 "${PODMAN_CK[@]}" container restore --import "$arch" < /dev/null > /dev/null 2> "$err" ||
        { why "podman container restore --import: $(tail -n 2 "$err")"; return 1; }
    note "FIGURE: podman_restore_import_ms=$(( $(now_ms) - t0 ))"
    grep -q "container $id is being restored from a checkpoint" "$L" || { why "the hook did not see the restore: $(tail -n 2 "$L")"; return 1; }
    touch "$out/go"
    wait_file "$out/s2" 60 || { why "no TPM after the restore: $(grep -a 'restored\|error' "$L" | tail -n 2)"; return 1; }
    s2=$(cat "$out/s2")
    [ "$s2" = "$s1" ] || { why "after the restore PCR 8, NV and the EK are '$s2', at the checkpoint '$s1'"; return 1; }
    note "PCR 8, NV and the ECC EK's public key as at the checkpoint: $s1"
    touch "$E2E_WORK/pck.used"   # the TPM idle from here until the container ends

    timeout 60 "${PODMAN_CK[@]}" rm -f -t 0 "$id" > /dev/null 2>&1 || { why "podman rm -f of the restored container"; return 1; }
    SETTLE_TIMEOUT=20 expect_clean "" "podman rm -f of the restored container" || return 1
    # the restored run saved the TPM when it ended, without a teardown (Shutdown(STATE) writes the
    # permanent state; nothing else used the TPM since pck.used)
    [ -n "$(find "$STATE_ROOT/$id" -name 'tpm2-00.permall' -newer "$E2E_WORK/pck.used")" ] ||
        { why "the TPM was not saved when the restored container ended: $(ls -l --time-style=+%T "$STATE_ROOT/$id" | tr '\n' ';')"; return 1; }
    # podman 4.3 (Debian 12) imports no hooks.d poststop: the record is all that is left, and gc
    # finds it stale (once older than --unused-for; 0 here, listed only)
    [ -e "$RUN_ROOT/$id.json" ] || { why "no run record left: did podman run the poststop hook of an imported container?"; return 1; }
    move_hook pck-gc gc --dry-run --unused-for 0
    [ "$RC" = 0 ] && grep -qx "$RUN_ROOT/$id.json" "$E2E_WORK/move-pck-gc.out" ||
        { why "gc does not list the left run record as stale: rc $RC, $(head -c 300 "$E2E_WORK/move-pck-gc.out" "$MERR")"; return 1; }
    note "no poststop for the imported container (podman 4.3): its run record is left, gc lists it"
}

run_if() { local n=$1; shift; [[ $n =~ $ONLY ]] && scenario "$n" with_dmesg "$@"; return 0; }

run_if podman-hooksd-annotation  t_podman
run_if create-certs              t_certs
run_if create-certs-5-concurrent t_certs_concurrent
run_if pcr-banks                 t_pcr_banks
run_if run-as                    t_run_as
run_if encryption                t_encryption
run_if annotations-runc          t_annotations
run_if status                    t_status
run_if cdi-podman-tpm2           t_cdi 2
run_if cdi-podman-tpm12          t_cdi 1.2
run_if cdi-gc                    t_cdi_gc
run_if k8s-identity              t_k8s_identity
run_if export-import             t_move
run_if podman-checkpoint-import  t_podman_ck

# ---------------------------------------------------------------- figures + summary
# setup time (hook's own "setup took N ms"), with and without createCerts
certs_ms=$(for f in "$LOG_DIR"/prov-certs*.log; do
               [ -e "$f" ] && grep -ho 'setup took [0-9]* ms' "$f" | awk '{print $3}'; done)
certs1_ms=$( [ -e "$LOG_DIR/prov-certs.log" ] && grep -ho 'setup took [0-9]* ms' "$LOG_DIR/prov-certs.log" | awk '{print $3}')
plain_ms=$(for f in "$LOG_DIR"/*.log*; do
               case $f in */prov-certs*) continue ;; esac
               grep -ho 'setup took [0-9]* ms' "$f" | awk '{print $3}'; done)
echo "FIGURE: setup_ms_without_createCerts=$(printf '%s\n' $plain_ms | grep . | median)"
echo "FIGURE: setup_ms_with_createCerts_first=${certs1_ms:-none} (new TPM, CA created)"
echo "FIGURE: setup_ms_with_createCerts_all=$(printf '%s\n' $certs_ms | grep . | median) (incl. the 5 concurrent and the existing-TPM rerun)"
echo "FIGURE: guest_test_time_ms=$(( $(now_ms) - T_START ))"
finish
