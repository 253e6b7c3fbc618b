#!/bin/bash
# tests/crash/crash_safety.sh - the TPM state survives kill -9 at any moment.
#
#   tests/crash/crash_safety.sh [path/to/vtpm-hook]     (or env VTPM_HOOK)
#
# Runs on the host (no kernel support, no VM): `vtpm-hook emulate` serves a raw
# TPM command stream on stdin/stdout. A python3 driver defines one NV index
# (owner auth, TPMA_NV_NO_DA, 8 bytes) once, then per round:
#   1. starts `vtpm-hook emulate --state-dir D`, writes an incrementing counter
#      into the NV index with TPM2_NV_Write (password session TPM_RS_PW, empty
#      auth), one command at a time, each response read back (acknowledged);
#   2. kills the emulator with SIGKILL at a random moment: every 4th round within
#      its first milliseconds (state load, TPM2_Startup), the others at a random
#      moment after the round's first acknowledged write (while writing);
#   3. starts a fresh emulator and reads the index with TPM2_NV_Read: the state
#      must load (exit 0, no error line) and the value must be the last
#      acknowledged write, or the one after it when a write was sent but its
#      answer not read (it may or may not have landed).
# The next round continues from the value read. Every writing round must have been
# killed after at least one acknowledged write (else the kills proved nothing about writes).
#
# Environment: CRASH_ROUNDS (30), CRASH_SEED (random; printed, to replay a run),
# CRASH_MAX_DELAY_MS (300: upper bound of the kill moment), KEEP=1 (keep the
# work directory).
# Prints one line per round, "kill -9 rounds survived: N" and "N passed, M failed".
# Exit status: 0 all passed, 1 some failed, 2 environment unusable.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# fatal and at_exit (the rounds themselves are counted by the Python driver below)
# shellcheck source=../lib/harness.sh
. "$HERE/../lib/harness.sh"
HOOK=${1:-${VTPM_HOOK:-$ROOT/build/vtpm-hook}}
[ -x "$HOOK" ] || fatal "no executable vtpm-hook at $HOOK"
PY=$(command -v python3) || fatal "python3 not installed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vtpm-crash.XXXXXX") || fatal "mktemp failed"
[ "${KEEP:-0}" = 1 ] && echo "# work directory kept: $WORK" || at_exit 'rm -rf "$WORK"'

export CRASH_ROUNDS=${CRASH_ROUNDS:-30}
export CRASH_SEED=${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
export CRASH_MAX_DELAY_MS=${CRASH_MAX_DELAY_MS:-300}

PYTHONPATH="$(cd "$(dirname "$0")/../lib" && pwd)" "$PY" - "$HOOK" "$WORK" <<'PY'
import os, random, signal, struct, subprocess, sys, threading, time
import tpm2cmd

HOOK, WORK = sys.argv[1], sys.argv[2]
ROUNDS = int(os.environ["CRASH_ROUNDS"])
SEED = int(os.environ["CRASH_SEED"])
MAX_DELAY = int(os.environ["CRASH_MAX_DELAY_MS"]) / 1000.0
STATE = os.path.join(WORK, "state")
NV_INDEX = 0x01500020
rng = random.Random(SEED)
print("# vtpm-hook %s, %d rounds, seed %d, kill moment in [0, %d] ms"
      % (HOOK, ROUNDS, SEED, MAX_DELAY * 1000), flush=True)

# (tests/lib/tpm2cmd.py) sessions with continueSession, as before
def nv_define(size):
    return tpm2cmd.nv_define(NV_INDEX, size, session_attrs=1)

def nv_write(value):
    return tpm2cmd.nv_write(NV_INDEX, struct.pack(">Q", value), session_attrs=1)

def nv_read():
    return tpm2cmd.nv_read(NV_INDEX, 8, session_attrs=1)

class Emulator:
    def __init__(self, tag):
        self.err_path = os.path.join(WORK, "emulate-%s.err" % tag)
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen([HOOK, "emulate", "--state-dir", STATE], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err, bufsize=0)

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.p.stdout.read(n - len(out))
            if not chunk:
                raise EOFError("emulator closed its output after %d of %d bytes" % (len(out), n))
            out += chunk
        return out

    def send(self, cmd):
        self.p.stdin.write(cmd)

    def receive(self):
        hdr = self._read(10)
        tag, size, rc = struct.unpack(">HII", hdr)
        if size < 10 or size > 4096:
            raise ValueError("bad response size %d" % size)
        return rc, hdr + self._read(size - 10)

    def call(self, cmd):
        self.send(cmd)
        return self.receive()

    def close(self, timeout=20):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill(); self.p.wait()
            rc = "timeout"
        self.err.close()
        with open(self.err_path, "rb") as f:
            err = f.read().decode(errors="replace").strip()
        return rc, err

def read_value(tag):
    """A fresh emulator; returns (value or None, problem or None)."""
    e = Emulator(tag)
    try:
        rc, resp = e.call(nv_read())
    except Exception as ex:
        rc, resp = None, repr(ex)
    erc, err = e.close()
    if rc is None:
        return None, "no NV_Read answer (%s); emulate exit %s: %s" % (resp, erc, err[:300])
    if erc != 0 or err:
        return None, "emulate exit %s, stderr: %s" % (erc, err[:300])
    if rc != 0:
        return None, "TPM2_NV_Read rc 0x%x" % rc
    # header(10) parameterSize(4) TPM2B(2 + 8)
    n = struct.unpack(">H", resp[14:16])[0]
    if n != 8:
        return None, "TPM2_NV_Read returned %d bytes" % n
    return struct.unpack(">Q", resp[16:24])[0], None

passed = failed = survived = killed_writing = 0
total_acked = 0

# ---- once: define the index and write 0, with a clean stop
e = Emulator("init")
try:
    rc, _ = e.call(nv_define(8))
    rc2, _ = e.call(nv_write(0)) if rc == 0 else (None, None)
except Exception as ex:
    rc, rc2 = repr(ex), None
erc, err = e.close()
if rc != 0 or rc2 != 0 or erc != 0:
    print("FAIL: init: NV_DefineSpace %s, NV_Write %s, emulate exit %s: %s" % (rc, rc2, erc, err[:300]))
    print("kill -9 rounds survived: 0")
    print("0 passed, 1 failed")
    sys.exit(1)
value, problem = read_value("init-check")
if problem or value != 0:
    print("FAIL: init: read back %s (%s)" % (value, problem))
    print("kill -9 rounds survived: 0")
    print("0 passed, 1 failed")
    sys.exit(1)
print("PASS: init (NV index 0x%08x defined, 0 written, read back after a clean stop)" % NV_INDEX)
passed += 1

t_start = time.monotonic()
for rnd in range(1, ROUNDS + 1):
    # every 4th round dies while starting (state load, Startup); the others while writing: the
    # kill moment counts from the round's first acknowledged write
    writing = rnd % 4 != 1
    delay = rng.uniform(0, MAX_DELAY) if writing else rng.uniform(0, 0.015)
    e = Emulator("r%d" % rnd)
    killed = threading.Event()
    first_ack = threading.Event()
    def killer(p=e.p):
        if writing:
            first_ack.wait(30)          # (no write in 30 s: the round fails below)
        time.sleep(delay)
        try:
            p.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        killed.set()
    th = threading.Thread(target=killer, daemon=True)
    th.start()
    acked, in_flight, writes, stop_err = value, None, 0, None
    while True:
        nxt = acked + 1
        try:
            in_flight = nxt
            e.send(nv_write(nxt))
            rc, _ = e.receive()
        except (BrokenPipeError, EOFError, ValueError, OSError) as ex:
            stop_err = type(ex).__name__
            break
        if rc != 0:
            stop_err = "NV_Write rc 0x%x" % rc
            break
        acked, in_flight = nxt, None
        writes += 1
        first_ack.set()
        if writes > 200000:
            stop_err = "no kill"
            break
    th.join()
    status = e.p.wait()
    e.close()
    total_acked += writes
    was_killed = status == -signal.SIGKILL
    new, problem = read_value("r%d-check" % rnd)
    allowed = [acked] + ([in_flight] if in_flight is not None else [])
    line = ("round %d: kill %.1f ms after %s, %d writes acknowledged (last %d)%s, emulator %s; read back %s"
            % (rnd, delay * 1000, "the first acknowledged write" if writing else "the start", writes, acked,
               ", %d sent unacknowledged" % in_flight if in_flight is not None else "",
               "killed -9" if was_killed else "exit %s (%s)" % (status, stop_err), new))
    if not was_killed:
        problem = problem or "the emulator was not killed by SIGKILL (exit %s, %s)" % (status, stop_err)
    elif writing and writes == 0:
        problem = problem or "a writing round without an acknowledged write (%s)" % stop_err
    elif writing:
        killed_writing += 1
    elif stop_err and stop_err.startswith("NV_Write rc"):
        problem = problem or stop_err
    if problem is None and new not in allowed:
        problem = "value %s, wanted %s" % (new, " or ".join(map(str, allowed)))
    if problem:
        failed += 1
        print("FAIL: %s: %s" % (line, problem), flush=True)
        if new is None:
            # the state does not load: nothing later can pass; keep the evidence
            os.system("ls -la %s" % STATE)
            break
        value = new
    else:
        passed += 1
        survived += 1 if was_killed else 0
        print("PASS: " + line, flush=True)
        value = new
elapsed = time.monotonic() - t_start
left = sorted(f for f in os.listdir(STATE))
print("    state dir after the last round: %s" % " ".join(left))
print("FIGURE: crash_writes_acknowledged=%d in %d rounds, %.1f s (%.0f NV writes/s incl. restarts)"
      % (total_acked, ROUNDS, elapsed, total_acked / elapsed if elapsed else 0))
writing_rounds = sum(1 for r in range(1, ROUNDS + 1) if r % 4 != 1)
print("kill -9 rounds survived: %d (%d of them killed after acknowledged writes)" % (survived, killed_writing))
# the claim is about writes: every writing round killed while writing, acknowledged writes done
if killed_writing < writing_rounds or total_acked < writing_rounds:
    failed += 1
    print("FAIL: kills during NV writes: %d of %d writing rounds killed after an acknowledged write, "
          "%d writes acknowledged in all" % (killed_writing, writing_rounds, total_acked))
print("%d passed, %d failed" % (passed, failed))
sys.exit(0 if failed == 0 else 1)
PY
