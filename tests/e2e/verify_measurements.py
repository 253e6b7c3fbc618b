#!/usr/bin/env python3
"""tests/e2e/verify_measurements.py - a verifier of vtpm-hook's measured launch, written
apart from the hook (python3 standard library only, nothing of the project imported): it
re-implements the projection of config.json (docs: issue 20 design 1.1/1.2) and RFC 8785
(JCS), so that the hook and the tests cannot share a mistake.

  verify_measurements.py --config CONFIG.json --log LOG.cel.json [--pcr 21]
                         [--pcrs FILE] [--image-source none|containerd|cri-o]
                         [--replay-json FILE] [--tpm-version 2|1.2]
  verify_measurements.py --batch FILE
  verify_measurements.py --self-test DIR

Checks (each failure prints one line "FAIL <check>: <why>"; exit 0 only if all pass):
  log         LOG is a CEL JSON array of 3 records: recnum 0..2, pcr = --pcr,
              content_type "vtpm_hook", digests [{hashAlg, digest}] with the same banks
  event1      record 0's content = {"event":"oci-config","form":"vtpm-hook/oci-config/1",
              "config": <projection of CONFIG>} (compared canonically)
  event2      record 1's content = the image event for --image-source
  event3      record 2's content = {"event":"separator"}
  digest      every record's digest[alg] = H_alg(UTF-8(JCS(content)))
  pcr         the replay (PCR = H(PCR || digest), from zeros; a TPM 1.2's PCRs 20-22 from
              all ones, as its TPM_PCR_Reset leaves them) equals the values in FILE
              (tpm2_pcrread or tpm2_checkquote output: "  sha256:" then "    21: 0x<HEX>"),
              per bank FILE has for the PCR; at least one bank
  replay      (--replay-json) `vtpm-hook log --replay`'s {"pcr":N,"banks":{alg:hex}} equals
              the replay
On success one line "OK pcr N <alg>=<hex> ..." (the replayed values).

--batch FILE: one verification per line of FILE, "NAME ARGS..." (the options above, split
as the shell would), in one process (a python start costs seconds under TCG emulation): its
output lines prefixed with "NAME ", then "NAME exit N". Exit 0 if FILE was read.

--self-test DIR: RFC 8785 Appendix B number vectors (built in), then every
DIR/jcs-<name>.input.json against DIR/jcs-<name>.expected (its canonical bytes; a trailing
newline is ignored) or DIR/jcs-<name>.error (must be refused), and every DIR/<name>.json that
has DIR/<name>.canonical.json (the projection's canonical bytes; <name>.sha256 too if
present). Exit 1 if a vector fails or DIR holds none.
"""
import argparse
import hashlib
import json
import math
import os
import re
import struct
import sys

# ------------------------------------------------------------------ RFC 8785 (JCS)


class JcsError(ValueError):
    pass


def es6(x):
    """ES6 Number.prototype.toString of a finite double."""
    if not math.isfinite(x):
        raise JcsError("NaN or Infinity has no JSON form")
    if x == 0:
        return "0"
    s = repr(x)
    neg = s[0] == "-"
    s = s.lstrip("-")
    mant, exp = (s.split("e") + ["0"])[:2]
    exp = int(exp)
    if mant.endswith(".0"):
        mant = mant[:-2]
    ip, _, fp = mant.partition(".")
    allds = ip + fp
    lz = len(allds) - len(allds.lstrip("0"))
    digits = allds.lstrip("0").rstrip("0") or "0"
    n, k = len(ip) + exp - lz, len(digits)  # value = 0.digits * 10^n
    if k <= n <= 21:
        r = digits + "0" * (n - k)
    elif 0 < n <= 21:
        r = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        r = "0." + "0" * -n + digits
    else:
        r = (digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if n >= 1 else "-")
             + str(abs(n - 1)))
    return ("-" if neg else "") + r


MAX_SAFE = 2**53 - 1


def jstr(s):
    """JCS string: escapes only " \\ and U+0000-U+001F; the rest as UTF-8 (checked)."""
    out = json.dumps(s, ensure_ascii=False)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        raise JcsError("string is not valid Unicode (lone surrogate): %r" % s[:40])
    return out


def jcs(v, strict=False):
    """RFC 8785 text of a value parsed by load_json. Integers beyond 2^53-1 become strings of
    their digits (RFC 8785 section 6). strict: also what the hook refuses in a config.json:
    integral floats of magnitude >= 2^53, integers outside int64/uint64 (a C++ JSON parser
    reads those as floats)."""
    if isinstance(v, dict):
        return "{" + ",".join(jstr(k) + ":" + jcs(v[k], strict)
                              for k in sorted(v, key=lambda k: k.encode("utf-16-be", "surrogatepass"))) + "}"
    if isinstance(v, list):
        return "[" + ",".join(jcs(x, strict) for x in v) + "]"
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int):
        if strict and not -2**63 <= v <= 2**64 - 1:
            raise JcsError("integer %d is outside int64/uint64" % v)
        return str(v) if abs(v) <= MAX_SAFE else jstr(str(v))
    if isinstance(v, float):
        if strict and math.isfinite(v) and v == int(v) and abs(v) >= 2**53:
            raise JcsError("float %r is integral and >= 2^53: not an exact integer" % v)
        return es6(v)
    if isinstance(v, str):
        return jstr(v)
    raise JcsError("not a JSON value: %r" % type(v))


def jcs_bytes(v, strict=False):
    return jcs(v, strict).encode("utf-8")


def _bad_constant(name):
    raise JcsError("%s is not JSON" % name)


def load_json(data):
    """Parses JSON bytes: strict UTF-8, NaN/Infinity refused, duplicate names: last wins."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JcsError("not UTF-8: %s" % e)
    try:
        return json.loads(data, parse_constant=_bad_constant)
    except json.JSONDecodeError as e:
        raise JcsError("not JSON: %s" % e)


# ------------------------------------------------------------------ the projection (event 1)

PROCESS_FIELDS = ("args", "commandLine", "env", "cwd", "user", "capabilities", "rlimits",
                  "noNewPrivileges", "apparmorProfile", "selinuxLabel")
LINUX_FIELDS = ("devices", "maskedPaths", "readonlyPaths", "sysctl", "rootfsPropagation",
                "mountLabel", "personality")
# mount types whose source is a conventional name, the same on every host
NAMED_SOURCE_TYPES = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "ramfs",
                      "hugetlbfs", "securityfs", "debugfs", "tracefs", "bpf", "binfmt_misc"}
OVERLAY_PATH_OPTIONS = ("lowerdir=", "upperdir=", "workdir=", "datadir=")


def _obj(v):
    return v if isinstance(v, dict) else None


def project_mount(m):
    if not isinstance(m, dict):
        return m
    out = {}
    for k in ("destination", "type", "options", "uidMappings", "gidMappings"):
        if k in m:
            out[k] = m[k]
    t = m.get("type") if isinstance(m.get("type"), str) else ""
    opts = m.get("options") if isinstance(m.get("options"), list) else []
    bind = t == "bind" or "bind" in opts or "rbind" in opts
    if "source" in m and not bind and t in NAMED_SOURCE_TYPES:
        out["source"] = m["source"]
    if t == "overlay" and isinstance(m.get("options"), list):
        out["options"] = [o for o in m["options"]
                          if not (isinstance(o, str) and o.startswith(OVERLAY_PATH_OPTIONS))]
    return out


def project_namespace(ns):
    if not isinstance(ns, dict):
        return ns
    out = {}
    if "type" in ns:
        out["type"] = ns["type"]
    if "path" in ns:
        out["joined"] = True
    return out


def project_config(cfg):
    """The measured part of an OCI config.json (vtpm-hook/oci-config/1)."""
    out = {}
    proc = _obj(cfg.get("process"))
    if proc is not None:
        p = {k: proc[k] for k in PROCESS_FIELDS if k in proc}
        if p:
            out["process"] = p
    root = _obj(cfg.get("root"))
    if root is not None and "readonly" in root:
        out["root"] = {"readonly": root["readonly"]}
    if "mounts" in cfg:
        ms = cfg["mounts"]
        out["mounts"] = [project_mount(m) for m in ms] if isinstance(ms, list) else ms
    lin = _obj(cfg.get("linux"))
    if lin is not None:
        lo = {}
        if "namespaces" in lin:
            ns = lin["namespaces"]
            lo["namespaces"] = [project_namespace(n) for n in ns] if isinstance(ns, list) else ns
        for k in LINUX_FIELDS:
            if k in lin:
                lo[k] = lin[k]
        res = _obj(lin.get("resources"))
        if res is not None and "devices" in res:
            lo["resources"] = {"devices": res["devices"]}
        if "seccomp" in lin:
            sc = lin["seccomp"]
            lo["seccomp"] = ({k: v for k, v in sc.items() if k not in ("listenerPath", "listenerMetadata")}
                             if isinstance(sc, dict) else sc)
        if lo:
            out["linux"] = lo
    return out


def event1(cfg):
    return {"event": "oci-config", "form": "vtpm-hook/oci-config/1", "config": project_config(cfg)}


IMAGE_KEYS = {
    "none": (),
    "containerd": ("io.kubernetes.cri.image-name", "io.kubernetes.cri.podsandbox.image-name"),
    "cri-o": ("io.kubernetes.cri-o.Image", "io.kubernetes.cri-o.ImageName",
              "io.kubernetes.cri-o.ImageRef", "io.kubernetes.cri-o.ImageRepoDigests"),
}


def event2(cfg, source):
    e = {"event": "image", "source": source}
    if source != "none":
        ann = _obj(cfg.get("annotations")) or {}
        e["annotations"] = {k: ann[k] for k in IMAGE_KEYS[source] if k in ann}
    return e


SEPARATOR = {"event": "separator"}

# ------------------------------------------------------------------ CEL + PCRs

HASHES = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
if "sm3" in hashlib.algorithms_available:
    HASHES["sm3_256"] = "sm3"


def H(alg, data):
    return hashlib.new(HASHES[alg], data).digest()


def parse_pcr_values(text, pcr):
    """{bank: bytes} for PCR pcr from tpm2_pcrread / tpm2_checkquote output."""
    vals, bank = {}, None
    for line in text.splitlines():
        m = re.match(r"^\s*(sha1|sha256|sha384|sha512|sm3_256)\s*:\s*$", line)
        if m:
            bank = m.group(1)
            continue
        m = re.match(r"^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$", line)
        if m and bank and int(m.group(1)) == pcr:
            vals[bank] = bytes.fromhex(m.group(2))
        elif not re.match(r"^\s+", line):
            bank = None  # a new top-level key ("sig:", "calcDigest:", ...) ends the bank list
    return vals


class Verifier:
    def __init__(self):
        self.failed = 0

    def fail(self, check, why):
        self.failed += 1
        print("FAIL %s: %s" % (check, why))

    def run(self, a):
        try:
            with open(a.config, "rb") as f:
                cfg = load_json(f.read())
            if not isinstance(cfg, dict):
                raise JcsError("not a JSON object")
        except (OSError, JcsError) as e:
            self.fail("config", "%s: %s" % (a.config, e))
            return 1
        try:
            with open(a.log, "rb") as f:
                log = load_json(f.read())
        except (OSError, JcsError) as e:
            self.fail("log", "%s: %s" % (a.log, e))
            return 1
        banks = self.check_log(log, a.pcr)
        if banks is None:
            return 1
        contents = [r["content"] for r in log]
        try:
            want = [event1(cfg), event2(cfg, a.image_source), SEPARATOR]
            want_bytes = [jcs_bytes(want[0], strict=True), jcs_bytes(want[1]), jcs_bytes(want[2])]
        except JcsError as e:
            self.fail("event1", "config.json has no canonical form: %s" % e)
            return 1
        for i, name in enumerate(("event1", "event2", "event3")):
            try:
                got = jcs_bytes(contents[i])
            except JcsError as e:
                self.fail(name, "record %d's content has no canonical form: %s" % (i, e))
                continue
            if got != want_bytes[i]:
                self.fail(name, "record %d's content differs from the expected one: %s"
                          % (i, first_difference(contents[i], want[i])))
        # digests: each record's = H(JCS(content)), then the replay
        start = 0xFF if a.tpm_version == "1.2" and 20 <= a.pcr <= 22 else 0
        pcrs = {b: bytes([start]) * hashlib.new(HASHES[b]).digest_size for b in banks}
        for r in log:
            try:
                data = jcs_bytes(r["content"])
            except JcsError:
                continue  # reported above
            for d in r["digests"]:
                alg, hexd = d["hashAlg"], d["digest"]
                h = H(alg, data)
                if hexd != h.hex():
                    self.fail("digest", "record %d %s digest %s, H(JCS(content)) = %s"
                              % (r["recnum"], alg, hexd, h.hex()))
                pcrs[alg] = H(alg, pcrs[alg] + bytes.fromhex(hexd))
        if a.pcrs:
            try:
                with open(a.pcrs, encoding="utf-8", errors="replace") as f:
                    given = parse_pcr_values(f.read(), a.pcr)
            except OSError as e:
                self.fail("pcr", str(e))
                given = None
            if given is not None:
                if not given:
                    self.fail("pcr", "%s has no value of PCR %d" % (a.pcrs, a.pcr))
                for b, v in sorted(given.items()):
                    if b not in pcrs:
                        self.fail("pcr", "bank %s of PCR %d is not in the log (log banks: %s)"
                                  % (b, a.pcr, ",".join(banks)))
                    elif v != pcrs[b]:
                        self.fail("pcr", "PCR %d %s is %s, the log replays to %s"
                                  % (a.pcr, b, v.hex(), pcrs[b].hex()))
        if a.replay_json:
            try:
                with open(a.replay_json, "rb") as f:
                    rj = load_json(f.read())
                want_rj = {"pcr": a.pcr, "banks": {b: v.hex() for b, v in pcrs.items()}}
                if rj != want_rj:
                    self.fail("replay", "%s is %s, the log replays to %s"
                              % (a.replay_json, json.dumps(rj), json.dumps(want_rj)))
            except (OSError, JcsError) as e:
                self.fail("replay", "%s: %s" % (a.replay_json, e))
        if self.failed:
            return 1
        print("OK pcr %d %s" % (a.pcr, " ".join("%s=%s" % (b, pcrs[b].hex()) for b in banks)))
        return 0

    def check_log(self, log, pcr):
        """The log's structure; its banks (list) or None when it cannot be checked further."""
        if not isinstance(log, list):
            self.fail("log", "not a JSON array")
            return None
        if len(log) != 3:
            self.fail("log", "%d records, wanted 3" % len(log))
            return None
        banks = None
        ok = True
        for i, r in enumerate(log):
            if not isinstance(r, dict):
                self.fail("log", "record %d is not an object" % i)
                return None
            for k, want in (("recnum", i), ("pcr", pcr), ("content_type", "vtpm_hook")):
                if r.get(k) != want or type(r.get(k)) is not type(want):
                    self.fail("log", "record %d: %s is %s, wanted %s"
                              % (i, k, json.dumps(r.get(k)), json.dumps(want)))
                    ok = False
            if "content" not in r:
                self.fail("log", "record %d has no content" % i)
                return None
            ds = r.get("digests")
            if (not isinstance(ds, list) or not ds
                    or not all(isinstance(d, dict) and isinstance(d.get("hashAlg"), str)
                               and isinstance(d.get("digest"), str) for d in ds)):
                self.fail("log", "record %d: digests is not a list of {hashAlg, digest}" % i)
                return None
            algs = [d["hashAlg"] for d in ds]
            for d in ds:
                alg = d["hashAlg"]
                if alg not in HASHES:
                    self.fail("log", "record %d: unknown hashAlg %s" % (i, alg))
                    return None
                if not re.fullmatch(r"[0-9a-f]{%d}" % (2 * hashlib.new(HASHES[alg]).digest_size),
                                    d["digest"]):
                    self.fail("log", "record %d: %s digest is not %d lowercase hex digits: %s"
                              % (i, alg, 2 * hashlib.new(HASHES[alg]).digest_size, d["digest"]))
                    return None
            if len(set(algs)) != len(algs):
                self.fail("log", "record %d names a bank twice: %s" % (i, algs))
                return None
            if banks is None:
                banks = algs
            elif sorted(algs) != sorted(banks):
                self.fail("log", "record %d has banks %s, record 0 %s" % (i, algs, banks))
                return None
        return banks if ok else None


def first_difference(got, want, path="content"):
    """Where two JSON values differ first (for one readable failure line)."""
    if isinstance(got, dict) and isinstance(want, dict):
        for k in sorted(set(got) | set(want)):
            if k not in got:
                return "%s.%s missing (wanted %s)" % (path, k, short(want[k]))
            if k not in want:
                return "%s.%s unexpected (%s)" % (path, k, short(got[k]))
            if jcs_or_none(got[k]) != jcs_or_none(want[k]):
                return first_difference(got[k], want[k], "%s.%s" % (path, k))
    if isinstance(got, list) and isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want)):
            if jcs_or_none(g) != jcs_or_none(w):
                return first_difference(g, w, "%s[%d]" % (path, i))
        if len(got) != len(want):
            return "%s has %d elements, wanted %d" % (path, len(got), len(want))
    return "%s is %s, wanted %s" % (path, short(got), short(want))


def jcs_or_none(v):
    try:
        return jcs(v)
    except JcsError:
        return None


def short(v):
    s = json.dumps(v, ensure_ascii=False, sort_keys=True)
    return s if len(s) <= 200 else s[:200] + "..."


# ------------------------------------------------------------------ self-test

# RFC 8785 Appendix B: IEEE-754 bits -> ES6 text (None: must be refused)
APPENDIX_B = [
    ("0000000000000000", "0"), ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"), ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"), ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"), ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"), ("7fffffffffffffff", None),
    ("7ff0000000000000", None),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def read_expected(path):
    with open(path, "rb") as f:
        b = f.read()
    return b[:-1] if b.endswith(b"\n") else b


def self_test(d):
    failed = ran = 0

    def result(name, ok, why=""):
        nonlocal failed, ran
        ran += 1
        if not ok:
            failed += 1
            print("FAIL self-test %s: %s" % (name, why))

    for bits, want in APPENDIX_B:
        x = struct.unpack(">d", bytes.fromhex(bits))[0]
        try:
            got = es6(x)
        except JcsError:
            got = None
        result("appendix-b %s" % bits, got == want, "got %s, wanted %s" % (got, want))
    if not os.path.isdir(d):
        print("FAIL self-test: no vector directory %s" % d)
        return 1
    files = sorted(os.listdir(d))
    for f in files:
        m = re.fullmatch(r"jcs-(.+)\.input\.json", f)
        if not m:
            continue
        name = "jcs-" + m.group(1)
        exp, err = os.path.join(d, name + ".expected"), os.path.join(d, name + ".error")
        with open(os.path.join(d, f), "rb") as fh:
            src = fh.read()
        try:
            got = jcs_bytes(load_json(src))
        except JcsError as e:
            got = e
        if os.path.exists(exp):
            want = read_expected(exp)
            result(name, got == want, "got %r, wanted %r" % (got, want))
        elif os.path.exists(err):
            try:  # the hook refuses more in config.json (strict): either refusal counts
                jcs_bytes(load_json(src), strict=True)
                refused = isinstance(got, JcsError)
            except JcsError:
                refused = True
            result(name, refused, "accepted, wanted an error: %r" % got)
        else:
            result(name, False, "neither %s.expected nor %s.error" % (name, name))
    for f in files:
        m = re.fullmatch(r"(.+)\.canonical\.json", f)
        if not m:
            continue
        name = m.group(1)
        src = os.path.join(d, name + ".json")
        if not os.path.exists(src):
            result(name, False, "no %s.json beside %s" % (name, f))
            continue
        try:
            with open(src, "rb") as fh:
                got = jcs_bytes(project_config(load_json(fh.read())), strict=True)
        except JcsError as e:
            got = e
        want = read_expected(os.path.join(d, f))
        result("projection " + name, got == want, "got %r,\n  wanted %r" % (got, want))
        sha = os.path.join(d, name + ".sha256")
        if os.path.exists(sha) and isinstance(got, bytes):
            with open(sha) as fh:
                want_sha = fh.read().split()[0].lower() if fh else ""
            result("projection %s sha256" % name, hashlib.sha256(got).hexdigest() == want_sha,
                   "sha256 %s, wanted %s" % (hashlib.sha256(got).hexdigest(), want_sha))
    if ran == len(APPENDIX_B):
        print("FAIL self-test: %s holds no vectors (jcs-*.input.json, *.canonical.json)" % d)
        return 1
    print("self-test: %d vectors, %d failed" % (ran, failed))
    return 1 if failed else 0


def batch(ap, path):
    import contextlib
    import io
    import shlex
    with open(path) as f:
        lines = [shlex.split(line) for line in f if line.strip()]
    for words in lines:
        name, out = words[0], io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                a = ap.parse_args(words[1:])
                rc = Verifier().run(a) if a.config and a.log else 2
            except SystemExit as e:  # argparse's error
                rc = e.code if isinstance(e.code, int) else 2
        for line in out.getvalue().splitlines():
            print(name, line)
        print(name, "exit", rc)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--log")
    ap.add_argument("--pcr", type=int, default=21)
    ap.add_argument("--pcrs", help="tpm2_pcrread / tpm2_checkquote output")
    ap.add_argument("--image-source", choices=sorted(IMAGE_KEYS), default="none")
    ap.add_argument("--replay-json", help="`vtpm-hook log --replay` output")
    ap.add_argument("--tpm-version", choices=("2", "1.2"), default="2")
    ap.add_argument("--self-test", metavar="DIR")
    ap.add_argument("--batch", metavar="FILE")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.self_test)
    if a.batch:
        return batch(ap, a.batch)
    if not a.config or not a.log:
        ap.error("--config and --log are required (or --self-test DIR)")
    return Verifier().run(a)


if __name__ == "__main__":
    sys.exit(main())
