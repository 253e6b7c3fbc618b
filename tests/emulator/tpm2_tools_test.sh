#!/usr/bin/env bash
# The emulator with real libtpms, driven by real tpm2-tools through the cmd TCTI (no kernel).
# Usage: tpm2_tools_test.sh /path/to/vtpm-hook [/path/to/broken_sha256.so]
set -uo pipefail
HOOK=${1:?usage: $0 /path/to/vtpm-hook [broken_sha256.so]}
BROKEN_SHA256=${2:-}
# shellcheck source=../lib/harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"
TMP=$(mktemp -d /tmp/vtpm-emu-test.XXXXXX) || fatal "mktemp failed"
at_exit 'rm -rf "$TMP"'
# exec: the TCTI signals its direct child; let that be the emulator, not a shell.
tcti() { echo "cmd:exec $HOOK emulate --state-dir $1${2:+ --tpm-version $2}"; }
t() { timeout 30 "$@"; }
# refused RC: a refusal in time (non-zero, and not the time-out's 124/137)
refused() { [ "$1" != 0 ] && [ "$1" != 124 ] && [ "$1" != 137 ]; }

D=$TMP/tpm2
out=$(t tpm2_getrandom -T "$(tcti "$D")" --hex 8 2>&1)
[[ $out =~ ^[0-9a-f]{16}$ ]] && pass "getrandom" || fail "getrandom" "$out"
out2=$(t tpm2_getrandom -T "$(tcti "$D")" --hex 8 2>&1)
[[ $out2 =~ ^[0-9a-f]{16}$ && $out2 != "$out" ]] && pass "getrandom differs" || fail "getrandom differs" "$out / $out2"
[ -f "$D/tpm2-00.permall" ] && pass "state file tpm2-00.permall" || fail "state file" "$(ls -la "$D")"

# PCR 16 is resettable; use 10 (not reset by a resume) and compare with a locally computed value.
t tpm2_pcrextend -T "$(tcti "$D")" "10:sha256=$(printf '%064x' 1)" >/dev/null 2>&1
out=$(t tpm2_pcrread -T "$(tcti "$D")" sha256:10 2>&1)
want=$(python3 -c 'import hashlib;print(hashlib.sha256(bytes(32)+bytes.fromhex("%064x"%1)).hexdigest().upper())')
[[ $out == *"0x$want"* ]] && pass "pcrextend then pcrread" || fail "pcrextend then pcrread" "want $want, got: $out"

echo -n "vtpm-hook nv test $$" > "$TMP/nvdata"
n=$(wc -c < "$TMP/nvdata")
t tpm2_nvdefine -T "$(tcti "$D")" 0x1500016 -C o -s "$n" -a "ownerread|ownerwrite|authread|authwrite" >/dev/null 2>&1 &&
  t tpm2_nvwrite -T "$(tcti "$D")" 0x1500016 -C o -i "$TMP/nvdata" 2>&1 && pass "nvdefine + nvwrite" || fail "nvdefine + nvwrite" "failed"
out=$(t tpm2_nvread -T "$(tcti "$D")" 0x1500016 -C o -s "$n" 2>&1)
[[ $out == "$(cat "$TMP/nvdata")" ]] && pass "nvread in a later run" || fail "nvread in a later run" "$out"

# A second state dir is a different TPM: the NV index is not there (TPM_RC_HANDLE of handle 1,
# 0x18B, from NV_ReadPublic), not merely a failure.
t tpm2_nvread -T "$(tcti "$TMP/other")" 0x1500016 -C o -s "$n" > "$TMP/out" 2>&1
rc=$?
if [ "$rc" = 0 ]; then fail "separate state" "NV index visible in another state dir"
elif refused "$rc" && grep -q 'Esys_TR_FromTPMPublic(0x18B)' "$TMP/out"; then pass "separate state (TPM_RC_HANDLE)"
else fail "separate state" "exit $rc, not TPM_RC_HANDLE: $(tr '\n' '|' < "$TMP/out" | cut -c1-300)"; fi

# TPM 1.2 through the same path: TPM_GetCapability(TPM_CAP_VERSION_VAL).
resp=$(printf '\x00\xc1\x00\x00\x00\x12\x00\x00\x00\x65\x00\x00\x00\x1a\x00\x00\x00\x00' |
  t "$HOOK" emulate --state-dir "$TMP/tpm12" --tpm-version 1.2 | od -An -tx1 | tr -d ' \n')
[[ $resp == 00c4*00000000* && ${resp:12:8} == 00000000 ]] && pass "TPM 1.2 GetCapability" || fail "TPM 1.2 GetCapability" "$resp"
[ -f "$TMP/tpm12/tpm-00.permall" ] && pass "TPM 1.2 state file" || fail "TPM 1.2 state file" "$(ls -la "$TMP/tpm12")"

# A malformed stream (a size of 65536) gets TPM_RC_COMMAND_SIZE (0x142), one error line and a
# non-zero exit; state stays loadable.
printf '\x80\x01\x00\x01\x00\x00\x00\x00\x01\x7b' | t "$HOOK" emulate --state-dir "$D" > "$TMP/resp" 2> "$TMP/err"
rc=$?
resp=$(od -An -tx1 < "$TMP/resp" | tr -d ' \n')
if refused "$rc" && [ "$resp" = 80010000000a00000142 ] &&
   [ "$(cat "$TMP/err")" = "vtpm-hook: error: TPM command size 65536 is out of range" ]; then
  pass "bad size rejected (TPM_RC_COMMAND_SIZE)"
else fail "bad size" "exit $rc, answer '$resp', stderr: $(tr '\n' '|' < "$TMP/err")"; fi
out=$(t tpm2_nvread -T "$(tcti "$D")" 0x1500016 -C o -s "$n" 2>&1)
[[ $out == "$(cat "$TMP/nvdata")" ]] && pass "state intact after bad client" || fail "state intact" "$out"

# pcrBanks: exactly the requested banks are active, and the allocation persists.
banks() { t tpm2_getcap -T "cmd:exec $HOOK emulate --state-dir $1 ${2:+--pcr-banks $2}" pcrs 2>&1 |
  awk '/- [a-z0-9_]+: \[ 0/ {sub(":", "", $2); printf "%s ", $2}'; }
out=$(banks "$TMP/pcr" sha256,sha384)
[[ $out == "sha256 sha384 " ]] && pass "pcr banks sha256,sha384" || fail "pcr banks sha256,sha384" "active: $out"
out=$(banks "$TMP/pcr")
[[ $out == "sha256 sha384 " ]] && pass "pcr banks persist" || fail "pcr banks persist" "active: $out"
out=$(banks "$TMP/pcr" sha1)
[[ $out == "sha1 " ]] && pass "pcr banks re-allocated to sha1" || fail "pcr banks sha1" "active: $out"
out=$("$HOOK" emulate --state-dir "$TMP/pcr" --pcr-banks sha999 </dev/null 2>&1)
[[ $? -ne 0 && $out == *"unknown PCR bank"* ]] && pass "unknown bank rejected" || fail "unknown bank" "$out"

# createCerts: EKs at 0x81010001/0x8101000a, certificates in NV that verify against the local CA
# and carry the public key tpm2_createek derives from the standard templates.
E=$TMP/ek
ek="cmd:exec $HOOK --ca-key $E/ca/key.pem --ca-cert $E/ca/cert.pem emulate --state-dir $E/s --create-certs"
for alg in rsa:0x1c00002 ecc:0x1c0000a; do
  k=${alg%%:*} idx=${alg#*:}
  if t tpm2_nvread -T "$ek" "$idx" -C o -o "$TMP/$k.der" >/dev/null 2>&1 &&
     openssl x509 -inform der -in "$TMP/$k.der" -out "$TMP/$k.pem" &&
     openssl verify -CAfile "$E/ca/cert.pem" "$TMP/$k.pem" >/dev/null 2>&1; then
    pass "$k EK certificate verifies against the CA"
  else fail "$k EK certificate" "$(ls -la "$E" "$E/ca" 2>&1 | tr '\n' ' ')"; fi
  t tpm2_createek -T "$ek" -c "$TMP/$k.ctx" -G "$k" -u "$TMP/$k.pub.pem" -f pem >/dev/null 2>&1
  if [ -s "$TMP/$k.pub.pem" ] && cmp -s <(openssl x509 -in "$TMP/$k.pem" -noout -pubkey | openssl pkey -pubin -outform der) \
       <(openssl pkey -pubin -in "$TMP/$k.pub.pem" -outform der); then
    pass "$k EK certificate holds the key tpm2_createek derives"
  else fail "$k EK public key" "certificate key differs from tpm2_createek's"; fi
done
out=$(t tpm2_getcap -T "$ek" handles-persistent 2>&1 | tr '\n' ' ')
[[ $out == *0x81010001*0x8101000A* ]] && pass "EKs persisted" || fail "EKs persisted" "$out"

# The certificates are write-locked; --close-platform shuts the platform hierarchy as the hook's
# emulators do at every power-on (the end-to-end attestation tests prove it in containers).
echo x > "$TMP/x"
if t tpm2_nvwrite -T "$ek" -C p 0x1c00002 -i "$TMP/x" > "$TMP/out" 2>&1; then fail "EK certificate write lock" "rewritten"
elif grep -q "NV access locked" "$TMP/out"; then pass "EK certificate is write-locked"
else fail "EK certificate write lock" "$(grep -m1 -o 'tpm:.*' "$TMP/out")"; fi
closed="$ek --close-platform"
out=$(t tpm2_getcap -T "$closed" properties-variable 2>&1 | grep -m1 'phEnable:' | tr -d ' ')
[ "$out" = phEnable:0 ] && pass "--close-platform: phEnable 0" || fail "--close-platform" "$out"
for c in "tpm2_clear -c p" "tpm2_changepps" "tpm2_pcrallocate sha1:all" "tpm2_nvundefine -C p 0x1c0000a"; do
  # shellcheck disable=SC2086  # the words are the command
  if t $c -T "$closed" > "$TMP/out" 2>&1; then fail "closed platform: $c" "allowed"
  elif grep -q "hierarchy is not enabled" "$TMP/out"; then pass "closed platform: $c refused"
  else fail "closed platform: $c" "$(grep -m1 -o 'tpm:.*' "$TMP/out")"; fi
done
out=$(t tpm2_getcap -T "$ek" properties-variable 2>&1 | grep -m1 'phEnable:' | tr -d ' ')
[ "$out" = phEnable:1 ] && pass "without --close-platform: phEnable 1" || fail "phEnable" "$out"

# `emulate` never runs a full self-test before serving (the hook's emulators do, before the
# device exists): libtpms tests each algorithm before its first use. With SHA-256 broken (an
# LD_PRELOAD shim flips a bit of every digest) no SHA-256 result may come out: the first command
# that needs it finds the TPM in failure mode, and so does every later one; a full self-test
# fails too.
if [ -n "$BROKEN_SHA256" ]; then
  broken="cmd:exec env LD_PRELOAD=$BROKEN_SHA256 $HOOK emulate --state-dir $TMP/broken"
  t tpm2_startup -c -T "cmd:exec $HOOK emulate --state-dir $TMP/broken --no-startup" > /dev/null 2>&1
  if t tpm2_pcrextend -T "$broken" "16:sha256=$(printf '%064x' 7)" > "$TMP/out" 2>&1; then
    fail "broken SHA-256: PCR_Extend" "answered with a SHA-256 result"
  elif grep -qi "failure" "$TMP/out"; then pass "broken SHA-256: PCR_Extend finds the TPM in failure mode"
  else fail "broken SHA-256: PCR_Extend" "$(grep -m1 -o 'tpm:.*' "$TMP/out")"; fi
  # failure mode is the power cycle's, not the state's: without the shim the TPM works again
  t tpm2_pcrextend -T "cmd:exec $HOOK emulate --state-dir $TMP/broken" "16:sha256=$(printf '%064x' 7)" > /dev/null 2>&1 &&
    pass "broken SHA-256: the state is whole (works again without the shim)" ||
    fail "broken SHA-256" "the TPM does not work again without the shim"
  t tpm2_selftest -f -T "$broken" > "$TMP/out" 2>&1
  rc=$?
  if [ "$rc" = 0 ]; then fail "broken SHA-256: full self-test" "passed"
  elif refused "$rc" && grep -q 'failure mode' "$TMP/out"; then pass "broken SHA-256: the full self-test fails (failure mode)"
  else fail "broken SHA-256: full self-test" "exit $rc, not the TPM's failure mode: $(tr '\n' '|' < "$TMP/out" | cut -c1-300)"; fi
else
  echo "SKIP: the broken-SHA-256 checks (no shim given)"
fi

# Options that cannot go together are refused, not silently resolved (setup refuses them too).
head -c 32 /dev/urandom > "$TMP/key"; echo pw > "$TMP/pw"; chmod 600 "$TMP/key" "$TMP/pw"
# ARGS|the first stderr line: the refusal names the conflict
for c in "--key-file $TMP/key --password-file $TMP/pw|--key-file excludes --password-file" \
         "--tpm-version 1.2 --create-certs|vtpm-hook: error: --create-certs and --pcr-banks need --tpm-version 2" \
         "--tpm-version 1.2 --pcr-banks sha1|vtpm-hook: error: --create-certs and --pcr-banks need --tpm-version 2" \
         "--tpm-version 1.2 --close-platform|vtpm-hook: error: --close-platform needs --tpm-version 2 and Startup" \
         "--no-startup --close-platform|vtpm-hook: error: --close-platform needs --tpm-version 2 and Startup"; do
  args=${c%%|*}
  # shellcheck disable=SC2086  # the words are the options
  out=$(t "$HOOK" emulate --state-dir "$TMP/conflict" $args < /dev/null 2>&1)
  rc=$?
  if [ "$rc" = 0 ]; then fail "emulate $args" "accepted"
  elif ! refused "$rc" || [ "${out%%$'\n'*}" != "${c#*|}" ]; then fail "emulate $args" "exit $rc, not '${c#*|}': $out"
  elif [ -e "$TMP/conflict" ]; then fail "emulate $args" "left $TMP/conflict behind"
  else pass "emulate $args refused: ${out%%$'\n'*}"; fi
done

finish
