#!/bin/bash
# Table of malformed hook inputs (host only: no kernel module, no container needed).
#
#   tests/badinput/bad_input_table.sh /path/to/vtpm-hook
#
# Every setup row runs `vtpm-hook --state-root S --run-root R setup` with a bad OCI state or a
# bad config.json and asserts: non-zero exit (not a signal, not a timeout), exactly one line on
# stderr, nothing on stdout, and nothing left behind: the state root, the run root and the
# statePath area are listed the same before and after, and no new process named vtpm-emu.
# Teardown rows: an unknown container exits 0 with one warning line; malformed input exits
# non-zero with one line. Prints PASS:/FAIL: per row and "N passed, M failed".
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 /path/to/vtpm-hook" >&2
  exit 2
fi
HOOK=$(realpath "$1")
ROW_TIMEOUT=${ROW_TIMEOUT:-20}

T=$(mktemp -d /tmp/vtpm-badinput.XXXXXX)
S=$T/state-root   # --state-root
R=$T/run-root     # --run-root
SP=$T/sp          # where the table's explicit statePaths point
IN=$T/in          # input files
mkdir -p "$S" "$R" "$SP" "$IN"

# A live process for the pid of rows that must get past the pid checks; in a mount namespace
# of its own (as root), since setup refuses a pid that shares the host's.
if unshare --mount true 2>/dev/null; then
  unshare --mount sleep 100000 &
else
  sleep 100000 &
fi
LIVE_PID=$!
sleep 1 &
DEAD_PID=$!
wait "$DEAD_PID"
cleanup() {
  kill "$LIVE_PID" 2>/dev/null
  wait "$LIVE_PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

passed=0
failed=0
failures=()

snapshot() {
  find "$S" "$R" "$SP" -printf '%p %y %m %s\n' 2>&1 | LC_ALL=C sort
}
emulators() {
  pgrep -x vtpm-emu | LC_ALL=C sort
}

# A bundle directory with the given config.json text ("-" for none) and a rootfs.
# (Called in $(...): a subshell, so names come from mktemp, not from a counter.)
mkdir -p "$T/bundles"
bundle() {
  local b
  b=$(mktemp -d "$T/bundles/b.XXXXXX")
  mkdir -p "$b/rootfs/dev"
  if [ "$1" != - ]; then printf '%s' "$1" >"$b/config.json"; fi
  echo "$b"
}

# An input file holding the given text.
input() {
  local f
  f=$(mktemp "$IN/in.XXXXXX")
  printf '%s' "$1" >"$f"
  echo "$f"
}

# row NAME EXPECT SUBCOMMAND INPUT_FILE [global options...]
#   EXPECT: fail  - non-zero exit, one stderr line
#           warn0 - exit 0, one stderr line that is a warning
#   followed by ~REGEX: that line must match REGEX (grep -E), so a row cannot pass by failing
#   for some other reason.
# Unless a row gives --vtpmx, it runs with --vtpmx /nonexistent/vtpmx: no row can ever get a
# real vTPM, even on a host that has /dev/vtpmx.
row() {
  local name=$1 expect=${2%%~*} want= sub=$3 in=$4
  [[ $2 == *~* ]] && want=${2#*~}
  shift 4
  local opts=("$@")
  [[ " ${opts[*]} " == *" --vtpmx "* ]] || opts+=(--vtpmx /nonexistent/vtpmx)
  local before after emu_before emu_after rc lines why=()
  before=$(snapshot)
  emu_before=$(emulators)
  timeout --kill-after=5 "$ROW_TIMEOUT" "$HOOK" --state-root "$S" --run-root "$R" "${opts[@]}" \
    "$sub" <"$in" >"$T/stdout" 2>"$T/stderr"
  rc=$?
  after=$(snapshot)
  emu_after=$(emulators)
  lines=$(awk 'END { print NR }' "$T/stderr")

  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    why+=("timed out after ${ROW_TIMEOUT}s")
  elif [ $rc -gt 128 ]; then
    why+=("killed by signal $((rc - 128))")
  elif [ "$expect" = fail ] && [ $rc -eq 0 ]; then
    why+=("exit 0, expected failure")
  elif [ "$expect" = warn0 ] && [ $rc -ne 0 ]; then
    why+=("exit $rc, expected 0")
  fi
  [ "$lines" -eq 1 ] || why+=("$lines lines on stderr, expected 1")
  if [ "$expect" = warn0 ] && ! grep -q 'warn' "$T/stderr"; then why+=("no warning on stderr"); fi
  if [ -n "$want" ] && ! grep -Eq -- "$want" "$T/stderr"; then why+=("stderr does not match /$want/"); fi
  [ -s "$T/stdout" ] && why+=("$(wc -c <"$T/stdout") bytes on stdout")
  [ "$before" = "$after" ] || why+=("left behind: $(diff <(echo "$before") <(echo "$after") |
                                     grep '^[<>]' | head -3 | tr '\n' ' ')")
  [ "$emu_before" = "$emu_after" ] || why+=("vtpm-emu processes changed: $emu_before -> $emu_after")

  local err
  err=$(head -c 300 "$T/stderr" | tr '\n' '|')
  if [ ${#why[@]} -eq 0 ]; then
    passed=$((passed + 1))
    echo "PASS: $name (exit $rc): $err"
  else
    failed=$((failed + 1))
    failures+=("$name")
    local IFS=';'
    echo "FAIL: $name: ${why[*]} (exit $rc, stderr: $err)"
  fi
  # A failed row must not spoil the next ones: drop whatever it left behind.
  if [ "$before" != "$after" ]; then
    comm -13 <(echo "$before" | cut -d' ' -f1) <(echo "$after" | cut -d' ' -f1) |
      while read -r p; do rm -rf "$p"; done
  fi
  for p in $emu_after; do
    grep -qx "$p" <<<"$emu_before" || kill "$p" 2>/dev/null
  done
}

vt() {  # config with linux.vtpms = $1
  printf '{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"vtpms":%s}}' "$1"
}
# A valid config without linux.vtpms (the default: one TPM 2 under the state root).
GOOD_CONFIG='{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"]}}'
B_OK=$(bundle "$GOOD_CONFIG")
# state TEXT_AFTER_ID: a state for id c1 and the good bundle, overridable field by field.
state() {  # id_json pid_json bundle_json [extra]
  printf '{"ociVersion":"1.0.2","id":%s,"status":"created","pid":%s,"bundle":%s%s}' \
    "$1" "$2" "$3" "${4:-}"
}
ok_state() { state '"c1"' "$LIVE_PID" "\"$1\""; }

echo "== OCI state on stdin"
row "state: empty stdin" 'fail~is empty' setup "$(input '')"
row "state: only whitespace" 'fail~is empty' setup "$(input $'  \n\t ')"
row "state: not JSON" 'fail~not valid JSON' setup "$(input 'hello, hook')"
row "state: truncated JSON" 'fail~not valid JSON' setup "$(input '{"id":"c1","pid":')"
row "state: JSON array" 'fail~not a JSON object' setup "$(input "[$(ok_state "$B_OK")]")"
row "state: JSON string" 'fail~not a JSON object' setup "$(input '"c1"')"
row "state: JSON null" 'fail~not a JSON object' setup "$(input 'null')"
row "state: invalid UTF-8 in id" 'fail~not valid JSON' setup "$(input "$(state $'"c\xff1"' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id missing" 'fail~"id" is missing' setup "$(input "{\"pid\":$LIVE_PID,\"bundle\":\"$B_OK\"}")"
row "state: id is a number" 'fail~"id" is not a string' setup "$(input "$(state 42 "$LIVE_PID" "\"$B_OK\"")")"
row "state: id is an object" 'fail~"id" is not a string' setup "$(input "$(state '{"x":1}' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id empty" 'fail~"id" is empty' setup "$(input "$(state '""' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id with /" 'fail~"id" has a character' setup "$(input "$(state '"a/b"' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id .." 'fail~"id" may not be' setup "$(input "$(state '".."' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id ../escape" 'fail~"id" has a character' setup "$(input "$(state '"../escape"' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id with newline escape" 'fail~"id" has a character' setup "$(input "$(state '"a\nb"' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id with NUL escape" 'fail~"id" has a character' setup "$(input "$(state '"a\u0000b"' "$LIVE_PID" "\"$B_OK\"")")"
row "state: id of 1025 characters" 'fail~"id" is longer' setup \
  "$(input "$(state "\"$(printf 'a%.0s' $(seq 1025))\"" "$LIVE_PID" "\"$B_OK\"")")"
row "state: pid is a string" 'fail~"pid" is not an integer' setup "$(input "$(state '"c1"' "\"$LIVE_PID\"" "\"$B_OK\"")")"
row "state: pid is a float" 'fail~"pid" is not an integer' setup "$(input "$(state '"c1"' 12.5 "\"$B_OK\"")")"
row "state: pid is a bool" 'fail~"pid" is not an integer' setup "$(input "$(state '"c1"' true "\"$B_OK\"")")"
row "state: pid huge (2^64+1)" 'fail~"pid" is not an integer' setup "$(input "$(state '"c1"' 18446744073709551617 "\"$B_OK\"")")"
row "state: pid 2^64-1" 'fail~"pid" .*out of range' setup "$(input "$(state '"c1"' 18446744073709551615 "\"$B_OK\"")")"
row "state: pid 4194305" 'fail~"pid" .*out of range' setup "$(input "$(state '"c1"' 4194305 "\"$B_OK\"")")"
row "state: pid negative" 'fail~"pid" .*out of range' setup "$(input "$(state '"c1"' -5 "\"$B_OK\"")")"
row "state: pid missing (setup needs it)" 'fail~"pid" is missing' setup \
  "$(input "{\"id\":\"c1\",\"status\":\"created\",\"bundle\":\"$B_OK\"}")"
row "state: pid 0 (setup needs a process)" 'fail~"pid" is missing' setup "$(input "$(state '"c1"' 0 "\"$B_OK\"")")"
row "state: pid of an exited process" 'fail~process|pid' setup "$(input "$(state '"c1"' "$DEAD_PID" "\"$B_OK\"")")" \
  --vtpmx /dev/null
row "state: bundle missing" 'fail~"bundle" is missing' setup "$(input "{\"id\":\"c1\",\"pid\":$LIVE_PID}")"
row "state: bundle is a number" 'fail~"bundle" is not a string' setup "$(input "$(state '"c1"' "$LIVE_PID" 7)")"
row "state: bundle relative" 'fail~not an absolute path' setup "$(input "$(state '"c1"' "$LIVE_PID" '"bundles/b1"')")"
row "state: bundle empty" 'fail~"bundle" is empty' setup "$(input "$(state '"c1"' "$LIVE_PID" '""')")"
row "state: bundle with NUL escape" 'fail~NUL' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\\u0000/x\"")")"
row "state: bundle with newline escape" 'fail~newline' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\\n\"")")"
row "state: bundle does not exist" 'fail~cannot read' setup "$(input "$(state '"c1"' "$LIVE_PID" "\"$T/nope\"")")"
row "state: status is a number" 'fail~"status" is not a string' setup \
  "$(input "{\"id\":\"c1\",\"status\":5,\"pid\":$LIVE_PID,\"bundle\":\"$B_OK\"}")"
row "state: annotations is an array" 'fail~"annotations" is not an object' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\"" ',"annotations":["a"]')")"
row "state: annotation value not a string" 'fail~annotations\.a" is not a string' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\"" ',"annotations":{"a":1}')")"
row "state: annotation key with newline, value not a string" 'fail~is not a string' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\"" ',"annotations":{"a\nb":1}')")"
row "state: annotations nested 100000 deep" 'fail~nested deeper' setup \
  "$(input "$(state '"c1"' "$LIVE_PID" "\"$B_OK\"" \
    ",\"annotations\":{\"a\":$(printf '[%.0s' $(seq 100000))$(printf ']%.0s' $(seq 100000))}")")"
# More than 1 MiB: a valid state padded with a long annotation.
big=$T/big-state.json
{
  printf '{"id":"c1","pid":%s,"bundle":"%s","annotations":{"pad":"' "$LIVE_PID" "$B_OK"
  head -c 1100000 /dev/zero | tr '\0' 'x'
  printf '"}}'
} >"$big"
row "state: larger than 1 MiB" 'fail~larger than 1 MiB' setup "$big"
# The io.vtpm-hook.* annotations (podman/CRI-O/Kubernetes) in the OCI state.
ann_row() {  # NAME REGEX ANNOTATIONS_JSON [bundle]
  row "state: $1" "fail~$2" setup "$(input "$(state '"c1"' "$LIVE_PID" "\"${4:-$B_OK}\"" ",\"annotations\":$3")")"
}
ann_row 'annotation io.vtpm-hook.vtpm "3"' 'must be "2" or "1.2"' '{"io.vtpm-hook.vtpm":"3"}'
ann_row 'annotation io.vtpm-hook.vtpm with a newline' 'must be "2" or "1.2"' '{"io.vtpm-hook.vtpm":"2\nx"}'
ann_row 'annotation io.vtpm-hook.create-certs "yes"' 'true" or "false' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.create-certs":"yes"}'
ann_row 'field annotation without io.vtpm-hook.vtpm' 'need' '{"io.vtpm-hook.pcr-banks":"sha256"}'
ann_row 'annotations io.vtpm-hook.vtpm and .vtpms both' 'exclude each other' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.vtpms":"[]"}'
ann_row 'annotation io.vtpm-hook.vtpms not JSON' 'not valid JSON' '{"io.vtpm-hook.vtpms":"[{"}'
ann_row 'annotation io.vtpm-hook.vtpms not an array' 'not an array' '{"io.vtpm-hook.vtpms":"{}"}'
ann_row 'annotation io.vtpm-hook.vtpms with a bad statePath' 'not an absolute path' \
  '{"io.vtpm-hook.vtpms":"[{\"statePath\":\"rel\"}]"}'
ann_row 'annotation io.vtpm-hook.vtpms nested 100000 deep' 'not an object|nest|deep' \
  "{\"io.vtpm-hook.vtpms\":\"$(printf '[%.0s' $(seq 100000))$(printf ']%.0s' $(seq 100000))\"}"
ann_row 'annotations and linux.vtpms both' 'use one of them' '{"io.vtpm-hook.vtpm":"2"}' \
  "$(bundle "$(vt "[{\"statePath\":\"$SP/a\"}]")")"

echo "== config.json"
cfg_row() {  # NAME REGEX CONFIG_TEXT_or_- [global options...]
  local name=$1 want=$2 b
  b=$(bundle "$3")
  shift 3
  row "config: $name" "fail~$want" setup "$(input "$(ok_state "$b")")" "$@"
}
cfg_row "config.json missing" 'cannot read .*config\.json' -
cfg_row "empty" 'config\.json is empty' ''
cfg_row "not JSON" 'not valid JSON' 'root: rootfs'
cfg_row "JSON array" 'not a JSON object' '[{"root":{"path":"rootfs"}}]'
cfg_row "no root" '"root" is missing' '{"ociVersion":"1.0.2","process":{"args":["sh"]}}'
cfg_row "root is a string" '"root" is missing' '{"root":"rootfs"}'
cfg_row "root.path missing" '"path" is missing' '{"root":{"readonly":true}}'
cfg_row "root.path is a number" '"path" is not a string' '{"root":{"path":1}}'
cfg_row "root.path empty" 'root\.path' '{"root":{"path":""}}'
cfg_row "root.path with NUL escape" 'root\.path' '{"root":{"path":"rootfs\u0000x"}}'
cfg_row "root.path with newline escape" 'root\.path' '{"root":{"path":"root\nfs"}}'
cfg_row "annotations not an object" '"annotations" is not an object' '{"root":{"path":"rootfs"},"annotations":"a=b"}'
cfg_row "linux.vtpms is an object" 'not an array' "$(vt "{\"statePath\":\"$SP/a\"}")"
cfg_row "linux.vtpms is a string" 'not an array' "$(vt '"tpm2"')"
cfg_row "linux.vtpms is a number" 'not an array' "$(vt '1')"
cfg_row "entry is not an object" '\[0\] is not an object' "$(vt '["tpm2"]')"
cfg_row "entry is an array" '\[0\] is not an object' "$(vt '[[]]')"
cfg_row "unknown field" 'unknown field "vtpmVerison"' "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVerison\":\"2\"}]")"
cfg_row "unknown field whose name has a newline" 'unknown field' "$(vt '[{"bad\nfield":1}]')"
cfg_row "vtpmVersion \"3\"" '"vtpmVersion" must be' "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVersion\":\"3\"}]")"
cfg_row "vtpmVersion is a number" '"vtpmVersion" is not a string' "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVersion\":2}]")"
cfg_row "vtpmVersion with a newline" '"vtpmVersion" must be' "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVersion\":\"2\\nx\"}]")"
cfg_row "statePath relative" 'not an absolute path' "$(vt '[{"statePath":"tpms/a"}]')"
cfg_row "statePath empty" '"statePath" is empty' "$(vt '[{"statePath":""}]')"
cfg_row "statePath is a number" '"statePath" is not a string' "$(vt '[{"statePath":5}]')"
cfg_row "statePath with newline" 'newline' "$(vt "[{\"statePath\":\"$SP/a\\nb\"}]")"
cfg_row "statePath with NUL escape" 'NUL' "$(vt "[{\"statePath\":\"$SP/a\\u0000b\"}]")"
cfg_row "statePath is /" 'may not be /' "$(vt '[{"statePath":"/"}]')"
cfg_row "statePath /.. (is /)" 'may not be /' "$(vt '[{"statePath":"/.."}]')"
cfg_row "statePath longer than 4000" 'longer than 4000' "$(vt "[{\"statePath\":\"$SP/$(printf 'a%.0s' $(seq 4001))\"}]")"
cfg_row "duplicate statePath" 'used twice' "$(vt "[{\"statePath\":\"$SP/a\"},{\"statePath\":\"$SP/a\"}]")"
cfg_row "duplicate statePath /s/a vs /s/./a" 'used twice' "$(vt "[{\"statePath\":\"$SP/a\"},{\"statePath\":\"$SP/./a\"}]")"
cfg_row "duplicate statePath /s/a vs /s/a/" 'used twice' "$(vt "[{\"statePath\":\"$SP/a\"},{\"statePath\":\"$SP/a/\"}]")"
cfg_row "duplicate statePath /s/a vs /s/b/../a" 'used twice' \
  "$(vt "[{\"statePath\":\"$SP/a\"},{\"statePath\":\"$SP/b/../a\"}]")"
cfg_row "statePathIsManaged is a string" 'not a boolean' "$(vt "[{\"statePath\":\"$SP/a\",\"statePathIsManaged\":\"yes\"}]")"
cfg_row "statePathIsManaged is 1" 'not a boolean' "$(vt "[{\"statePath\":\"$SP/a\",\"statePathIsManaged\":1}]")"
nine=$(for i in 1 2 3 4 5 6 7 8 9; do printf '{"statePath":"%s/t%s"}' "$SP" "$i"; done | sed 's/}{/},{/g')
cfg_row "9 entries" 'at most 8' "$(vt "[$nine]")"
cfg_row "createCerts is a string" '"createCerts" is not a boolean' "$(vt "[{\"statePath\":\"$SP/a\",\"createCerts\":\"yes\"}]")"
cfg_row "createCerts with TPM 1.2" 'need vtpmVersion' "$(vt "[{\"statePath\":\"$SP/a\",\"createCerts\":true,\"vtpmVersion\":\"1.2\"}]")"
# Fields the hook is growing (pcrBanks, runAs, encryption*): bad values must be refused early,
# and good ones must fail only at the missing vtpmx, with nothing left behind.
cfg_row "pcrBanks unknown bank" 'unknown PCR bank' "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":\"sha257\"}]")"
cfg_row "pcrBanks is an array" '"pcrBanks" is not a string' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":[\"sha256\"]}]")"
cfg_row "pcrBanks listed twice" 'twice' "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":\"sha256,sha256\"}]")"
cfg_row "pcrBanks with a newline" 'PCR bank' "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":\"sha256,\\nsha1\"}]")"
cfg_row "pcrBanks with vtpmVersion 1.2" 'vtpmVersion' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVersion\":\"1.2\",\"pcrBanks\":\"sha256\"}]")"
cfg_row "pcrBanks valid (fails only at the missing vtpmx)" 'not available' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":\"sha256,sha384\"}]")"
cfg_row "runAs with a /" '"runAs"' "$(vt "[{\"statePath\":\"$SP/a\",\"runAs\":\"../root\"}]")"
cfg_row "runAs is a number" '"runAs" is not a string' "$(vt "[{\"statePath\":\"$SP/a\",\"runAs\":1000}]")"
cfg_row "runAs 1000:1000 (valid; fails only at the missing vtpmx)" 'not available' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"runAs\":\"1000:1000\"}]")"
cfg_row "encryptionPassword (no such field)" 'unknown field|not supported' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"encryptionPassword\":\"secret\"}]")"
cfg_row "encryptionKeyFile relative" 'not an absolute path' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"encryptionKeyFile\":\"key.bin\"}]")"
cfg_row "encryptionKeyFile and encryptionPasswordFile both" 'encryption' \
  "$(vt "[{\"statePath\":\"$SP/a\",\"encryptionKeyFile\":\"/k\",\"encryptionPasswordFile\":\"/p\"}]")"
cfg_row "linux.vtpms nested 100000 deep" 'not an object|nest|deep' \
  "$(vt "$(printf '[%.0s' $(seq 100000))$(printf ']%.0s' $(seq 100000))")"
b=$(bundle -)
mkdir "$b/config.json"
row "config: config.json is a directory" 'fail~config\.json' setup "$(input "$(ok_state "$b")")"
b=$(bundle -)
{
  printf '{"root":{"path":"rootfs"},"annotations":{"pad":"'
  head -c 17000000 /dev/zero | tr '\0' 'x'
  printf '"}}'
} >"$b/config.json"
row "config: larger than 16 MiB" 'fail~larger than 16 MiB' setup "$(input "$(ok_state "$b")")"

echo "== the host"
row "host: /dev/vtpmx missing (--vtpmx /nonexistent/vtpmx)" 'fail~/nonexistent/vtpmx is not available' setup \
  "$(input "$(ok_state "$B_OK")")" --vtpmx /nonexistent/vtpmx
row "host: --vtpmx is a directory" 'fail~not a character device' setup "$(input "$(ok_state "$B_OK")")" --vtpmx "$T"
# /dev/null passes the character-device check; the proxy ioctl fails after the state dir was
# made: setup must undo that.
row "host: --vtpmx /dev/null (proxy ioctl fails after mkdir)" 'fail~VTPM_PROXY|/dev/null' setup \
  "$(input "$(ok_state "$B_OK")")" --vtpmx /dev/null
touch "$SP/a-file"
b=$(bundle "$(vt "[{\"statePath\":\"$SP/a-file\"}]")")
row "host: statePath is a regular file" 'fail~not a directory' setup "$(input "$(ok_state "$b")")" --vtpmx /dev/null

echo "== teardown"
row "teardown: unknown container" 'warn0~no vTPM is recorded' teardown "$(input "$(ok_state "$B_OK")")"
row "teardown: unknown container, pid 0 (crun)" 'warn0~no vTPM is recorded' teardown \
  "$(input "{\"id\":\"c1\",\"status\":\"stopped\",\"pid\":0,\"bundle\":\"$B_OK\"}")"
row "teardown: empty stdin" 'fail~is empty' teardown "$(input '')"
row "teardown: not JSON" 'fail~not valid JSON' teardown "$(input '{{')"
row "teardown: JSON array" 'fail~not a JSON object' teardown "$(input '[]')"
row "teardown: id with /" 'fail~"id" has a character' teardown "$(input "$(state '"../c1"' 0 "\"$B_OK\"")")"
row "teardown: id with newline escape" 'fail~"id" has a character' teardown "$(input "$(state '"c\n1"' 0 "\"$B_OK\"")")"
row "teardown: bundle missing" 'fail~"bundle" is missing' teardown "$(input '{"id":"c1"}')"
row "teardown: pid negative" 'fail~out of range' teardown "$(input "$(state '"c1"' -1 "\"$B_OK\"")")"
row "teardown: larger than 1 MiB" 'fail~larger than 1 MiB' teardown "$big"
# A corrupt run record cannot be acted on: poststop warns, drops it, and does not fail the runtime.
printf 'not a run record' >"$R/c2.json"
"$HOOK" --state-root "$S" --run-root "$R" teardown <"$(input "$(state '"c2"' 0 "\"$B_OK\"")")" 2>"$T/stderr"
rc=$?
if [ $rc -eq 0 ] && [ "$(awk 'END { print NR }' "$T/stderr")" = 1 ] && grep -q 'corrupt.*removing it' "$T/stderr" &&
   [ ! -e "$R/c2.json" ]; then
  passed=$((passed + 1)); echo "PASS: teardown: corrupt run record is dropped with one warning"
else
  failed=$((failed + 1)); failures+=("teardown: corrupt run record")
  echo "FAIL: teardown: corrupt run record: exit $rc, stderr: $(tr '\n' '|' <"$T/stderr")"
fi
rm -f "$R/c2.json"

echo
echo "$passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
  printf '  failed: %s\n' "${failures[@]}"
  exit 1
fi
exit 0
