#!/usr/bin/env bash
# The emulator with real libtpms, driven by real tpm2-tools through the cmd TCTI (no kernel).
# Usage: tpm2_tools_test.sh /path/to/vtpm-hook
set -uo pipefail
HOOK=${1:?usage: $0 /path/to/vtpm-hook}
TMP=$(mktemp -d /tmp/vtpm-emu-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1: $2"; fail=$((fail + 1)); }
# exec: the TCTI signals its direct child; let that be the emulator, not a shell.
tcti() { echo "cmd:exec $HOOK emulate --state-dir $1${2:+ --tpm-version $2}"; }
t() { timeout 30 "$@"; }

D=$TMP/tpm2
out=$(t tpm2_getrandom -T "$(tcti "$D")" --hex 8 2>&1)
[[ $out =~ ^[0-9a-f]{16}$ ]] && ok "getrandom" || bad "getrandom" "$out"
out2=$(t tpm2_getrandom -T "$(tcti "$D")" --hex 8 2>&1)
[[ $out2 =~ ^[0-9a-f]{16}$ && $out2 != "$out" ]] && ok "getrandom differs" || bad "getrandom differs" "$out / $out2"
[ -f "$D/tpm2-00.permall" ] && ok "state file tpm2-00.permall" || bad "state file" "$(ls -la "$D")"

# PCR 16 is resettable; use 10 (not reset by a resume) and compare with a locally computed value.
t tpm2_pcrextend -T "$(tcti "$D")" "10:sha256=$(printf '%064x' 1)" >/dev/null 2>&1
out=$(t tpm2_pcrread -T "$(tcti "$D")" sha256:10 2>&1)
want=$(python3 -c 'import hashlib;print(hashlib.sha256(bytes(32)+bytes.fromhex("%064x"%1)).hexdigest().upper())')
[[ $out == *"0x$want"* ]] && ok "pcrextend then pcrread" || bad "pcrextend then pcrread" "want $want, got: $out"

echo -n "vtpm-hook nv test $$" > "$TMP/nvdata"
n=$(wc -c < "$TMP/nvdata")
t tpm2_nvdefine -T "$(tcti "$D")" 0x1500016 -C o -s "$n" -a "ownerread|ownerwrite|authread|authwrite" >/dev/null 2>&1 &&
  t tpm2_nvwrite -T "$(tcti "$D")" 0x1500016 -C o -i "$TMP/nvdata" 2>&1 && ok "nvdefine + nvwrite" || bad "nvdefine + nvwrite" "failed"
out=$(t tpm2_nvread -T "$(tcti "$D")" 0x1500016 -C o -s "$n" 2>&1)
[[ $out == "$(cat "$TMP/nvdata")" ]] && ok "nvread in a later run" || bad "nvread in a later run" "$out"

# A second state dir is a different TPM: the NV index is not there.
if t tpm2_nvread -T "$(tcti "$TMP/other")" 0x1500016 -C o -s "$n" >/dev/null 2>&1; then
  bad "separate state" "NV index visible in another state dir"
else ok "separate state"; fi

# TPM 1.2 through the same path: TPM_GetCapability(TPM_CAP_VERSION_VAL).
resp=$(printf '\x00\xc1\x00\x00\x00\x12\x00\x00\x00\x65\x00\x00\x00\x1a\x00\x00\x00\x00' |
  t "$HOOK" emulate --state-dir "$TMP/tpm12" --tpm-version 1.2 | od -An -tx1 | tr -d ' \n')
[[ $resp == 00c4*00000000* && ${resp:12:8} == 00000000 ]] && ok "TPM 1.2 GetCapability" || bad "TPM 1.2 GetCapability" "$resp"
[ -f "$TMP/tpm12/tpm-00.permall" ] && ok "TPM 1.2 state file" || bad "TPM 1.2 state file" "$(ls -la "$TMP/tpm12")"

# A malformed stream gets an error response and a non-zero exit; state stays loadable.
printf '\x80\x01\x00\x01\x00\x00\x00\x00\x01\x7b' | t "$HOOK" emulate --state-dir "$D" >/dev/null 2>&1 &&
  bad "bad size" "exit 0" || ok "bad size rejected"
out=$(t tpm2_nvread -T "$(tcti "$D")" 0x1500016 -C o -s "$n" 2>&1)
[[ $out == "$(cat "$TMP/nvdata")" ]] && ok "state intact after bad client" || bad "state intact" "$out"

# pcrBanks: exactly the requested banks are active, and the allocation persists.
banks() { t tpm2_getcap -T "cmd:exec $HOOK emulate --state-dir $1 ${2:+--pcr-banks $2}" pcrs 2>&1 |
  awk '/- [a-z0-9_]+: \[ 0/ {sub(":", "", $2); printf "%s ", $2}'; }
out=$(banks "$TMP/pcr" sha256,sha384)
[[ $out == "sha256 sha384 " ]] && ok "pcr banks sha256,sha384" || bad "pcr banks sha256,sha384" "active: $out"
out=$(banks "$TMP/pcr")
[[ $out == "sha256 sha384 " ]] && ok "pcr banks persist" || bad "pcr banks persist" "active: $out"
out=$(banks "$TMP/pcr" sha1)
[[ $out == "sha1 " ]] && ok "pcr banks re-allocated to sha1" || bad "pcr banks sha1" "active: $out"
out=$("$HOOK" emulate --state-dir "$TMP/pcr" --pcr-banks sha999 </dev/null 2>&1)
[[ $? -ne 0 && $out == *"unknown PCR bank"* ]] && ok "unknown bank rejected" || bad "unknown bank" "$out"

# createCerts: EKs at 0x81010001/0x8101000a, certificates in NV that verify against the local CA
# and carry the public key tpm2_createek derives from the standard templates.
E=$TMP/ek
ek="cmd:exec $HOOK --ca-key $E/ca/key.pem --ca-cert $E/ca/cert.pem emulate --state-dir $E/s --create-certs"
for alg in rsa:0x1c00002 ecc:0x1c0000a; do
  k=${alg%%:*} idx=${alg#*:}
  if t tpm2_nvread -T "$ek" "$idx" -C o -o "$TMP/$k.der" >/dev/null 2>&1 &&
     openssl x509 -inform der -in "$TMP/$k.der" -out "$TMP/$k.pem" &&
     openssl verify -CAfile "$E/ca/cert.pem" "$TMP/$k.pem" >/dev/null 2>&1; then
    ok "$k EK certificate verifies against the CA"
  else bad "$k EK certificate" "$(ls -la "$E" "$E/ca" 2>&1 | tr '\n' ' ')"; fi
  t tpm2_createek -T "$ek" -c "$TMP/$k.ctx" -G "$k" -u "$TMP/$k.pub.pem" -f pem >/dev/null 2>&1
  if [ -s "$TMP/$k.pub.pem" ] && cmp -s <(openssl x509 -in "$TMP/$k.pem" -noout -pubkey | openssl pkey -pubin -outform der) \
       <(openssl pkey -pubin -in "$TMP/$k.pub.pem" -outform der); then
    ok "$k EK certificate holds the key tpm2_createek derives"
  else bad "$k EK public key" "certificate key differs from tpm2_createek's"; fi
done
out=$(t tpm2_getcap -T "$ek" handles-persistent 2>&1 | tr '\n' ' ')
[[ $out == *0x81010001*0x8101000A* ]] && ok "EKs persisted" || bad "EKs persisted" "$out"

# The certificates are write-locked; --close-platform shuts the platform hierarchy as the hook's
# emulators do at every power-on (the end-to-end attestation tests prove it in containers).
echo x > "$TMP/x"
if t tpm2_nvwrite -T "$ek" -C p 0x1c00002 -i "$TMP/x" > "$TMP/out" 2>&1; then bad "EK certificate write lock" "rewritten"
elif grep -q "NV access locked" "$TMP/out"; then ok "EK certificate is write-locked"
else bad "EK certificate write lock" "$(grep -m1 -o 'tpm:.*' "$TMP/out")"; fi
closed="$ek --close-platform"
out=$(t tpm2_getcap -T "$closed" properties-variable 2>&1 | grep -m1 'phEnable:' | tr -d ' ')
[ "$out" = phEnable:0 ] && ok "--close-platform: phEnable 0" || bad "--close-platform" "$out"
for c in "tpm2_clear -c p" "tpm2_changepps" "tpm2_pcrallocate sha1:all" "tpm2_nvundefine -C p 0x1c0000a"; do
  # shellcheck disable=SC2086  # the words are the command
  if t $c -T "$closed" > "$TMP/out" 2>&1; then bad "closed platform: $c" "allowed"
  elif grep -q "hierarchy is not enabled" "$TMP/out"; then ok "closed platform: $c refused"
  else bad "closed platform: $c" "$(grep -m1 -o 'tpm:.*' "$TMP/out")"; fi
done
out=$(t tpm2_getcap -T "$ek" properties-variable 2>&1 | grep -m1 'phEnable:' | tr -d ' ')
[ "$out" = phEnable:1 ] && ok "without --close-platform: phEnable 1" || bad "phEnable" "$out"

# Options that cannot go together are refused, not silently resolved (setup refuses them too).
head -c 32 /dev/urandom > "$TMP/key"; echo pw > "$TMP/pw"; chmod 600 "$TMP/key" "$TMP/pw"
for args in "--key-file $TMP/key --password-file $TMP/pw" "--tpm-version 1.2 --create-certs" \
            "--tpm-version 1.2 --pcr-banks sha1" "--tpm-version 1.2 --close-platform" \
            "--no-startup --close-platform"; do
  # shellcheck disable=SC2086  # the words are the options
  if out=$(t "$HOOK" emulate --state-dir "$TMP/conflict" $args < /dev/null 2>&1); then
    bad "emulate $args" "accepted"
  elif [ -e "$TMP/conflict" ]; then bad "emulate $args" "left $TMP/conflict behind"
  else ok "emulate $args refused: ${out%%$'\n'*}"; fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
