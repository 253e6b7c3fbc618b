"""bench/memprofile.py - where a process's memory is: /proc/PID/smaps summed per mapping.

Used by vmbench.py (in the VM) for the memory section's profile: per mapping (a library, the
executable, [heap], [stack], [anon] for unnamed anonymous memory), the per-process average of
Pss, private dirty, private clean and Rss over a set of processes, in KiB.
"""
import collections
import os

FIELDS = ("Pss", "Private_Dirty", "Private_Clean", "Rss", "Anonymous")


def smaps(pid):
    """{mapping name: Counter(field -> KiB)} for one process."""
    out = collections.defaultdict(collections.Counter)
    name = None
    for line in open("/proc/%d/smaps" % pid):
        parts = line.split()
        if len(parts) >= 5 and "-" in parts[0] and not parts[0].endswith(":"):
            path = parts[5] if len(parts) >= 6 else "[anon]"
            name = os.path.basename(path) if path.startswith("/") else path
        elif name and len(parts) >= 2 and parts[0][:-1] in FIELDS:
            out[name][parts[0][:-1]] += int(parts[1])
    return out


def profile(pids):
    """Per-process averages per mapping, largest Pss first: [{"map", "Pss", ...}, ...]."""
    total = collections.defaultdict(collections.Counter)
    for pid in pids:
        for k, c in smaps(pid).items():
            total[k].update(c)
    n = max(len(pids), 1)
    rows = [dict({"map": k}, **{f: round(c[f] / n, 1) for f in FIELDS}) for k, c in total.items()]
    return sorted(rows, key=lambda r: -r["Pss"])
