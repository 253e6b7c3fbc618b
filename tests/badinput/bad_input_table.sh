#!/bin/bash
# Table of malformed hook inputs (host only: no kernel module, no container needed).
#
#   tests/badinput/bad_input_table.sh /path/to/vtpm-hook
#
# Every setup row runs `vtpm-hook --state-root S --run-root R --policy P setup` with a bad OCI
# state, a bad config.json, a bad policy file or a bad key file and asserts: non-zero exit (not a
# signal, not a timeout), exactly one line on stderr, nothing on stdout, and nothing left behind:
# the state root, the run root, the statePath area and a directory outside every allowed root
# are listed the same before and after, and no new process named vtpm-emu.
# Unless a row gives its own --policy, P allows statePaths under the table's statePath area SP
# (besides the state root) and keeps the default annotationFields; rows about the defaults give
# a policy file holding `{}`. No row reads /etc/vtpm-hook/policy.json.
# Root only: a policy file must be owned by root.
# Teardown rows: an unknown container exits 0 with one warning line; malformed input exits
# non-zero with one line. Prints PASS:/FAIL: per row and "N passed, M failed".
set -u
# shellcheck source=../lib/harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"

[ $# -eq 1 ] && [ -x "$1" ] || fatal "usage: $0 /path/to/vtpm-hook"
[ "$(id -u)" -eq 0 ] || fatal "run as root (policy files must be owned by root)"
HOOK=$(realpath "$1")
ROW_TIMEOUT=${ROW_TIMEOUT:-20}
# Rows whose input could make a careless hook wait (a FIFO) must finish well within this.
FAST_TIMEOUT=${FAST_TIMEOUT:-5}

T=$(mktemp -d /tmp/vtpm-badinput.XXXXXX)
S=$T/state-root   # --state-root
R=$T/run-root     # --run-root
SP=$T/sp          # where the table's explicit statePaths point
IN=$T/in          # input files
POL=$T/policy     # policy files
KEYS=$T/keys      # key and password files
OUT=$T/outside    # a directory outside every allowed root
mkdir -p "$S" "$R" "$SP" "$IN" "$POL" "$KEYS" "$OUT"

# policy NAME TEXT [MODE]: a root-owned policy file (mode 0644 unless given); prints its path.
policy() {
  printf '%s' "$2" >"$POL/$1.json"
  chmod "${3:-644}" "$POL/$1.json"
  echo "$POL/$1.json"
}
P_DEFAULT=$(policy default '{}')
P_SP=$(policy sp "{\"statePathRoots\":[\"$SP\"]}")
P_ANN_SP=$(policy ann-sp "{\"statePathRoots\":[\"$SP\"],\"annotationFields\":[\"vtpmVersion\",\"pcrBanks\",\"createCerts\",\"statePath\"]}")

# A live process for the pid of rows that must get past the pid checks; in a mount namespace
# of its own (as root), since setup refuses a pid that shares the host's.
start_standin || fatal "the stand-in process did not start"
LIVE_PID=$STANDIN
sleep 1 &
DEAD_PID=$!
wait "$DEAD_PID"
at_exit 'rm -rf "$T"'
failures=()

snapshot() {
  find "$S" "$R" "$SP" "$OUT" -printf '%p %y %m %s\n' 2>&1 | LC_ALL=C sort
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
# real vTPM, even on a host that has /dev/vtpmx. Unless it gives --policy, it runs with $P_SP.
row() {
  local name=$1 expect=${2%%~*} want="" sub=$3 in=$4
  [[ $2 == *~* ]] && want=${2#*~}
  shift 4
  local opts=("$@")
  [[ " ${opts[*]} " == *" --vtpmx "* ]] || opts+=(--vtpmx /nonexistent/vtpmx)
  [[ " ${opts[*]} " == *" --policy "* ]] || opts+=(--policy "$P_SP")
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
    pass "$name (exit $rc): $err"
  else
    failures+=("$name")
    local IFS=';'
    fail "$name" "${why[*]} (exit $rc, stderr: $err)"
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
ann_row() {  # NAME REGEX ANNOTATIONS_JSON [bundle|-] [global options...]
  local name=$1 want=$2 ann=$3 b=${4:-$B_OK}
  [ "$b" = - ] && b=$B_OK
  shift 3
  [ $# -gt 0 ] && shift
  row "state: $name" "fail~$want" setup "$(input "$(state '"c1"' "$LIVE_PID" "\"$b\"" ",\"annotations\":$ann")")" "$@"
}
ann_row 'annotation io.vtpm-hook.vtpm "3"' 'must be "2", "1.2" or "none"' '{"io.vtpm-hook.vtpm":"3"}'
ann_row 'annotation io.vtpm-hook.vtpm with a newline' 'must be "2", "1.2" or "none"' '{"io.vtpm-hook.vtpm":"2\nx"}'
ann_row 'annotation io.vtpm-hook.create-certs "yes"' 'true" or "false' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.create-certs":"yes"}'
ann_row 'field annotation without io.vtpm-hook.vtpm' 'need' '{"io.vtpm-hook.pcr-banks":"sha256"}'
ann_row 'annotations io.vtpm-hook.vtpm and .vtpms both' 'exclude each other' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.vtpms":"[]"}'
ann_row 'annotation io.vtpm-hook.vtpms not JSON' 'not valid JSON' '{"io.vtpm-hook.vtpms":"[{"}'
ann_row 'annotation io.vtpm-hook.vtpms not an array' 'not an array' '{"io.vtpm-hook.vtpms":"{}"}'
ann_row 'annotation io.vtpm-hook.vtpms with a bad statePath (policy allows statePath)' \
  'not an absolute path' '{"io.vtpm-hook.vtpms":"[{\"statePath\":\"rel\"}]"}' - --policy "$P_ANN_SP"
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
cfg_row "vtpmVersion with a newline" '"vtpmVersion" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\",\"vtpmVersion\":\"2\\nx\"}]")"
cfg_row "statePath relative" 'not an absolute path' "$(vt '[{"statePath":"tpms/a"}]')"
cfg_row "statePath empty" '"statePath" is empty' "$(vt '[{"statePath":""}]')"
cfg_row "statePath is a number" '"statePath" is not a string' "$(vt '[{"statePath":5}]')"
cfg_row "statePath with newline" '"statePath" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\\nb\"}]")"
cfg_row "statePath with NUL escape" '"statePath" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\\u0000b\"}]")"
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
cfg_row "pcrBanks with a newline" '"pcrBanks" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\",\"pcrBanks\":\"sha256,\\nsha1\"}]")"
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

echo "== the policy file (--policy)"
pol_row() {  # NAME REGEX POLICY_FILE
  row "policy: $1" "fail~$2" setup "$(input "$(ok_state "$B_OK")")" --policy "$3"
}
pol_row "not JSON" 'policy file .*not valid JSON' "$(policy notjson 'statePathRoots: /x')"
pol_row "JSON array" 'policy file .*not a JSON object' "$(policy array '["/var/lib/tpms"]')"
pol_row "unknown key" 'unknown key "statePathRoot"' "$(policy unknown-key "{\"statePathRoot\":[\"$SP\"]}")"
pol_row "unknown annotationFields name" 'annotationFields.*"stateDir".*not a linux\.vtpms field' \
  "$(policy unknown-field '{"annotationFields":["vtpmVersion","stateDir"]}')"
pol_row "annotationFields is a string" '"annotationFields" is not an array' \
  "$(policy fields-string '{"annotationFields":"vtpmVersion"}')"
pol_row "statePathRoots is a string" '"statePathRoots" is not an array' \
  "$(policy roots-string "{\"statePathRoots\":\"$SP\"}")"
pol_row "statePathRoots entry is a number" '"statePathRoots" has a non-string entry' "$(policy roots-number '{"statePathRoots":[1]}')"
pol_row "relative root" 'statePathRoots.*not an absolute path' "$(policy relative '{"statePathRoots":["var/lib/tpms"]}')"
pol_row "root /" 'statePathRoots.*may not be /' "$(policy slash '{"statePathRoots":["/"]}')"
pol_row "root with a control character" 'statePathRoots contains a newline' "$(policy roots-ctl "{\"statePathRoots\":[\"$SP\\n\"]}")"
pol_row "group-writable file" 'writable by group or others' "$(policy group-writable "{\"statePathRoots\":[\"$SP\"]}" 664)"
pol_row "other-writable file" 'writable by group or others' "$(policy other-writable '{}' 646)"
f=$(policy not-root '{}')
chown 65534:65534 "$f"
pol_row "file not owned by root" 'not owned by root' "$f"
ln -s "$P_SP" "$POL/link.json"
pol_row "file is a symlink" 'cannot open policy file .*symbolic link' "$POL/link.json"
mkdir "$POL/dir.json"
pol_row "file is a directory" 'policy file .* is not a regular file' "$POL/dir.json"
mkfifo "$POL/fifo.json"
ROW_TIMEOUT=$FAST_TIMEOUT pol_row "file is a FIFO (must not hang)" 'policy file .* is not a regular file' "$POL/fifo.json"
pol_row "--policy names a missing file" 'policy file .*No such file' "$POL/missing.json"
pol_row "{} is valid (fails only at the missing vtpmx)" 'not available' "$P_DEFAULT"
pol_row "statePathRoots valid (fails only at the missing vtpmx)" 'not available' "$P_ANN_SP"

echo "== annotations may not choose host paths or users"
# Annotations are the workload author's: by default only vtpmVersion, pcrBanks, createCerts.
not_allowed() { echo "\"$1\" may not come from an annotation"; }
ann_row 'annotation state-path (refused by default)' "$(not_allowed statePath)" \
  "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$SP/a\"}" - --policy "$P_DEFAULT"
ann_row 'annotation state-path /etc + managed (refused by default)' 'may not come from an annotation' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.state-path":"/etc","io.vtpm-hook.state-path-is-managed":"true"}' \
  - --policy "$P_DEFAULT"
ann_row 'annotation state-path-is-managed (refused by default)' "$(not_allowed statePathIsManaged)" \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.state-path-is-managed":"true"}' - --policy "$P_DEFAULT"
ann_row 'annotation run-as (refused by default)' "$(not_allowed runAs)" \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.run-as":"1000:1000"}' - --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpms with statePath (refused by default)' "$(not_allowed statePath)" \
  "{\"io.vtpm-hook.vtpms\":\"[{\\\"statePath\\\":\\\"$SP/a\\\"}]\"}" - --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpms with runAs (refused by default)' "$(not_allowed runAs)" \
  '{"io.vtpm-hook.vtpms":"[{\"runAs\":\"0\"}]"}' - --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpms with encryptionKeyFile (refused by default)' \
  "$(not_allowed encryptionKeyFile)" '{"io.vtpm-hook.vtpms":"[{\"encryptionKeyFile\":\"/dev/zero\"}]"}' \
  - --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpms with encryptionPasswordFile (refused by default)' \
  "$(not_allowed encryptionPasswordFile)" '{"io.vtpm-hook.vtpms":"[{\"encryptionPasswordFile\":\"/etc/shadow\"}]"}' \
  - --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpms, second entry with statePath (refused by default)' \
  "$(not_allowed statePath)" \
  "{\"io.vtpm-hook.vtpms\":\"[{},{\\\"statePath\\\":\\\"$SP/b\\\"}]\"}" - --policy "$P_DEFAULT"
# podman and CRI-O copy annotations into config.json: they are the author's there too.
ann_row 'config.json annotation state-path (refused by default)' "$(not_allowed statePath)" '{}' \
  "$(bundle "{\"root\":{\"path\":\"rootfs\"},\"annotations\":{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$SP/a\"}}")" \
  --policy "$P_DEFAULT"
ann_row 'annotation io.vtpm-hook.vtpm with annotationFields []' "$(not_allowed vtpmVersion)" \
  '{"io.vtpm-hook.vtpm":"2"}' - --policy "$(policy no-fields '{"annotationFields":[]}')"
ann_row 'annotation pcr-banks with annotationFields [vtpmVersion]' "$(not_allowed pcrBanks)" \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.pcr-banks":"sha256"}' - \
  --policy "$(policy version-only '{"annotationFields":["vtpmVersion"]}')"
ann_row 'annotation pcr-banks with a control character' '"pcrBanks" contains a control character' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.pcr-banks":"sha256\u001b[2J"}'
ann_row 'annotation pcr-banks (allowed by default; fails only at the missing vtpmx)' 'not available' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.pcr-banks":"sha256"}' - --policy "$P_DEFAULT"
ann_row 'annotation create-certs (allowed by default; fails only at the missing vtpmx)' 'not available' \
  '{"io.vtpm-hook.vtpm":"2","io.vtpm-hook.create-certs":"true"}' - --policy "$P_DEFAULT"
# The policy allows statePath by annotation: still only under its statePathRoots, never under
# the state root (every container's default state and the CA live there).
ann_row 'annotation state-path of another container (policy allows statePath)' 'not under an allowed state root' \
  "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$S/c2\"}" - --policy "$P_ANN_SP"
ann_row 'annotation state-path outside the roots (policy allows statePath)' 'not under an allowed state root' \
  "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$OUT/a\"}" - --policy "$P_ANN_SP"
ann_row 'annotation state-path escaping with .. (policy allows statePath)' 'not under an allowed state root' \
  "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$SP/../outside/a\"}" - --policy "$P_ANN_SP"
ann_row 'annotation state-path under statePathRoots (policy allows it; fails only at the missing vtpmx)' \
  'not available' "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$SP/a\"}" - --policy "$P_ANN_SP"

echo "== statePath stays beneath an allowed root"
ROOTS_MSG='not under an allowed state root'
cfg_row "statePath outside the roots" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$OUT/a\"}]")"
cfg_row "statePath under SP without statePathRoots" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$SP/a\"}]")" \
  --policy "$P_DEFAULT"
cfg_row "statePath /etc, managed" "$ROOTS_MSG" "$(vt '[{"statePath":"/etc","statePathIsManaged":true}]')"
cfg_row "statePath is the state root" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$S\"}]")"
cfg_row "statePath is the state root (S/.)" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$S/.\"}]")"
cfg_row "statePath is a statePathRoots entry" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$SP\"}]")"
cfg_row "statePath is a prefix-sibling of the root (S-x)" "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$S-x/a\"}]")"
cfg_row "statePath escaping with .." "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$S/../outside/a\"}]")"
cfg_row "statePath escaping with a/../.." "$ROOTS_MSG" "$(vt "[{\"statePath\":\"$SP/a/../../outside\"}]")"
cfg_row "statePath is the CA's directory" 'overlaps .*/ca, which the hook keeps for itself' "$(vt "[{\"statePath\":\"$S/ca\"}]")"
cfg_row "statePath inside the CA's directory" 'overlaps .*/ca, which the hook keeps for itself' "$(vt "[{\"statePath\":\"$S/ca/x\"}]")"
row "config: container id ca with the default statePath" 'fail~container id "ca" names .*/ca, which the hook keeps for itself' setup \
  "$(input "$(state '"ca"' "$LIVE_PID" "\"$B_OK\"")")"
b=$(bundle "$(vt "[{\"statePath\":\"$SP/ca-tpm\"}]")")
row "config: container id ca with its own statePath (fails only at the missing vtpmx)" 'fail~not available' \
  setup "$(input "$(state '"ca"' "$LIVE_PID" "\"$b\"")")"
# Entry i>0 defaults to <state-root>/<id>@tpm<i>, beside entry 0's directory.
cfg_row "entry 1's default is S/c1@tpm1 (used twice)" 'used twice' \
  "$(vt "[{\"statePath\":\"$S/c1@tpm1\"},{}]")"
cfg_row "statePath with a tab" '"statePath" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\\tb\"}]")"
cfg_row "statePath with ESC" '"statePath" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\\u001b[2Jb\"}]")"
cfg_row "statePath with DEL" '"statePath" contains a control character' "$(vt "[{\"statePath\":\"$SP/a\\u007fb\"}]")"
cfg_row "pcrBanks with ESC" '"pcrBanks" contains a control character' "$(vt '[{"pcrBanks":"sha256\u001b[2J"}]')"
cfg_row "runAs with BEL" '"runAs" contains a control character' "$(vt '[{"runAs":"root\u0007"}]')"
# Symlinks and foreign directories below a root: the hook walks from the root's fd with
# openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|...). --vtpmx /dev/null gets these rows past the
# module check to where the state dir is opened; the symlink targets sit in SP, so a hook that
# followed them would leave something the snapshot sees.
mkdir "$SP/target"
ln -s "$SP/target" "$S/link"
ln -s "$OUT" "$SP/link-out"
cfg_row "statePath is a symlink below the root" 'has a symbolic link in it' "$(vt "[{\"statePath\":\"$S/link\"}]")" \
  --vtpmx /dev/null
cfg_row "statePath through a symlink below the root" 'has a symbolic link in it' "$(vt "[{\"statePath\":\"$S/link/a\"}]")" \
  --vtpmx /dev/null
cfg_row "statePath through a symlink below a statePathRoots entry" 'has a symbolic link in it' \
  "$(vt "[{\"statePath\":\"$SP/link-out/a\"}]")" --vtpmx /dev/null
ln -s "$SP/target" "$S/c1"
cfg_row "default statePath S/c1 is a symlink" 'has a symbolic link in it' "$GOOD_CONFIG" --vtpmx /dev/null
rm "$S/c1"
# A bind mount below the root (RESOLVE_NO_XDEV), made in a mount namespace of the hook's own
# so that nothing on the host changes: S/mnt shows OUT there.
mkdir "$S/mnt"
if unshare --mount --propagation private true 2>/dev/null; then
  cat >"$T/hook-with-bind-mount" <<EOF
#!/bin/bash
exec unshare --mount --propagation private /bin/bash -c \
  'mount --bind "\$0" "\$1" || exit 99; shift; exec "\$@"' "$OUT" "$S/mnt" "$HOOK" "\$@"
EOF
  chmod +x "$T/hook-with-bind-mount"
  HOOK=$T/hook-with-bind-mount cfg_row "statePath through a bind mount below the root" \
    'crosses a mount point' "$(vt "[{\"statePath\":\"$S/mnt/a\"}]")" --vtpmx /dev/null
else
  echo "SKIP: statePath through a bind mount below the root (no mount namespaces here)"
fi
mkdir "$SP/root-owned"
cfg_row "runAs with an existing statePath it does not own" 'belongs to uid 0' \
  "$(vt "[{\"statePath\":\"$SP/root-owned\",\"runAs\":\"1000:1000\"}]")" --vtpmx /dev/null

echo "== key files"
head -c 32 /dev/urandom >"$KEYS/good.key"
chmod 600 "$KEYS/good.key"
mkfifo "$KEYS/fifo.key"
mkdir "$KEYS/dir.key"
ln -s "$KEYS/good.key" "$KEYS/link.key"
install -m 620 "$KEYS/good.key" "$KEYS/group-writable.key"
install -m 602 "$KEYS/good.key" "$KEYS/other-writable.key"
head -c 5000 /dev/urandom >"$KEYS/big.key"
chmod 600 "$KEYS/big.key"
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' 'p' >"$KEYS/big.pwd"
chmod 600 "$KEYS/big.pwd"
mkfifo "$KEYS/fifo.pwd"
key_row() {  # NAME REGEX FIELD PATH
  cfg_row "$1" "$2" "$(vt "[{\"$3\":\"$4\"}]")"
}
ROW_TIMEOUT=$FAST_TIMEOUT key_row "encryptionKeyFile is a FIFO (must not hang)" 'not a regular file' encryptionKeyFile "$KEYS/fifo.key"
ROW_TIMEOUT=$FAST_TIMEOUT key_row "encryptionPasswordFile is a FIFO (must not hang)" 'not a regular file' encryptionPasswordFile "$KEYS/fifo.pwd"
key_row "encryptionKeyFile is a directory" 'not a regular file' encryptionKeyFile "$KEYS/dir.key"
ROW_TIMEOUT=$FAST_TIMEOUT key_row "encryptionKeyFile is /dev/zero" 'not a regular file' encryptionKeyFile /dev/zero
key_row "encryptionPasswordFile is /dev/urandom" 'not a regular file' encryptionPasswordFile /dev/urandom
key_row "encryptionKeyFile is a symlink" 'cannot open state key file .*symbolic link' encryptionKeyFile "$KEYS/link.key"
key_row "encryptionKeyFile is group-writable" 'writable by group or others' encryptionKeyFile "$KEYS/group-writable.key"
key_row "encryptionKeyFile is other-writable" 'writable by group or others' encryptionKeyFile "$KEYS/other-writable.key"
key_row "encryptionKeyFile larger than 4 KiB" 'too large' encryptionKeyFile "$KEYS/big.key"
key_row "encryptionPasswordFile larger than 1 MiB" 'too large' encryptionPasswordFile "$KEYS/big.pwd"
key_row "encryptionKeyFile missing" 'cannot open state key file' encryptionKeyFile "$KEYS/missing.key"
key_row "encryptionKeyFile valid (fails only at the missing vtpmx)" 'not available' encryptionKeyFile "$KEYS/good.key"

echo "== the hook's own directories stay out of every annotation's reach (issue 18, holes 5 and 11)"
# A policy whose statePathRoots or keyFileRoots are, contain or lie in the state root, the run
# root or the CA's directory is refused at load, whatever the container asks for: here an
# annotation naming another container's state, with managed deletion.
ALL_ANN='"vtpmVersion","statePath","statePathIsManaged","encryptionKeyFile","encryptionPasswordFile"'
ann_row 'policy statePathRoots contains the state root (annotation names another container, managed)' \
  "\"statePathRoots\" entry $T contains the state root $S, which no annotation may reach" \
  "{\"io.vtpm-hook.vtpm\":\"2\",\"io.vtpm-hook.state-path\":\"$S/c2\",\"io.vtpm-hook.state-path-is-managed\":\"true\"}" - \
  --policy "$(policy wide "{\"statePathRoots\":[\"$T\"],\"annotationFields\":[$ALL_ANN]}")"
pol_row "statePathRoots entry is the state root" "entry $S is the state root" \
  "$(policy is-state-root "{\"statePathRoots\":[\"$S\"]}")"
pol_row "statePathRoots entry inside the run root" "entry $R/tpms lies in the run root" \
  "$(policy in-run-root "{\"statePathRoots\":[\"$SP\",\"$R/tpms\"]}")"
ln -s "$T" "$POL/root-link"
pol_row "statePathRoots entry is a symlink to an ancestor of the state root" 'contains the state root .*through symlinks' \
  "$(policy root-link "{\"statePathRoots\":[\"$POL/root-link\"]}")"
pol_row "keyFileRoots contains the state root" "\"keyFileRoots\" entry $T contains the state root" \
  "$(policy key-roots-wide "{\"keyFileRoots\":[\"$T\"]}")"
mkdir -p "$T/ca-elsewhere"
row "policy: keyFileRoots is the CA's directory (--ca-key elsewhere)" "fail~entry $T/ca-elsewhere is the CA's directory" \
  setup "$(input "$(ok_state "$B_OK")")" --ca-key "$T/ca-elsewhere/key.pem" --ca-cert "$T/ca-elsewhere/cert.pem" \
  --policy "$(policy key-roots-ca "{\"keyFileRoots\":[\"$T/ca-elsewhere\"]}")"
pol_row "kubernetesIdentityIncludesPodUid is a string" '"kubernetesIdentityIncludesPodUid" is not a boolean' \
  "$(policy uid-string '{"kubernetesIdentity":"containerd","kubernetesIdentityIncludesPodUid":"yes"}')"
pol_row "kubernetesIdentityIncludesPodUid without kubernetesIdentity" 'needs "kubernetesIdentity"' \
  "$(policy uid-alone '{"kubernetesIdentityIncludesPodUid":true}')"
# Key files from config.json (the runtime's): anywhere as before, but never the CA's key (as a
# password), another container's key or state beside its TPM, or a run record. The files exist:
# a hook that only checked the file itself would take them.
mkdir -p "$S/ca" "$S/c2"
head -c 32 /dev/urandom >"$S/c2/key"
printf 'ca key\n' >"$S/ca/ek-ca-key.pem"
printf 'ca key\n' >"$T/ca-elsewhere/key.pem"
chmod 600 "$S/c2/key" "$S/ca/ek-ca-key.pem" "$T/ca-elsewhere/key.pem"
NO_KEY_HERE='where no key file may be'
key_row "encryptionPasswordFile is the CA's key" "lies in the state root $S, $NO_KEY_HERE" \
  encryptionPasswordFile "$S/ca/ek-ca-key.pem"
cfg_row "encryptionPasswordFile is the CA's key (--ca-key elsewhere)" "lies in the CA's directory $T/ca-elsewhere, $NO_KEY_HERE" \
  "$(vt "[{\"encryptionPasswordFile\":\"$T/ca-elsewhere/key.pem\"}]")" \
  --ca-key "$T/ca-elsewhere/key.pem" --ca-cert "$T/ca-elsewhere/cert.pem"
key_row "encryptionKeyFile is another container's key under the state root" "lies in the state root $S, $NO_KEY_HERE" \
  encryptionKeyFile "$S/c2/key"
key_row "encryptionKeyFile under the run root" "lies in the run root $R, $NO_KEY_HERE" encryptionKeyFile "$R/c2.json"
# Its path is checked as a string: no symlink may lie anywhere on it, not only at its end.
ln -s "$S/c2" "$KEYS/dir-link"
key_row "encryptionKeyFile through a directory symlink into the state root" 'cannot open state key file .*symbolic link' \
  encryptionKeyFile "$KEYS/dir-link/key"
install -o 65534 -g 65534 -m 600 "$KEYS/good.key" "$KEYS/nobody.key"
key_row "encryptionKeyFile owned by another user" 'belongs to uid 65534, not to uid 0' encryptionKeyFile "$KEYS/nobody.key"
cfg_row "encryptionKeyFile owned by the runAs user (fails only at the missing vtpmx)" 'not available' \
  "$(vt "[{\"statePath\":\"$SP/nobody\",\"runAs\":\"65534:65534\",\"encryptionKeyFile\":\"$KEYS/nobody.key\"}]")"
# From an annotation (the policy allows the field): only beneath its keyFileRoots; none by default.
P_ANN_KEYS=$(policy ann-keys "{\"statePathRoots\":[\"$SP\"],\"annotationFields\":[$ALL_ANN]}")
ann_row 'annotation encryptionKeyFile without keyFileRoots' 'not under a policy keyFileRoots entry \(none\)' \
  "{\"io.vtpm-hook.vtpms\":\"[{\\\"encryptionKeyFile\\\":\\\"$KEYS/good.key\\\"}]\"}" - --policy "$P_ANN_KEYS"
P_ANN_KEYROOT=$(policy ann-keyroot "{\"keyFileRoots\":[\"$KEYS\"],\"annotationFields\":[$ALL_ANN]}")
ann_row 'annotation encryptionPasswordFile outside keyFileRoots (the CA key)' "lies in the state root $S, $NO_KEY_HERE" \
  "{\"io.vtpm-hook.vtpms\":\"[{\\\"encryptionPasswordFile\\\":\\\"$S/ca/ek-ca-key.pem\\\"}]\"}" - --policy "$P_ANN_KEYROOT"
ann_row 'annotation encryptionPasswordFile outside keyFileRoots' "not under a policy keyFileRoots entry \\($KEYS\\)" \
  "{\"io.vtpm-hook.vtpms\":\"[{\\\"encryptionPasswordFile\\\":\\\"$T/policy/default.json\\\"}]\"}" - --policy "$P_ANN_KEYROOT"
ann_row 'annotation encryptionKeyFile beneath keyFileRoots (fails only at the missing vtpmx)' 'not available' \
  "{\"io.vtpm-hook.vtpms\":\"[{\\\"encryptionKeyFile\\\":\\\"$KEYS/good.key\\\"}]\"}" - --policy "$P_ANN_KEYROOT"
rm -rf "$S/ca" "$S/c2" "$KEYS/dir-link"

echo "== Kubernetes identity (issue 18, hole 8)"
P_K8S=$(policy k8s '{"kubernetesIdentity":"containerd"}')
K8S_NS=$(printf 'n%.0s' $(seq 63))
K8S_POD=$(printf 'p%.0s' $(seq 253))
K8S_CTR=$(printf 'c%.0s' $(seq 63))
k8s_ann() {  # NS POD CONTAINER [extra JSON members]
  printf '{"io.kubernetes.cri.sandbox-namespace":"%s","io.kubernetes.cri.sandbox-name":"%s","io.kubernetes.cri.container-name":"%s","io.kubernetes.cri.container-type":"container"%s}' \
    "$1" "$2" "$3" "${4:-}"
}
# 63+253+63 characters: a hashed directory name; --vtpmx /dev/null gets setup past mkdir to the
# proxy ioctl (an unhashed name fails mkdir with ENAMETOOLONG). The kubernetes/ directory
# exists, so nothing is left behind when the TPM's directory is removed again.
mkdir -p "$S/kubernetes"
ann_row 'Kubernetes names of 63+253+63 characters (fail only at the proxy ioctl)' 'VTPM_PROXY|/dev/null' \
  "$(k8s_ann "$K8S_NS" "$K8S_POD" "$K8S_CTR")" - --policy "$P_K8S" --vtpmx /dev/null
ann_row 'kubernetesIdentityIncludesPodUid and no sandbox-uid' 'io\.kubernetes\.cri\.sandbox-uid is missing' \
  "$(k8s_ann shop db-0 postgres)" - \
  --policy "$(policy k8s-uid '{"kubernetesIdentity":"containerd","kubernetesIdentityIncludesPodUid":true}')"
ann_row 'kubernetesIdentityIncludesPodUid and a sandbox-uid with ../' 'sandbox-uid is not a Kubernetes name' \
  "$(k8s_ann shop db-0 postgres ',"io.kubernetes.cri.sandbox-uid":"../x"')" - --policy "$POL/k8s-uid.json"
rmdir "$S/kubernetes"

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
  pass "teardown: corrupt run record is dropped with one warning"
else
  failures+=("teardown: corrupt run record")
  fail "teardown: corrupt run record" "exit $rc, stderr: $(tr '\n' '|' <"$T/stderr")"
fi
rm -f "$R/c2.json"

echo
[ "$FAILED" -eq 0 ] || printf '  failed: %s\n' "${failures[@]}"
finish
