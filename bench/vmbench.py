#!/usr/bin/env python3
"""bench/vmbench.py - runs INSIDE the test VM (tests/vm/run-vm.sh), as root.

Measures vtpm-hook against swtpm (chardev --vtpm-proxy) side by side in the same boot:
setup latency, raw command round trips through /dev/tpmrmN, emulator memory, setup with
EK certificates, the libtpms floor, a profile of vtpm-hook's setup path, a whole `runc run`
without a TPM / with vtpm-hook / with a swtpm-based hook (bench/swtpm-hook.sh), and many
live vTPMs in one VM (setup time, memory, and a clean teardown).
vtpm-hook runs in two modes where it matters (setup, round trips, memory, `runc run`):
"template" (the default policy "template": "auto"; emulators forked by the template process
`vtpm-hook template`, which the driver starts for the step, as a systemd unit would, and stops
after it) and "fork" (policy "template": "off": the hook forks the emulator itself). A setup
uses the template only for a container with a cgroup (v2) of its own, so the by-hand
containers of those steps each get one (Sleeper(cgroup=True)); every setup of those steps is
checked in the hook's debug log: "emulator N forked by the template T" in template mode (with
T the driver's template), no such line in fork mode.
Progress goes to stderr; the results are one line on stdout: "BENCH-RESULT <json>".

  vmbench.py HOOK FLOOR [--quick] [--only=STEP,...]    (--only: those steps alone, to debug one)

Every wait is bounded; a stuck step raises and the run fails (no silent partial numbers).
"""
import copy
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

from memprofile import profile  # bench/, copied beside
from tpm2cmd import cmd, create_primary, get_random, pcr_extend, rc_of  # tests/lib, copied beside

HOOK, FLOOR = sys.argv[1], sys.argv[2]
QUICK = "--quick" in sys.argv
ONLY = [a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")]
SWTPM_HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swtpm-hook.sh")
W = "/run/vtpm-bench"
SR, RR, BUN = W + "/state", W + "/run", W + "/bundles"
LOG = W + "/hook.log"
CA_KEY, CA_CERT = W + "/ca/key.pem", W + "/ca/cert.pem"
N_SETUP = 3 if QUICK else 15
N_CERTS_HOOK = 2 if QUICK else 4
N_CERTS_SWTPM = 1 if QUICK else 2
N_MEM = [1, 3] if QUICK else [1, 10, 50]
RTT_N = {"GetRandom(8)": 30 if QUICK else 200, "PCR_Extend": 30 if QUICK else 200,
         "CreatePrimary ECC P-256": 5 if QUICK else 30, "CreatePrimary RSA 2048": 3 if QUICK else 10}
N_RUNC = 2 if QUICK else 13                 # `runc run` per kind, interleaved
N_SCALE = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--scale=")),
                   20 if QUICK else 200))   # live vTPMs at once
SCALE_AT = [N_SCALE * k // 4 for k in (1, 2, 3, 4)]   # memory checkpoints
RUNC_TIMEOUT_S = 120       # one `runc run`, hooks included
BATCH = 10                 # memory: instances started concurrently
RTT_BUDGET_S = 45          # per command and implementation: stop early after this long
CG_ROOT = "/sys/fs/cgroup"  # cgroup v2 (tests/vm/run-vm.sh's default)
MODES = ("vtpm-hook", "vtpm-hook fork")   # result keys: template mode (the default), hook fork
POLICY = {"vtpm-hook": W + "/policy-template.json", "vtpm-hook fork": W + "/policy-fork.json"}
T0 = time.monotonic()
RESULT = {}


def log(*a):
    print("[%6.1fs]" % (time.monotonic() - T0), *a, file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def wait_until(cond, timeout, what, step=0.002):
    end = now() + timeout
    while now() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError("timed out after %ss waiting for %s" % (timeout, what))


def stats(xs):
    xs = sorted(xs)
    if not xs:
        return {}

    def pct(p):  # nearest-rank percentile
        k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
        return xs[k]
    return {"n": len(xs), "median": statistics.median(xs), "p90": pct(90), "p99": pct(99),
            "min": xs[0], "max": xs[-1]}


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# ------------------------------------------------------------------ containers (by hand)
CG_SEQ = [0]


class Sleeper:
    """A process in its own mount namespace: the 'container' a hook is run for. cgroup=True:
    in a cgroup v2 directory of its own (as a runtime's container is), so that the hook gives
    it a keeper and may use the template; otherwise it shares the driver's (root) cgroup."""

    def __init__(self, cgroup=False):
        self.cg = None
        if cgroup:
            CG_SEQ[0] += 1
            self.cg = "%s/vtpm-bench-%d" % (CG_ROOT, CG_SEQ[0])
            os.mkdir(self.cg)
        self.p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "100000"],
                                  stdin=subprocess.DEVNULL)
        if self.cg:
            try:   # (unshare execs sleep: one pid, moved whenever it is written)
                with open(self.cg + "/cgroup.procs", "w") as f:
                    f.write("%d\n" % self.p.pid)
            except OSError:
                self.p.kill()
                self.p.wait()
                raise
        me = os.readlink("/proc/self/ns/mnt")

        def unshared():
            try:
                return os.readlink("/proc/%d/ns/mnt" % self.p.pid) != me and \
                    open("/proc/%d/comm" % self.p.pid).read().strip() == "sleep"
            except OSError:
                return False
        wait_until(unshared, 20, "unshare -m sleep")
        self.pid = self.p.pid

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)

    def remove_cgroup(self):
        """After kill: its cgroup goes (the keeper may have removed it already)."""
        if not self.cg:
            return

        def removed():
            try:
                os.rmdir(self.cg)
            except FileNotFoundError:
                return True
            except OSError:   # EBUSY while the kernel still counts the killed process
                return False
            return True
        wait_until(removed, 20, "the cgroup %s to be removable" % self.cg, step=0.02)


def gone(pid):
    try:
        return ") Z " in open("/proc/%d/stat" % pid).read()
    except OSError:
        return True


def bundle(name, vtpms):
    b = "%s/%s" % (BUN, name)
    shutil.rmtree(b, ignore_errors=True)
    os.makedirs(b + "/rootfs/dev")
    cfg = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"args": ["/bin/sh"], "cwd": "/"}, "linux": {"vtpms": vtpms}}
    with open(b + "/config.json", "w") as f:
        json.dump(cfg, f)
    return b


def hook_opts(sr=SR, rr=RR, policy=None):
    return ["--state-root", sr, "--run-root", rr, "--log-file", LOG, "--log-level", "debug",
            "--ca-key", CA_KEY, "--ca-cert", CA_CERT] + (["--policy", policy] if policy else [])


def hook_cmd(sub, extra=(), sr=SR, rr=RR, policy=None):
    return [HOOK, *hook_opts(sr, rr, policy), sub, *extra]


def forked_by(text, emu_pid):
    """The template pid that the hook's debug log says forked emulator EMU_PID, or None."""
    m = re.search(r"emulator %d forked by the template (\d+)" % emu_pid, text)
    return int(m.group(1)) if m else None


def log_size():
    try:
        return os.path.getsize(LOG)
    except OSError:
        return 0


def log_since(offset):
    with open(LOG, errors="replace") as f:
        f.seek(offset)
        return f.read()


class HookTpm:
    """A by-hand container and its `vtpm-hook setup`. template: None (not checked; by-hand
    containers without a cgroup, which never use the template), or the running Template that
    must have forked the emulator, or False (the emulator must be the hook's own fork)."""

    def __init__(self, cid, vtpms, defer=False, sr=SR, rr=RR, policy=None, cgroup=False,
                 template=None):
        self.cid, self.sr, self.rr, self.policy = cid, sr, rr, policy
        self.template = template
        self.sleeper = Sleeper(cgroup)
        self.bundle = bundle(cid, vtpms)
        self.state = json.dumps({"ociVersion": "1.0.2", "id": cid, "status": "creating",
                                 "pid": self.sleeper.pid, "bundle": self.bundle})
        with open(LOG, "a") as f:
            f.write("BENCH-MARK start %s\n" % cid)
        self.log_from = log_size()
        self.t = now()
        self.proc = subprocess.Popen(hook_cmd("setup", ["--no-device-cgroup"], sr, rr, policy),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        if not defer:
            self.finish()

    def finish(self):
        cid = self.cid
        _, err = self.proc.communicate(self.state.encode(), timeout=120)
        self.seconds = now() - self.t
        if self.proc.returncode != 0:
            self.sleeper.kill()
            self.sleeper.remove_cgroup()
            raise RuntimeError("vtpm-hook setup %s failed: %s" % (cid, err.decode()))
        rec = json.load(open("%s/%s.json" % (self.rr, cid)))["vtpms"][0]
        self.num = rec["hostTpmNum"]
        self.pid = rec["emulatorPid"]
        self.rm = "/dev/tpmrm%d" % self.num
        if not os.path.exists(self.rm):
            raise RuntimeError("setup returned but %s does not exist" % self.rm)
        if self.template is not None:
            check_forked_by(log_since(self.log_from), self.pid, self.template,
                            "setup %s" % cid)

    def stop(self):
        r = subprocess.run(hook_cmd("teardown", (), self.sr, self.rr, self.policy),
                           input=self.state.encode(),
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("vtpm-hook teardown failed: " + r.stderr.decode())
        self.sleeper.kill()
        wait_until(lambda: gone(self.pid), 20, "vtpm-emu exit")
        wait_until(lambda: not os.path.exists(self.rm), 20, self.rm + " to go")
        self.sleeper.remove_cgroup()


def check_forked_by(text, emu_pid, template, what):
    """template: the Template that must have forked EMU_PID, or False: none may have."""
    tpid = forked_by(text, emu_pid)
    if template is False and tpid is not None:
        raise RuntimeError("%s: emulator %d was forked by the template %d although the policy "
                           "says \"template\": \"off\"" % (what, emu_pid, tpid))
    if template is not False and tpid != template.pid:
        raise RuntimeError("%s: emulator %d was %s, not by the running template %d: the bench "
                           "would measure the wrong path; the hook's log: %s" % (
                               what, emu_pid, "forked by the hook" if tpid is None else
                               "forked by another template %d" % tpid, template.pid,
                               " | ".join(l for l in text.splitlines()
                                          if "template" in l)[-600:]))


TEMPLATE_SEQ = [0]


class Template:
    """`vtpm-hook template --idle-exit 0` in the foreground, as a systemd unit would run it:
    started for one step's template mode, stopped (SIGTERM) after it."""

    def __init__(self, rr=RR):
        TEMPLATE_SEQ[0] += 1
        self.rr = rr
        self.sock = rr + "/template.sock"
        self.log = "%s/template-%d.log" % (W, TEMPLATE_SEQ[0])
        left = live_named("vtpm-template")
        if left:
            raise RuntimeError("a template runs already (pids %s): the bench would not know "
                               "which one serves" % left)
        t = now()
        # (stderr to a file, not a pipe nobody reads: its log lines go there too, and a full
        # pipe would stop it after some 1400 forks)
        self.err = self.log + ".stderr"
        with open(self.err, "w") as err:
            self.p = subprocess.Popen([HOOK, "--run-root", rr, "--log-level", "debug",
                                       "--log-file", self.log, "template", "--idle-exit", "0"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err)
        self.pid = self.p.pid

        def serving():
            if self.p.poll() is not None:
                raise RuntimeError("the template exited (%s): %s" % (
                    self.p.returncode, open(self.err, errors="replace").read()[-400:]))
            try:
                m = re.search(r"template (\d+): serving", open(self.log, errors="replace").read())
            except OSError:
                return None
            return m and os.path.exists(self.sock) and int(m.group(1))
        served_by = wait_until(serving, 60, "the template to serve " + self.sock, step=0.01)
        self.start_ms = (now() - t) * 1000
        if served_by != self.pid:
            raise RuntimeError("template %d says it serves, not %d" % (served_by, self.pid))
        RESULT.setdefault("template_start_ms", []).append(self.start_ms)
        log("template %d serving %s (start %.0f ms)" % (self.pid, self.sock, self.start_ms))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            where = ""
            for f in ("wchan", "stack", "status"):
                try:
                    where += " %s: %s" % (f, open("/proc/%d/%s" % (self.pid, f)).read()[-300:])
                except OSError:
                    pass
            self.p.kill()
            self.p.wait(timeout=10)
            raise RuntimeError("the template %d did not stop within 30 s of SIGTERM (%s; its "
                               "log: %s)" % (self.pid, where.replace("\n", " "),
                                             open(self.log, errors="replace").read()[-800:]))
        err = open(self.err, errors="replace").read()
        if rc != 0:
            raise RuntimeError("the template %d exited with %d: %s" % (self.pid, rc, err[-400:]))
        # no other template (one a setup started itself, say) may have served meanwhile
        others = live_named("vtpm-template")
        if others:
            raise RuntimeError("templates left after stopping %d: %s" % (self.pid, others))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class SwTpm:
    def __init__(self, state_dir, defer=False, tries=3):
        self.state_dir, self.tries = state_dir, tries
        self.launch()
        if not defer:
            self.finish()

    def launch(self):
        state_dir = self.state_dir
        os.makedirs(state_dir, exist_ok=True)
        self.out = state_dir + ".out"
        f = open(self.out, "w")
        t = now()
        self.p = subprocess.Popen(["swtpm", "chardev", "--vtpm-proxy", "--tpm2",
                                   "--tpmstate", "dir=" + state_dir, "--flags", "startup-clear"],
                                  stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        f.close()
        self.t = t

    def finish(self):
        def dev():  # (N,) once /dev/tpmrmN exists
            m = re.search(r"/dev/tpm(\d+)", open(self.out).read())
            return (int(m.group(1)),) if m and os.path.exists("/dev/tpmrm" + m.group(1)) else None
        try:
            self.num = wait_until(dev, 60, "swtpm's /dev/tpmrmN")[0]
        except RuntimeError:
            self.p.kill()
            self.p.wait(timeout=10)
            why = open(self.out).read()
            self.tries -= 1
            if self.tries <= 0:
                raise RuntimeError("swtpm did not come up: " + why)
            # seen under heavy host load: the kernel gave up on the registration (swtpm logs
            # "writev() Broken pipe"); counted and retried, the retry is what gets timed
            RESULT.setdefault("swtpm_start_failures", []).append(why.strip()[-300:])
            log("swtpm start failed, retrying: " + why.strip().replace("\n", " | ")[-200:])
            self.launch()
            return self.finish()
        self.seconds = now() - self.t
        self.pid = self.p.pid
        self.rm = "/dev/tpmrm%d" % self.num

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=30)
        wait_until(lambda: not os.path.exists(self.rm), 20, self.rm + " to go")


def stop_all(objs):
    """Many at once: kill the containers (each vtpm-emu then saves and exits by itself),
    SIGTERM the swtpms; then a bounded wait for all of them and their devices."""
    for o in objs:
        if isinstance(o, HookTpm):
            o.sleeper.kill()
        elif o.p.poll() is None:
            o.p.send_signal(signal.SIGTERM)
    for o in objs:
        if isinstance(o, SwTpm):
            o.p.wait(timeout=60)
    wait_until(lambda: all(gone(o.pid) for o in objs if hasattr(o, "pid")) and
               not any(os.path.exists(o.rm) for o in objs if hasattr(o, "rm")), 90,
               "all emulators to stop", step=0.05)
    for o in objs:
        if isinstance(o, HookTpm):
            o.sleeper.remove_cgroup()


# ------------------------------------------------------------------ raw TPM 2 commands
GET_RANDOM = get_random(8)
PCR_EXTEND = pcr_extend(16, bytes(range(32)))
CP = {"CreatePrimary RSA 2048": create_primary(True),
      "CreatePrimary ECC P-256": create_primary(False)}


def round_trips(dev, name, n):
    fd = os.open(dev, os.O_RDWR)
    try:
        c = CP.get(name) or (GET_RANDOM if name.startswith("GetRandom") else PCR_EXTEND)
        # one untimed warm-up
        out = []
        end = now() + RTT_BUDGET_S
        for i in range(n + 1):
            t = time.perf_counter()
            os.write(fd, c)
            r = os.read(fd, 4096)
            dt = time.perf_counter() - t
            if rc_of(r) != 0:
                raise RuntimeError("%s on %s: rc 0x%x" % (name, dev, rc_of(r)))
            if name in CP:
                os.write(fd, cmd(0x8001, 0x165, r[10:14]))       # FlushContext, not timed
                if rc_of(os.read(fd, 4096)) != 0:
                    raise RuntimeError("FlushContext failed")
            if i:
                out.append(dt * 1000)
            if now() > end and len(out) >= 3:
                break
        return out
    finally:
        os.close(fd)


MEM_KEYS = ("rss", "pss", "anon", "private")


def mem(pid):
    """KiB from smaps_rollup: rss, pss, anon (Anonymous), private (Private_Clean+Private_Dirty)"""
    d = dict.fromkeys(MEM_KEYS, 0)
    for line in open("/proc/%d/smaps_rollup" % pid):
        k, _, rest = line.partition(":")
        k = {"Rss": "rss", "Pss": "pss", "Anonymous": "anon", "Private_Clean": "private",
             "Private_Dirty": "private"}.get(k)
        if k:
            d[k] += int(rest.split()[0])
    return d


def mem_sum(pids):
    ms = [mem(p) for p in pids]
    return {k: sum(m[k] for m in ms) for k in MEM_KEYS}


# ------------------------------------------------------------------ setup log profile
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (\S+)\[(\d+)\] (\w+): (.*)$")


def stamp_ms(s):
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return (time.mktime(t) * 1000) + int(s[20:23])


def profile_from_log(cids):
    """Per setup run: ms between the debug log's milestones."""
    runs, cur = {}, None
    for line in open(LOG, errors="replace"):
        if line.startswith("BENCH-MARK start "):
            cur = line.split()[2]
            runs[cur] = []
            continue
        m = STAMP.match(line)
        if m and cur:
            runs[cur].append((stamp_ms(m.group(1)), m.group(2), m.group(5)))
    out = []
    for cid in cids:
        ev = runs.get(cid, [])

        def t(pat, who=None):
            for ms, name, msg in ev:
                if re.search(pat, msg) and (who is None or name.startswith(who)):
                    return ms
            return None
        took = None
        for _, _, msg in ev:
            m = re.search(r"setup took (\d+) ms", msg)
            if m:
                took = int(m.group(1))
        out.append({"id": cid, "spawn": t(r"^starting the emulator"),
                    "forked": t(r"^emulator \d+ forked by the template"),
                    "started": t(r"^TPM2_Startup done"), "tested": t(r"^full self-test passed"),
                    "powered": t(r"^TPM started"), "measured": t(r"^launch measured into PCR"),
                    "parent_ready": t(r"^emulator \d+ serves"), "placed": t(r"is the container's"),
                    "took": took, "end": t(r"setup took")})
    return out


# ------------------------------------------------------------------ the measurements
def bench_exec():
    """Process start cost alone: `--version` of each program, page cache warm."""
    res = {}
    for name, argv in (("vtpm-hook --version", [HOOK, "--version"]),
                       ("swtpm --version", ["swtpm", "--version"]),
                       ("/bin/true", ["/bin/true"])):
        xs = []
        for _ in range(6):
            t = now()
            subprocess.run(argv, capture_output=True, timeout=30)
            xs.append((now() - t) * 1000)
        res[name] = stats(xs[1:])
    RESULT["exec"] = res


def write_policy(path, d):
    with open(path, "w") as f:
        json.dump(d, f)
    os.chmod(path, 0o644)
    return path


def mode_tpm(mode, cid, vtpms, tmpl, policy=None, **kw):
    """A by-hand container with a cgroup of its own, set up in MODE ("vtpm-hook": by the
    template TMPL; "vtpm-hook fork": by the hook, policy "template": "off"), checked."""
    return HookTpm(cid, vtpms, policy=policy or POLICY[mode], cgroup=True,
                   template=tmpl if mode == "vtpm-hook" else False, **kw)


def bench_setup():
    res = {"vtpm-hook": {}, "vtpm-hook fork": {}, "swtpm": {}}
    hook_ids = []
    # the policy's selfTest "powerOn" (the full test before the device exists, as swtpm does)
    # against the default "onDemand" (both from the template), interleaved with the others
    power_on = write_policy(W + "/policy-power-on.json", {"selfTest": "powerOn",
                                                          "template": "auto"})
    res["vtpm-hook powerOn"] = {}
    with Template() as tmpl:
        # first instance of each, caches dropped before each (9p: binaries and libraries cold;
        # the template runs already, as it would from boot on)
        for mode, cid in (("vtpm-hook", "first-hook"), ("vtpm-hook fork", "first-hook-fork")):
            drop_caches()
            h = mode_tpm(mode, cid, [{"statePath": SR + "/" + cid}], tmpl)
            res[mode]["first"] = h.seconds * 1000
            h.stop()
        drop_caches()
        s = SwTpm(W + "/sw/first")
        res["swtpm"]["first"] = s.seconds * 1000
        s.stop()
        log("first instance: vtpm-hook %.0f ms (fork %.0f), swtpm %.0f ms" % (
            res["vtpm-hook"]["first"], res["vtpm-hook fork"]["first"], res["swtpm"]["first"]))
        for kind in ("fresh", "existing"):
            xs = {k: [] for k in ("vtpm-hook", "vtpm-hook fork", "vtpm-hook powerOn", "swtpm")}
            for i in range(N_SETUP):
                sd = SR + "/setup-%s" % (i if kind == "fresh" else "existing")
                cid = "setup-%s-%d" % (kind, i)
                hook_ids.append(cid)
                for mode, suffix, pol in (("vtpm-hook", "", None), ("vtpm-hook fork", "-f", None),
                                          ("vtpm-hook", "-p", power_on)):
                    h = mode_tpm(mode, cid + suffix, [{"statePath": sd + suffix}], tmpl, pol)
                    xs["vtpm-hook powerOn" if suffix == "-p" else mode].append(h.seconds * 1000)
                    h.stop()
                s = SwTpm(W + "/sw/setup-%s" % (i if kind == "fresh" else "existing"))
                xs["swtpm"].append(s.seconds * 1000)
                s.stop()
            for k, v in xs.items():
                res[k][kind] = stats(v)
            log("setup %s: vtpm-hook median %.0f ms (fork %.0f, powerOn %.0f), swtpm median "
                "%.0f ms" % (kind, *(res[k][kind]["median"] for k in xs)))
        RESULT["setup"] = res
        # the last template-mode setup (the fork and powerOn ones came after it)
        RESULT["hook_log_sample"] = [l for l in open(LOG, errors="replace").read().split(
            "BENCH-MARK start ")[-3].splitlines()][:60]
        RESULT["setup_profile"] = profile_from_log(["first-hook"] + hook_ids)
        RESULT["setup_profile_fork"] = profile_from_log(
            ["first-hook-fork"] + [c + "-f" for c in hook_ids])
        bench_setup_measured(tmpl)


def bench_setup_measured(tmpl):
    """Measured launch (issue 20) against none: the same "existing" setups with the policy's
    measurementPcr 21 (the default) and null (off), in both modes, all four interleaved; the
    first of each (the state is made then) not counted."""
    pols, xs = {}, {}
    for mode in MODES:
        for kind, pcr in (("measured", 21), ("unmeasured", None)):
            key = (mode, kind)
            sfx = "" if mode == "vtpm-hook" else "-f"
            pols[key] = write_policy(W + "/policy-%s%s.json" % (kind, sfx), {
                "measurementPcr": pcr, "template": "auto" if mode == "vtpm-hook" else "off"})
            xs[key] = []
    for i in range(2 * N_SETUP + 1):  # a 5% difference needs more samples than the others
        for (mode, kind), pol in pols.items():
            sfx = "" if mode == "vtpm-hook" else "-f"
            h = mode_tpm(mode, "setup-%s%s-%d" % (kind, sfx, i),
                         [{"statePath": SR + "/setup-" + kind + sfx}], tmpl, pol)
            if i > 0:
                xs[(mode, kind)].append(h.seconds * 1000)
            h.stop()
    res = {}
    for mode in MODES:
        m, u = stats(xs[(mode, "measured")]), stats(xs[(mode, "unmeasured")])
        res[mode] = {"setup_measured_ms": m, "setup_unmeasured_ms": u,
                     "ratio": m["median"] / u["median"]}
        log("setup (existing state, %s) measured median %.0f ms, unmeasured %.0f ms, ratio "
            "%.3f" % (mode, m["median"], u["median"], m["median"] / u["median"]))
    # (the template mode's at the top level, where the report has always looked)
    RESULT["setup_measured"] = dict(res["vtpm-hook"], modes=res)


def bench_rtt():
    # All TPMs start from the SAME state (vtpm-hook's files are swtpm's): a primary key comes
    # from the hierarchy seed, and the RSA prime search time depends on it.
    seed = SR + "/setup-existing"
    dirs = {"vtpm-hook": SR + "/rtt-hook", "vtpm-hook fork": SR + "/rtt-hook-fork",
            "swtpm": W + "/sw/rtt"}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(seed, d, ignore=shutil.ignore_patterns(".lock"))
    res = {}
    with Template() as tmpl:
        tpms = {}
        try:
            for mode in MODES:
                tpms[mode] = mode_tpm(mode, "rtt-" + mode.replace(" ", "-"),
                                      [{"statePath": dirs[mode]}], tmpl)
            tpms["swtpm"] = SwTpm(dirs["swtpm"])
            for name, n in RTT_N.items():
                res[name] = {k: stats(round_trips(t.rm, name, n)) for k, t in tpms.items()}
                log("rtt %s: %s (median ms)" % (name, ", ".join(
                    "%s %.2f" % (k, v["median"]) for k, v in res[name].items())))
            RESULT["mem_after_rtt"] = {k: mem(t.pid) for k, t in tpms.items()}
        finally:
            for t in tpms.values():
                t.stop()
    RESULT["rtt"] = res


def mem_of(insts, mode):
    """Sum over the emulators of INSTS and the live keepers (every keeper then is one of
    theirs), and the count of keepers."""
    keep = live_named("vtpm-keep") if mode != "swtpm" else []
    e, k = mem_sum([x.pid for x in insts]), mem_sum(keep)
    return dict({key: e[key] + k[key] for key in MEM_KEYS}, keepers=len(keep),
                keepers_pss=k["pss"])


def bench_mem():
    """N_MEM[-1] instances of each mode (vtpm-hook template, vtpm-hook fork, swtpm), one mode
    after the other, nothing else running: with the template alive only during its mode (it
    shares the libraries' pages, which lowers the others' PSS). Emulators + their keepers
    (vtpm-hook: each container has a cgroup of its own, so a keeper); in template mode the
    template's own PSS apart, at each count."""
    res = {"vtpm-hook": {}, "vtpm-hook fork": {}, "swtpm": {}, "template": {}, "profile": {}}
    for mode in MODES:
        if live_named("vtpm-keep") or live_named("vtpm-emu"):
            raise RuntimeError("emulators or keepers left before measuring %s: %s %s" % (
                mode, live_named("vtpm-emu"), live_named("vtpm-keep")))
        tmpl = Template() if mode == "vtpm-hook" else None
        hooks = []
        try:
            for i in range(max(N_MEM)):
                cid = "mem-%d%s" % (i, "" if mode == "vtpm-hook" else "-f")
                hooks.append(mode_tpm(mode, cid, [{"statePath": SR + "/" + cid}], tmpl,
                                      defer=True))
                if len(hooks) % BATCH == 0 or len(hooks) in N_MEM:
                    for x in hooks:
                        if not hasattr(x, "pid"):
                            x.finish()
                if len(hooks) in N_MEM:
                    res[mode][len(hooks)] = mem_of(hooks, mode)
                    if tmpl:
                        res["template"][len(hooks)] = mem(tmpl.pid)
            res["profile"][mode] = profile([x.pid for x in hooks])
            res["profile"][mode + " keepers"] = profile(live_named("vtpm-keep"))
            if tmpl:
                res["profile"]["template"] = profile([tmpl.pid])
            log("memory: %s %s" % (mode, res[mode]))
        finally:
            stop_all(hooks)
            wait_until(lambda: not live_named("vtpm-keep"), 30, "the keepers to exit", 0.05)
            if tmpl:
                tmpl.stop()
        if tmpl:
            log("memory: template %s" % res["template"])
    sws = []
    try:
        for i in range(max(N_MEM)):
            # one at a time: 10 concurrent swtpm starts under TCG made the kernel time out
            # registrations (swtpm: "writev() Input/output error", then exit)
            sws.append(SwTpm(W + "/sw/mem-%d" % i))
            if len(sws) in N_MEM:
                res["swtpm"][len(sws)] = mem_of(sws, "swtpm")
        res["profile"]["swtpm"] = profile([x.pid for x in sws])
        log("memory: swtpm %s" % res["swtpm"])
    finally:
        stop_all(sws)
    RESULT["mem"] = res


def swtpm_localca_config(d):
    os.makedirs(d + "/ca", exist_ok=True)
    with open(d + "/swtpm-localca.conf", "w") as f:
        f.write("statedir = {0}/ca\nsigningkey = {0}/ca/signkey.pem\n"
                "issuercert = {0}/ca/issuercert.pem\ncertserial = {0}/ca/certserial\n".format(d))
    with open(d + "/swtpm-localca.options", "w") as f:
        f.write("--platform-manufacturer Debian\n--platform-version 2.1\n--platform-model QEMU\n")
    with open(d + "/swtpm_setup.conf", "w") as f:
        f.write("create_certs_tool = /usr/bin/swtpm_localca\n"
                "create_certs_tool_config = {0}/swtpm-localca.conf\n"
                "create_certs_tool_options = {0}/swtpm-localca.options\n".format(d))
    return d + "/swtpm_setup.conf"


def bench_certs():
    res = {"vtpm-hook": {}, "swtpm": {}}
    # first run of each also creates its CA: reported apart
    hx, sx = [], []
    ids = []
    for i in range(N_CERTS_HOOK + 1):
        cid = "certs-%d" % i
        ids.append(cid)
        h = HookTpm(cid, [{"statePath": SR + "/" + cid, "createCerts": True}])
        (hx.append(h.seconds * 1000) if i else res["vtpm-hook"].__setitem__("first_with_ca",
                                                                            h.seconds * 1000))
        h.stop()
    res["vtpm-hook"]["certs"] = stats(hx)
    log("createCerts: vtpm-hook %s" % res["vtpm-hook"])
    conf = swtpm_localca_config(W + "/swca")
    split = []
    for i in range(N_CERTS_SWTPM + 1):
        d = W + "/sw/certs-%d" % i
        os.makedirs(d)
        t = now()
        r = subprocess.run(["swtpm_setup", "--tpm2", "--create-ek-cert", "--tpmstate", d,
                            "--config", conf], capture_output=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError("swtpm_setup failed: " + r.stdout.decode() + r.stderr.decode())
        t_setup = now() - t
        s = SwTpm(d)
        total = now() - t
        s.stop()
        if i:
            sx.append(total * 1000)
            split.append((t_setup * 1000, s.seconds * 1000))
        else:
            res["swtpm"]["first_with_ca"] = total * 1000
    res["swtpm"]["certs"] = stats(sx)
    res["swtpm"]["swtpm_setup_ms"] = stats([a for a, _ in split])
    res["swtpm"]["swtpm_start_ms"] = stats([b for _, b in split])
    log("createCerts: swtpm %s" % res["swtpm"])
    RESULT["certs"] = res
    RESULT["certs_profile"] = profile_from_log(ids)


def bench_floor():
    r = subprocess.run([FLOOR, "--benchmark_format=json", "--benchmark_min_time=0.5"],
                       capture_output=True, timeout=300,
                       env=dict(os.environ, VTPM_FLOOR_STATE=SR + "/setup-existing"))
    if r.returncode != 0:
        raise RuntimeError("libtpms_floor failed: " + r.stderr.decode())
    RESULT["floor"] = {b["name"]: {"real_ms": b["real_time"] * {"us": 1e-3, "ms": 1, "ns": 1e-6}[
        b["time_unit"]], "iterations": b["iterations"]} for b in json.loads(r.stdout)["benchmarks"]}
    log("floor: %s" % RESULT["floor"])


def strace_profile():
    """One existing-state setup under strace -f -ttt: the syscall landmarks of the setup path."""
    if not shutil.which("strace"):
        return
    sd = SR + "/setup-existing"
    sl = Sleeper()
    b = bundle("strace", [{"statePath": sd}])
    st = json.dumps({"ociVersion": "1.0.2", "id": "strace", "pid": sl.pid, "bundle": b})
    out = W + "/strace.txt"
    # strace -f follows the emulator too, which lives until its container (the sleeper) ends:
    # let setup finish, then end the "container" so that strace can return.
    p = subprocess.Popen(["strace", "-f", "-ttt", "-o", out, "-e",
                          "trace=execve,clone,clone3,fork,vfork,ioctl,setns,mknodat,mknod,bpf,"
                          "read,write,pidfd_open,exit_group,prctl,wait4,nanosleep,clock_nanosleep",
                          *hook_cmd("setup", ["--no-device-cgroup"])],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.stdin.write(st.encode())
    p.stdin.close()
    deadline = now() + 120
    while now() < deadline and not os.path.exists(RR + "/strace.json"):
        time.sleep(0.05)
    subprocess.run(hook_cmd("teardown"), input=st.encode(), capture_output=True, timeout=60)
    sl.kill()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    RESULT["strace"] = open(out, errors="replace").read()[-60000:]


# ------------------------------------------------------------------ whole `runc run`
def live_named(name):
    """pids of live (not zombie) processes whose comm is NAME"""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if open(d + "/comm").read().strip() == name and not gone(int(d[6:])):
                out.append(int(d[6:]))
        except OSError:
            pass
    return out


def tpm_chips():
    return sorted(os.listdir("/sys/class/tpm")) if os.path.isdir("/sys/class/tpm") else []


def majors():
    m = {}
    for line in open("/proc/devices"):
        f = line.split()
        if len(f) == 2 and f[0].isdigit():
            m.setdefault(f[1], int(f[0]))
    return m


RUNC_SPEC = {}


def runc_bundle(name, script, hooks=None, vtpms=None, devices=()):
    """A bundle like tests/e2e's make_bundle: `runc spec`'s stock config, a rootfs without
    files of its own (/usr and /etc bound read-only from the host, /tmp a tmpfs)."""
    if not RUNC_SPEC:
        d = W + "/runc-spec"
        os.makedirs(d, exist_ok=True)
        subprocess.run(["runc", "spec"], cwd=d, check=True, capture_output=True, timeout=60)
        RUNC_SPEC.update(json.load(open(d + "/config.json")))
    b = "%s/%s" % (BUN, name)
    shutil.rmtree(b, ignore_errors=True)
    for d in ("usr", "etc", "dev", "proc", "sys", "tmp", "root"):
        os.makedirs("%s/rootfs/%s" % (b, d))
    for d in ("bin", "lib", "lib64", "sbin"):
        os.symlink("usr/" + d, "%s/rootfs/%s" % (b, d))
    c = copy.deepcopy(RUNC_SPEC)
    c["process"].update({"terminal": False, "args": ["/bin/sh", "-c", script], "cwd": "/"})
    c["root"] = {"path": "rootfs", "readonly": True}
    c["hostname"] = name
    c["mounts"] += [
        {"destination": "/usr", "type": "bind", "source": "/usr",
         "options": ["rbind", "ro", "nosuid", "nodev"]},
        {"destination": "/etc", "type": "bind", "source": "/etc",
         "options": ["rbind", "ro", "nosuid", "nodev"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]}]
    if hooks:
        c["hooks"] = hooks
    if vtpms is not None:
        c["linux"]["vtpms"] = vtpms
    if devices:
        res = c["linux"].setdefault("resources", {})
        res["devices"] = res.get("devices", []) + list(devices)
    with open(b + "/config.json", "w") as f:
        json.dump(c, f, indent=1)
    return b


# the container's process: (a) nothing; (b), (c) the nodes are there and /dev/tpmrm0 opens
# (read-write: the device cgroup must let it through)
TPM_SCRIPT = "test -c /dev/tpm0 && test -c /dev/tpmrm0 && : <>/dev/tpmrm0"


def runc_kinds():
    swsr = W + "/swhook"
    os.makedirs(swsr, exist_ok=True)
    mj = majors()
    if "tpm" not in mj:
        raise RuntimeError("no tpm line in /proc/devices: %s" % mj)
    # (c) swtpm's nodes need a rule: the first TPM is the misc device 10:224, the others and
    # every /dev/tpmrmN (minor 65536 + N) have the major of /proc/devices' "tpm" line
    rule = [{"allow": True, "type": "c", "major": 10, "minor": 224, "access": "rwm"},
            {"allow": True, "type": "c", "major": mj["tpm"], "access": "rwm"}]

    def hk(args):
        return [{"path": args[0], "args": args, "timeout": 60}]
    return {
        "none": lambda n: runc_bundle(n, "true"),
        # the two vtpm-hook modes differ in their policy file alone
        "vtpm-hook": lambda n: runc_bundle(
            n, TPM_SCRIPT, vtpms=[{}],
            hooks={"createRuntime": hk([HOOK, *hook_opts(policy=POLICY["vtpm-hook"]), "setup"]),
                   "poststop": hk([HOOK, *hook_opts(policy=POLICY["vtpm-hook"]), "teardown"])}),
        "vtpm-hook fork": lambda n: runc_bundle(
            n, TPM_SCRIPT, vtpms=[{}],
            hooks={"createRuntime": hk([HOOK, *hook_opts(policy=POLICY["vtpm-hook fork"]),
                                        "setup"]),
                   "poststop": hk([HOOK, *hook_opts(policy=POLICY["vtpm-hook fork"]),
                                   "teardown"])}),
        "swtpm-hook": lambda n: runc_bundle(
            n, TPM_SCRIPT, devices=rule,
            hooks={"createRuntime": hk(["/bin/bash", SWTPM_HOOK, swsr, "create"]),
                   "poststop": hk(["/bin/bash", SWTPM_HOOK, swsr, "delete"])}),
    }, rule


def runc_run(kind, make, cid, base_chips, tmpl=None):
    b = make(cid)
    log_from = log_size()
    t = now()
    try:
        r = subprocess.run(["runc", "run", "--bundle", b, cid], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=RUNC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True, timeout=60)
        raise RuntimeError("runc run %s (%s) did not finish within %ss" % (cid, kind,
                                                                          RUNC_TIMEOUT_S))
    ms = (now() - t) * 1000
    if r.returncode != 0:
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True, timeout=60)
        raise RuntimeError("runc run %s (%s): exit %d: %s" % (
            cid, kind, r.returncode, (r.stdout + r.stderr).decode(errors="replace")[-400:]))
    # untimed: every TPM of this run gone before the next one starts
    try:
        wait_until(lambda: tpm_chips() == base_chips and not live_named("swtpm") and
                   not live_named("vtpm-emu") and not live_named("vtpm-keep"), 30,
                   "the TPM of %s (%s) to go" % (cid, kind), 0.02)
    except RuntimeError as e:
        raise RuntimeError("%s: chips %s, swtpm %s, vtpm-emu %s, vtpm-keep %s; runc's output: "
                           "%s" % (e, tpm_chips(), live_named("swtpm"), live_named("vtpm-emu"),
                                   live_named("vtpm-keep"),
                                   (r.stdout + r.stderr).decode(errors="replace")[-600:]))
    if kind in MODES:   # the mode that was meant, from the hook's debug log
        text = log_since(log_from)
        m = re.search(r"emulator (\d+) serves", text) or re.search(
            r"starting the emulator", text)
        if not m:
            raise RuntimeError("runc run %s (%s): the hook logged no emulator start: %s" % (
                cid, kind, text[-400:]))
        emu = re.findall(r"emulator (\d+) (?:forked by the template|serves)", text)
        if not emu:
            raise RuntimeError("runc run %s (%s): no emulator pid in the hook's log" % (cid, kind))
        check_forked_by(text, int(emu[0]), tmpl if kind == "vtpm-hook" else False,
                        "runc run %s" % cid)
    return ms


def bench_runc():
    kinds, rule = runc_kinds()
    base = tpm_chips()
    res = {"n": N_RUNC, "device_rule_swtpm": rule, "runs": {k: [] for k in kinds},
           "runc": subprocess.run(["runc", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[:1]}
    with Template() as tmpl:
        # one untimed warm-up of each (page cache: runc, the hooks, swtpm, libraries over 9p)
        for k, make in kinds.items():
            runc_run(k, make, "runc-warm-%s" % k.replace(" ", "-"), base, tmpl)
        for i in range(N_RUNC):
            for k, make in kinds.items():   # interleaved: a, b, c, d, a, b, c, d, ...
                res["runs"][k].append(runc_run(k, make, "runc-%s-%d" % (k.replace(" ", "-"), i),
                                               base, tmpl))
    for k in kinds:
        res[k] = stats(res["runs"][k])
    log("runc run: " + ", ".join("%s median %.0f ms" % (k, res[k]["median"]) for k in kinds))
    RESULT["runc"] = res


# ------------------------------------------------------------------ many live vTPMs
def bench_scale():
    """N_SCALE by-hand vTPMs started one after another (default state under their own
    state root), in the default mode: each container in a cgroup of its own, so its emulator
    and its keeper come from the template; all alive at the end; then all torn down and checked
    for leftovers."""
    sr, rr = W + "/scale/state", W + "/scale/run"
    os.makedirs(sr)
    os.makedirs(rr)
    devs_before = sorted(glob.glob("/dev/tpm*"))
    res = {"n": N_SCALE, "setup_ms": [], "teardown_ms": [], "mem": {}, "keepers": {},
           "template": {}, "devs_before": devs_before}
    RESULT["scale"] = res
    insts, err = [], None
    tmpl = Template(rr)
    try:
        for i in range(N_SCALE):
            h = mode_tpm("vtpm-hook", "scale-%d" % i, [{}], tmpl, sr=sr, rr=rr)
            insts.append(h)
            res["setup_ms"].append(h.seconds * 1000)
            if len(insts) in SCALE_AT:
                alive = [x for x in insts if not gone(x.pid)]
                if len(alive) != len(insts):
                    raise RuntimeError("%d of %d emulators died" % (len(insts) - len(alive),
                                                                    len(insts)))
                keep = live_named("vtpm-keep")
                res["mem"][len(insts)] = mem_sum([x.pid for x in insts] + keep)
                res["keepers"][len(insts)] = len(keep)
                res["template"][len(insts)] = mem(tmpl.pid)
                log("scale: %d live, setup %.0f ms, emulators %s" % (
                    len(insts), h.seconds * 1000, res["mem"][len(insts)]))
    except Exception as e:  # tear down what is there, then report the failure
        err = e
    res["profile"] = profile_from_log([x.cid for x in insts])
    res["alive_at_end"] = sum(1 for x in insts if not gone(x.pid))
    res["teardown_failures"] = []
    for h in insts:
        t = now()
        try:
            h.stop()
            res["teardown_ms"].append((now() - t) * 1000)
        except Exception as e:
            res["teardown_failures"].append("%s: %s" % (h.cid, str(e)[-200:]))
            h.sleeper.kill()
    if err:  # what the hook and the template said last
        res["error"] = str(err)[-600:]
        res["hook_log_tail"] = open(LOG, errors="replace").read()[-3000:]
        res["template_log_tail"] = open(tmpl.log, errors="replace").read()[-3000:]
        log("scale: failed after %d: %s" % (len(insts), res["error"]))
    try:
        tmpl.stop()
    except Exception as e:  # (reported; the first failure is the one raised)
        res["template_stop_error"] = str(e)
        err = err or e

    def left():
        return {"vtpm-emu": len(live_named("vtpm-emu")), "vtpm-keep": len(live_named("vtpm-keep")),
                "devices": sorted(set(glob.glob("/dev/tpm*")) - set(devs_before)),
                "run_records": sorted(f for f in os.listdir(rr) if f.endswith(".json")),
                # (the hook's own directories stay: "empty", the keepers' root, and
                # "measurements", whose files are the live containers' launch logs; and the
                # template's lock file)
                "run_root_other": sorted(
                    [f for f in os.listdir(rr) if not f.endswith(".json")
                     and f not in ("empty", "measurements", "template.lock")] +
                    ["measurements/" + f for f in (os.listdir(rr + "/measurements")
                                                   if os.path.isdir(rr + "/measurements")
                                                   else [])])}
    try:  # bounded wait for the last ones to go; what is left after it counts
        wait_until(lambda: not any(left()[k] for k in ("vtpm-emu", "vtpm-keep", "devices",
                                                       "run_records")), 20, "leftovers", 0.1)
    except RuntimeError:
        pass
    lo = left()
    lo["state_dirs_before_gc"] = len(os.listdir(sr))
    g = subprocess.run(hook_cmd("gc", ["--unused-for", "0"], sr, rr), capture_output=True,
                       text=True, timeout=300)
    lo["gc_rc"] = g.returncode
    lo["gc_removed"] = len(g.stdout.splitlines())
    lo["gc_stderr"] = g.stderr[-400:]
    lo["state_dirs_after_gc"] = sorted(os.listdir(sr))
    res["left"] = lo
    log("scale: torn down; left %s" % lo)
    if err:
        raise err
    if res["teardown_failures"]:
        raise RuntimeError("%d teardowns failed: %s" % (len(res["teardown_failures"]),
                                                        res["teardown_failures"][0]))


def main():
    for d in (W,):
        shutil.rmtree(d, ignore_errors=True)
    for d in (SR, RR, BUN, W + "/sw", W + "/ca"):
        os.makedirs(d, exist_ok=True)
    write_policy(POLICY["vtpm-hook"], {"template": "auto"})
    write_policy(POLICY["vtpm-hook fork"], {"template": "off"})
    if not os.path.exists(CG_ROOT + "/cgroup.procs"):
        raise SystemExit("vmbench: no cgroup v2 at %s: the template needs it" % CG_ROOT)
    RESULT["env"] = {"kernel": os.uname().release, "cpus": os.cpu_count(),
                     "swtpm": subprocess.run(["swtpm", "--version"], capture_output=True,
                                             text=True).stdout.strip(),
                     "mem_total_kb": int(open("/proc/meminfo").readline().split()[1]),
                     "quick": QUICK}
    steps = [bench_exec, bench_setup, bench_rtt, bench_mem, bench_certs, bench_floor,
             strace_profile, bench_runc, bench_scale]
    if ONLY:
        steps = [st for st in steps if st.__name__ in ONLY[0]]
    RESULT["steps_planned"] = [st.__name__ for st in steps]
    failed = False
    for step in steps:
        log("---- " + step.__name__)
        t = now()
        try:
            step()
        except Exception as e:  # keep what was measured; the report marks the step failed
            import traceback
            traceback.print_exc()
            RESULT.setdefault("errors", {})[step.__name__] = str(e)[-500:]
            failed = True
        RESULT.setdefault("step_seconds", {})[step.__name__] = round(now() - t, 1)
        # after every step: a run cut short by the time-out still reports what it measured
        # (bench/run.sh takes the last line)
        print("BENCH-RESULT " + json.dumps(RESULT), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
