#!/usr/bin/env bash
# Proves that `vtpm-hook emulate` and swtpm 0.7.1 can open each other's TPM 2 state directories,
# on the host, without a kernel TPM:
#   (a) NV index defined and written through vtpm-hook, read back through `swtpm socket`;
#   (b) NV index defined and written through `swtpm socket`, read back through vtpm-hook;
#   (c) encrypted: vtpm-hook emulate --key-file K (32-byte binary key, AES-256) writes, swtpm
#       --key file=K,format=binary,mode=aes-256-cbc reads;
#   (d) encrypted: swtpm --key pwdfile=P,kdf=pbkdf2,mode=aes-256-cbc writes, vtpm-hook emulate
#       --password-file P reads.
# Each then also checks the second program's rewrite with the first one. A vtpm-hook whose
# `emulate --help` lists no --key-file / --password-file fails: (c) and (d) are never skipped.
#
# Usage: VTPM_HOOK=/path/to/vtpm-hook tests/interop/swtpm_interop.sh
# Needs: swtpm, swtpm_ioctl (swtpm-tools), tpm2-tools with the swtpm and cmd TCTIs, timeout.
# Env:   INTEROP_TIMEOUT  seconds allowed for any one step (default 30)
#        KEEP_TMP=1       keep the temporary directory for inspection
# Prints "PASS: ..." per check; stops with "FAIL: ..." (exit 1) on the first failure; a missing
# tool is "ERROR: ..." (exit 2); ends with "N passed, M failed".
set -euo pipefail
# shellcheck source=../lib/harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"

STEP_TIMEOUT=${INTEROP_TIMEOUT:-30}
TMP=""
SWTPM_PIDS=()
SWTPM_CTRLS=()

# The first failure ends the run: each check builds on the state the previous one left.
stop() {
  fail "swtpm interop" "$*"
  finish
}

cleanup() {  # at exit: $? is the suite's exit status
  local rc=$? i pid log lines
  set +e
  for i in "${!SWTPM_PIDS[@]}"; do
    pid=${SWTPM_PIDS[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    timeout 5 swtpm_ioctl --unix "${SWTPM_CTRLS[$i]}" -s >/dev/null 2>&1
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      sleep 0.5
      kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if [[ $rc -ne 0 ]]; then
      for log in "$TMP"/swtpm-*.log; do
        [[ -f "$log" ]] || continue
        lines=$(grep -v "Data client disconnected" "$log" | tail -n 20)
        [[ -n "$lines" ]] && printf -- '---- last lines of %s\n%s\n' "$(basename "$log")" "$lines" >&2
      done
    fi
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then
      echo "note: temporary files kept in $TMP" >&2
    else
      rm -rf -- "$TMP"
      [[ $rc -eq 0 ]] || echo "note: run with KEEP_TMP=1 to keep the state dirs and logs" >&2
    fi
  fi
}
at_exit cleanup
trap 'exit 130' INT TERM

# ---- preconditions ------------------------------------------------------------------------------

[[ -n "${VTPM_HOOK:-}" ]] || fatal "set VTPM_HOOK to the path of the vtpm-hook binary"
[[ -x "$VTPM_HOOK" && -f "$VTPM_HOOK" ]] || fatal "VTPM_HOOK=$VTPM_HOOK is not an executable file"
VTPM_HOOK=$(readlink -f -- "$VTPM_HOOK")
[[ "$VTPM_HOOK" =~ ^[A-Za-z0-9_./+-]+$ ]] ||
  fatal "VTPM_HOOK path '$VTPM_HOOK' has characters the tpm2-tools cmd TCTI cannot pass through"
for tool in swtpm swtpm_ioctl tpm2_nvdefine tpm2_nvwrite tpm2_nvread tpm2_getrandom timeout; do
  command -v "$tool" >/dev/null || fatal "'$tool' not found (apt-get install swtpm swtpm-tools tpm2-tools)"
done

TMP=$(mktemp -d /tmp/vtpm-interop.XXXXXX)
LOG="$TMP/step.log"

# Runs one bounded step; on failure prints its output and stops.
#   step "what" cmd args...
step() {
  local what=$1
  shift
  local rc=0
  timeout -k 5 "$STEP_TIMEOUT" "$@" >"$LOG" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "---- output of: $*" >&2
    cat "$LOG" >&2
    echo "----" >&2
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
      stop "$what: timed out after ${STEP_TIMEOUT}s"
    fi
    stop "$what: exit status $rc"
  fi
}

# tcti-cmd runs "/bin/sh -c CMD" and, when the tool is done, SIGTERMs that child and waits for it
# before closing the pipes; with exec the child is vtpm-hook itself, so the tool returns only
# once vtpm-hook has exited (and released the state dir).
#   hook_tcti DIR [emulate options...]
hook_tcti() {
  local dir=$1
  shift
  echo "cmd:exec $VTPM_HOOK emulate --state-dir $dir${*:+ $*}"
}

# start_swtpm STATE_DIR NAME [SWTPM ARGS...]: runs `swtpm socket` on STATE_DIR (with the extra
# arguments, e.g. --key); sets SWTPM_TCTI and SWTPM_CTRL.
# While the dir's .lock is still held (a vtpm-hook emulate process that outlived its tpm2 tool),
# swtpm exits at once; it is retried until the step timeout, with a warning.
start_swtpm() {
  local dir=$1 name=$2 sock="$TMP/sock-$2" log="$TMP/swtpm-$2.log" pid waited=0
  shift 2
  local extra=("$@")
  local deadline=$((SECONDS + STEP_TIMEOUT))
  mkdir -p "$sock"
  while :; do
    rm -f "$sock/s" "$sock/s.ctrl"
    swtpm socket --tpm2 --tpmstate "dir=$dir" \
      --server "type=unixio,path=$sock/s" --ctrl "type=unixio,path=$sock/s.ctrl" \
      --flags not-need-init,startup-clear "${extra[@]}" \
      </dev/null >"$log" 2>&1 &
    pid=$!
    SWTPM_PIDS+=("$pid")
    SWTPM_CTRLS+=("$sock/s.ctrl")
    until [[ -S "$sock/s" && -S "$sock/s.ctrl" ]] || ! kill -0 "$pid" 2>/dev/null; do
      ((SECONDS < deadline)) || stop "swtpm ($name) did not create its sockets in ${STEP_TIMEOUT}s"
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then break; fi
    wait "$pid" 2>/dev/null || true
    if grep -q "Could not lock access to lockfile" "$log" && ((SECONDS < deadline)); then
      waited=1
      sleep 0.2
      continue
    fi
    cat "$log" >&2
    stop "swtpm ($name) on $dir exited at startup (log above)"
  done
  if ((waited)); then
    echo "WARN: $dir/.lock was still held by another process when swtpm ($name) started;" \
      "swtpm got it after retrying (does vtpm-hook emulate outlive its client?)" >&2
  fi
  SWTPM_TCTI="swtpm:path=$sock/s"
  SWTPM_CTRL="$sock/s.ctrl"
  # One harmless command proves swtpm loaded the state and is serving.
  step "swtpm ($name) answers TPM2_GetRandom" tpm2_getrandom -T "$SWTPM_TCTI" 8
}

# stop_swtpm: shuts down the swtpm last started (CMD_SHUTDOWN) and waits for it to exit.
stop_swtpm() {
  local i=$((${#SWTPM_PIDS[@]} - 1))
  local pid=${SWTPM_PIDS[$i]}
  step "swtpm_ioctl -s (shut down swtpm)" swtpm_ioctl --unix "$SWTPM_CTRL" -s
  local deadline=$((SECONDS + STEP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || stop "swtpm (pid $pid) still running ${STEP_TIMEOUT}s after shutdown"
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}

# expect_swtpm_files DIR WHO [FLAGS]: the state dir holds a swtpm-format tpm2-00.permall whose
# header flags are FLAGS (4 hex digits; default 0000, 0009 = encrypted with a 256-bit key).
expect_swtpm_files() {
  local f="$1/tpm2-00.permall" head want="0201000a${3:-0000}"
  [[ -s "$f" ]] || stop "$2 left no $f"
  head=$(od -An -tx1 -N6 "$f" | tr -d ' \n')
  [[ "$head" == "$want" ]] ||
    stop "$f written by $2 does not start with swtpm's blob header $want (got $head)"
}

# nv_write TCTI INDEX FILE WHO / nv_read_check TCTI INDEX FILE WHO
nv_write() {
  local size
  size=$(stat -c %s "$3")
  step "$4: tpm2_nvdefine $2" tpm2_nvdefine -T "$1" "$2" -C o -s "$size" -a "ownerread|ownerwrite"
  step "$4: tpm2_nvwrite $2" tpm2_nvwrite -T "$1" "$2" -C o -i "$3"
}
nv_read_check() {
  local size out="$TMP/read-$2-$RANDOM.bin"
  size=$(stat -c %s "$3")
  step "$4: tpm2_nvread $2" tpm2_nvread -T "$1" "$2" -C o -s "$size" -o "$out"
  cmp -s "$out" "$3" || stop "$4: NV index $2 holds other data than was written"
}

head -c 32 /dev/urandom >"$TMP/data-a.bin"
head -c 32 /dev/urandom >"$TMP/data-b.bin"
IDX_A=0x1500016
IDX_B=0x1500017

# ---- (a) vtpm-hook writes, swtpm reads ---------------------------------------------------------

DIR_A="$TMP/state-a"
mkdir -m 0700 "$DIR_A"
step "vtpm-hook emulate answers TPM2_GetRandom" tpm2_getrandom -T "$(hook_tcti "$DIR_A")" 8
nv_write "$(hook_tcti "$DIR_A")" "$IDX_A" "$TMP/data-a.bin" "vtpm-hook"
expect_swtpm_files "$DIR_A" "vtpm-hook"
start_swtpm "$DIR_A" a
nv_read_check "$SWTPM_TCTI" "$IDX_A" "$TMP/data-a.bin" "swtpm"
stop_swtpm
pass "NV index written through vtpm-hook emulate is read back by swtpm 0.7.1"
# swtpm rewrote the state at its startup/shutdown: vtpm-hook must still read it.
nv_read_check "$(hook_tcti "$DIR_A")" "$IDX_A" "$TMP/data-a.bin" "vtpm-hook"
pass "vtpm-hook reads the state dir again after swtpm rewrote it"

# ---- (b) swtpm writes, vtpm-hook reads ---------------------------------------------------------

DIR_B="$TMP/state-b"
mkdir -m 0700 "$DIR_B"
start_swtpm "$DIR_B" b
nv_write "$SWTPM_TCTI" "$IDX_B" "$TMP/data-b.bin" "swtpm"
stop_swtpm
expect_swtpm_files "$DIR_B" "swtpm"
nv_read_check "$(hook_tcti "$DIR_B")" "$IDX_B" "$TMP/data-b.bin" "vtpm-hook"
pass "NV index written through swtpm 0.7.1 is read back by vtpm-hook emulate"
# vtpm-hook rewrote the state: swtpm must still read it.
start_swtpm "$DIR_B" b2
nv_read_check "$SWTPM_TCTI" "$IDX_B" "$TMP/data-b.bin" "swtpm"
stop_swtpm
pass "swtpm reads the state dir again after vtpm-hook rewrote it"

# ---- encrypted state: (c) and (d) ---------------------------------------------------------------

if ! "$VTPM_HOOK" emulate --help 2>&1 | grep -q -- '--key-file' ||
  ! "$VTPM_HOOK" emulate --help 2>&1 | grep -q -- '--password-file'; then
  stop "vtpm-hook emulate --help lists no --key-file / --password-file: the encrypted directions (c) and (d) cannot run"
fi

head -c 32 /dev/urandom >"$TMP/data-c.bin"
head -c 32 /dev/urandom >"$TMP/data-d.bin"
IDX_C=0x1500018
IDX_D=0x1500019
KEY="$TMP/state.key"
PWD_FILE="$TMP/state.pwd"
head -c 32 /dev/urandom >"$KEY"
printf 'interop password %s\n' "$RANDOM$RANDOM" >"$PWD_FILE"
chmod 0600 "$KEY" "$PWD_FILE"

# ---- (c) vtpm-hook writes with a key file, swtpm reads with the same key ------------------------

DIR_C="$TMP/state-c"
mkdir -m 0700 "$DIR_C"
nv_write "$(hook_tcti "$DIR_C" --key-file "$KEY")" "$IDX_C" "$TMP/data-c.bin" "vtpm-hook (key)"
expect_swtpm_files "$DIR_C" "vtpm-hook --key-file" 0009
if timeout -k 5 "$STEP_TIMEOUT" tpm2_getrandom -T "$(hook_tcti "$DIR_C")" 8 >"$LOG" 2>&1; then
  stop "vtpm-hook emulate without --key-file served a state dir encrypted with a key"
fi
start_swtpm "$DIR_C" c --key "file=$KEY,format=binary,mode=aes-256-cbc"
nv_read_check "$SWTPM_TCTI" "$IDX_C" "$TMP/data-c.bin" "swtpm (key)"
stop_swtpm
expect_swtpm_files "$DIR_C" "swtpm --key file=" 0009
pass "encrypted state written by vtpm-hook emulate --key-file is read by swtpm --key file="
nv_read_check "$(hook_tcti "$DIR_C" --key-file "$KEY")" "$IDX_C" "$TMP/data-c.bin" "vtpm-hook (key)"
pass "vtpm-hook reads the encrypted state again after swtpm rewrote it"

# ---- (d) swtpm writes with a password file, vtpm-hook reads with the same password ---------------

DIR_D="$TMP/state-d"
mkdir -m 0700 "$DIR_D"
start_swtpm "$DIR_D" d --key "pwdfile=$PWD_FILE,kdf=pbkdf2,mode=aes-256-cbc"
nv_write "$SWTPM_TCTI" "$IDX_D" "$TMP/data-d.bin" "swtpm (password)"
stop_swtpm
expect_swtpm_files "$DIR_D" "swtpm --key pwdfile=" 0009
nv_read_check "$(hook_tcti "$DIR_D" --password-file "$PWD_FILE")" "$IDX_D" "$TMP/data-d.bin" \
  "vtpm-hook (password)"
expect_swtpm_files "$DIR_D" "vtpm-hook --password-file" 0009
pass "encrypted state written by swtpm --key pwdfile= is read by vtpm-hook --password-file"
start_swtpm "$DIR_D" d2 --key "pwdfile=$PWD_FILE,kdf=pbkdf2,mode=aes-256-cbc"
nv_read_check "$SWTPM_TCTI" "$IDX_D" "$TMP/data-d.bin" "swtpm (password)"
stop_swtpm
pass "swtpm reads the encrypted state again after vtpm-hook rewrote it"

pass "swtpm interop, both directions, unencrypted and encrypted"
finish
