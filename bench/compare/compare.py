#!/usr/bin/env python3
"""Side-by-side comparison of Coffer with restic 0.18.1 and borg 1.2.4.

Run it from the repository root (or via `make compare`):

    python3 bench/compare/compare.py            # scale 0.25 (about 250 MiB)
    SCALE=1 python3 bench/compare/compare.py    # the full 1 GiB data set
    PROFILE=smallfiles make compare             # a hosting server's shape: many small files
    SRC=/srv/www make compare                   # any folder you name, read only

Environment (all optional):
    SCALE        data set scale for mkdata.py (default 0.25)
    PROFILE      mkdata.py profile: mixed (default) or smallfiles (about 90k files
                 of a few KiB at scale 1: maildirs, web roots)
    SRC          race the tools on this folder instead of a generated data set.
                 It is only read: nothing is written under it, so it must not
                 contain the repository, the work folder (BENCH_TMP) or Go's
                 caches. There is no day 2: backup-2 is an unchanged re-backup.
                 A file the tools cannot read is a warning (exit 3; borg's 1),
                 not a failure; a folder that changes during the run fails the
                 restore check. SCALE and PROFILE do not apply.
    ROUNDS       how many times to run the whole comparison (default 3); the
                 report gives the median time of each phase and tool
    BENCH_TMP    parent of the temporary folder holding data and repositories
                 (default: the system temp folder; all three tools share it)
    KEEP=1       keep the temporary folder afterwards
    TOOLS        comma-separated subset of coffer,restic,borg (default: all)
    BASE         a git revision of Coffer to race as a fourth tool, coffer-base
                 (built from a temporary worktree): before/after figures of a
                 change side by side in one run, e.g. BASE=main~5 TOOLS=coffer,restic
    NO_INSTALL=1 do not install missing peers (skip them instead)
    SHARED       folder holding bench/mkdata.py (default: ../shared, then /work/shared)

Each round builds a fresh data set and fresh repositories and runs four phases,
each timed per tool, with the tool order rotated from phase to phase and round
to round:
    backup-1   first backup of day 1
    backup-2   second backup after `mkdata.py mutate` (day 2); with SRC, the
               same folder again, unchanged
    restore    restore of the latest snapshot into a fresh folder (verified afterwards)
    check      full check with data (coffer check --read-data,
               restic check --read-data, borg check --verify-data)

Each command is started as a child process and reaped with os.wait4, so its
wall time and peak RSS (ru_maxrss) are measured for that process alone. Before
every measured command the page cache is dropped (sync; echo 3 >
/proc/sys/vm/drop_caches) when that is permitted; the report says whether it was.

Only the Python 3 standard library is used.
"""
import datetime
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time

PHASES = ["backup-1", "backup-2", "restore", "check"]
ALL_TOOLS = ["coffer", "restic", "borg"]
RESTIC_VERSION = "0.18.1"
BORG_VERSION = "1.2.4"
PASSWORD = "compare-benchmark-passphrase"


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def repo_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))  # bench/compare -> repo root


def find_mkdata(root):
    cands = []
    if os.environ.get("SHARED"):
        cands.append(os.environ["SHARED"])
    cands += [os.path.join(os.path.dirname(root), "shared"), "/work/shared"]
    for c in cands:
        p = os.path.join(c, "bench", "mkdata.py")
        if os.path.isfile(p):
            return p
    sys.exit("compare: cannot find shared/bench/mkdata.py (looked in %s)" % ", ".join(cands))


def run_quiet(cmd, **kw):
    """Run an untimed helper command; return (rc, stdout+stderr)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    return p.returncode, p.stdout


def must(cmd, **kw):
    rc, out = run_quiet(cmd, **kw)
    if rc != 0:
        sys.exit(f"compare: {' '.join(cmd)} failed ({rc}):\n{out}")
    return out


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def measure(cmd, env, cwd=None, logfile=None):
    """Run cmd; return dict(rc, wall seconds, peak RSS bytes)."""
    out = open(logfile, "ab") if logfile else subprocess.DEVNULL
    if logfile:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if logfile:
        out.close()
    return {"rc": p.returncode, "wall": wall, "rss": ru.ru_maxrss * 1024}  # ru_maxrss is KiB on Linux


def du(path):
    out = must(["du", "-sb", path])
    return int(out.split()[0])


def regular_files(path):
    """Yield (relative path, full path, size) of every regular file under
    path, symbolic links not followed, in a stable order."""
    for d, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue  # gone since the listing
            if stat.S_ISREG(st.st_mode):  # not links, FIFOs (a read would block), sockets, devices
                yield os.path.relpath(p, path), p, st.st_size


def tree_bytes(path):
    return sum(size for _, _, size in regular_files(path))


def tree_files(path):
    return sum(1 for _ in regular_files(path))


def tree_hashes(path):
    """Map of relative path to a digest of the contents, for every regular
    file under path that can be read; and the number that could not."""
    hashes, unreadable = {}, 0
    for rel, p, _ in regular_files(path):
        h = hashlib.blake2b(digest_size=16)
        try:
            with open(p, "rb") as fh:
                while True:
                    b = fh.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
        except OSError:
            unreadable += 1
            continue
        hashes[rel] = h.digest()
    return hashes, unreadable


def compare_trees(want, restored):
    """'verified' when the restored folder holds exactly the files of want
    (a tree_hashes map) with the same contents, else what differs."""
    got = tree_hashes(restored)[0] if os.path.isdir(restored) else {}
    if got == want:
        return "verified"
    missing = sum(1 for k in want if k not in got)
    differ = sum(1 for k in want if k in got and got[k] != want[k])
    extra = sum(1 for k in got if k not in want)
    return f"MISMATCH ({missing} missing, {differ} different, {extra} extra of {len(want)} files)"


def inside(path, folder):
    """Whether path is folder or under it (both resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_src(src, root, parent):
    """Exit with one sentence unless src is a folder the run can leave
    untouched: the script writes into the repository (bin/, bench/out/), the
    work folder and Go's caches, so none may lie inside it."""
    if not os.path.isdir(src):
        sys.exit(f"compare: SRC={src} is not a folder")
    writes = {"the repository": root, "the work folder's parent (BENCH_TMP)": parent}
    for var in ("GOCACHE", "GOMODCACHE", "GOPATH"):
        rc, out = run_quiet(["go", "env", var])
        for p in out.strip().split(os.pathsep) if rc == 0 else []:
            if p:
                writes[f"Go's {var}"] = p
    for what, p in writes.items():
        if inside(p, src):
            sys.exit(f"compare: SRC={src} contains {what} ({p}), which this run writes to; "
                     f"name a folder outside it (or set BENCH_TMP elsewhere)")


# ---------------------------------------------------------------- peers

def gopath_bin():
    return os.path.join(must(["go", "env", "GOPATH"]).strip().split(os.pathsep)[0], "bin")


def ensure_restic(no_install):
    exe = os.path.join(gopath_bin(), "restic")
    if os.path.isfile(exe):
        rc, out = run_quiet([exe, "version"])
        if rc == 0 and RESTIC_VERSION in out:
            return exe, out.strip().splitlines()[0]
    if no_install:
        return None, "not installed (NO_INSTALL=1)"
    log(f"installing restic {RESTIC_VERSION} with go install (takes a few minutes)")
    rc, out = run_quiet(["go", "install", f"github.com/restic/restic/cmd/restic@v{RESTIC_VERSION}"])
    if rc != 0 or not os.path.isfile(exe):
        log("restic install failed:\n" + out[-2000:])
        return None, "install failed"
    return exe, run_quiet([exe, "version"])[1].strip().splitlines()[0]


def ensure_borg(no_install):
    exe = shutil.which("borg")
    if exe is None and not no_install:
        log("installing borgbackup from Debian packages")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        rc, out = run_quiet(["apt-get", "install", "-y", "borgbackup"], env=env)
        if rc != 0:
            run_quiet(["apt-get", "update"], env=env)
            rc, out = run_quiet(["apt-get", "install", "-y", "borgbackup"], env=env)
        if rc != 0:
            log("borg install failed:\n" + out[-2000:])
        exe = shutil.which("borg")
    if exe is None:
        return None, "not installed" + (" (NO_INSTALL=1)" if no_install else " (apt-get install borgbackup failed)")
    version = run_quiet([exe, "--version"])[1].strip()
    return exe, version


# ---------------------------------------------------------------- tools

class Tool:
    name = ""

    def __init__(self, exe, work):
        self.exe = exe
        self.repo = os.path.join(work, "repo-" + self.name)
        self.work = work
        self.logfile = os.path.join(work, f"log-{self.name}.txt")

    def env(self):
        return dict(os.environ)

    def setup(self):
        pass

    def commands(self, phase, src, target):
        raise NotImplementedError

    # Exit codes that mean "done, but some source files were unreadable".
    warn_codes = (3,)

    def repo_size(self):
        return du(self.repo)

    def stored_before_parity(self):
        return self.repo_size()


class Coffer(Tool):
    name = "coffer"

    def env(self):
        return dict(os.environ, COFFER_REPO=self.repo, COFFER_TENANT="bench")

    def setup(self):
        must([self.exe, "init"], env=self.env())
        must([self.exe, "tenant", "create", "bench"], env=self.env())
        with open(os.path.join(self.repo, "config.json")) as f:
            cfg = json.load(f)
        self.k, self.m = cfg["data_shards"], cfg["parity_shards"]

    def commands(self, phase, src, target):
        if phase in ("backup-1", "backup-2"):
            return [[self.exe, "backup", src]], None
        if phase == "restore":
            return [[self.exe, "restore", "latest", "--target", target]], None
        return [[self.exe, "check", "--read-data"]], None

    def stored_before_parity(self):
        # Shard files on the drives scaled by k/(k+m), plus the index and
        # config (everything outside drives/) counted in full.
        drives = du(os.path.join(self.repo, "drives"))
        return self.repo_size() - drives + drives * self.k // (self.k + self.m)


class CofferBase(Coffer):
    """Coffer built from the revision BASE names, for before/after runs."""
    name = "coffer-base"


class Restic(Tool):
    name = "restic"

    def env(self):
        return dict(os.environ, RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD=PASSWORD,
                    RESTIC_CACHE_DIR=os.path.join(self.work, "cache-restic"))

    def setup(self):
        must([self.exe, "init"], env=self.env())

    def commands(self, phase, src, target):
        if phase in ("backup-1", "backup-2"):
            return [[self.exe, "backup", "--compression", "auto", "--quiet", src]], None
        if phase == "restore":
            return [[self.exe, "restore", "latest", "--target", target, "--quiet"]], None
        return [[self.exe, "check", "--read-data"]], None


class Borg(Tool):
    name = "borg"
    warn_codes = (1,)

    def env(self):
        return dict(os.environ, BORG_PASSPHRASE=PASSWORD, BORG_REPO=self.repo,
                    BORG_BASE_DIR=os.path.join(self.work, "borg-base"),
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def setup(self):
        must([self.exe, "init", "--encryption", "repokey-blake2", self.repo], env=self.env())

    def commands(self, phase, src, target):
        if phase == "backup-1":
            return [[self.exe, "create", "--compression", "zstd,3", "::day1", src]], None
        if phase == "backup-2":
            return [[self.exe, "create", "--compression", "zstd,3", "::day2", src]], None
        if phase == "restore":
            os.makedirs(target, exist_ok=True)
            return [[self.exe, "extract", "::day2"]], target  # borg extracts into the cwd
        return [[self.exe, "check", "--verify-data"]], None


# ---------------------------------------------------------------- report

def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / (1 << 20))
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release()}


def loadavg():
    try:
        return " ".join("%.2f" % x for x in os.getloadavg())
    except OSError:
        return "unknown"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def aggregate(rounds, tools):
    """Per (phase, tool): median wall over the rounds that succeeded, max RSS,
    sizes of the last successful round."""
    agg, sizes = {}, {}
    for phase in PHASES:
        for t in tools:
            rs = [r["results"][(phase, t)] for r in rounds if (phase, t) in r["results"]]
            if not rs:
                continue
            ok = [x for x in rs if x["rc"] == 0]
            src_bytes = rounds[0]["day1_bytes"] if phase == "backup-1" else rounds[0]["day2_bytes"]
            a = {"rc": 0 if len(ok) == len(rs) else next(x["rc"] for x in rs if x["rc"] != 0),
                 "failed": len(rs) - len(ok), "n": len(rs),
                 "walls": [x["wall"] for x in rs],
                 "verify": "",
                 "note": "; ".join(sorted({x["note"] for x in ok if x.get("note")}))}
            if ok:
                a["wall"] = median([x["wall"] for x in ok])
                a["mbps"] = src_bytes / 1e6 / a["wall"]
                a["best_mbps"] = src_bytes / 1e6 / min(x["wall"] for x in ok)
                a["rss"] = max(x["rss"] for x in ok)
            if phase == "restore":
                vs = [x.get("verify", "") for x in ok]
                a["verify"] = "verified" if vs and all(v == "verified" for v in vs) else \
                    "; ".join(v for v in vs if v != "verified")
            agg[(phase, t)] = a
            for r in rounds:
                if (phase, t) in r["sizes"]:
                    sizes[(phase, t)] = r["sizes"][(phase, t)]
    return agg, sizes


def build_report(ctx, rounds, tools, peers_missing):
    agg, sizes = aggregate(rounds, tools)
    r0 = rounds[0]
    L = []
    m = ctx["machine"]
    L.append(f"# Coffer vs restic vs borg — {ctx['date']}")
    L.append("")
    L.append(f"- Command: `{ctx['command']}`")
    L.append(f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['mem']} RAM, Linux {m['kernel']}")
    if ctx["src"]:
        L.append(f"- Data set: the folder `{ctx['src']}` (only read) = {r0['day1_bytes'] / 1e6:.1f} MB "
                 f"in {r0['day1_files']} regular files at the first backup, {r0['day2_bytes'] / 1e6:.1f} MB "
                 f"({r0['day2_files']} files) at the second; backup-2 is an unchanged re-backup")
    else:
        profile = f" --profile {ctx['profile']}" if ctx["profile"] != "mixed" else ""
        L.append(f"- Data set: `mkdata.py create --scale {ctx['scale']}{profile}` = {r0['day1_bytes'] / 1e6:.1f} MB "
                 f"({r0['day1_files']} files); day 2 after `mkdata.py mutate` = {r0['day2_bytes'] / 1e6:.1f} MB "
                 f"({r0['day2_files']} files)")
    L.append(f"- Versions: {ctx['versions']}")
    fresh = "the same folder" if ctx["src"] else "fresh data set"
    L.append(f"- Rounds: {len(rounds)} (each round: {fresh}, fresh repositories, all four phases; "
             f"the tool order rotates per phase and per round)")
    L.append(f"- Load average (1/5/15 min) at start: {ctx['load_start']}; at end: {ctx['load_end']} "
             f"(above {m['nproc']} means other work shared the cores)")
    L.append(f"- Page cache dropped before every measured command: {'yes' if ctx['dropped'] else 'no (not permitted)'}")
    L.append(f"- Work folder (data and all repositories, same disk): under `{ctx['parent']}`")
    for name, why in peers_missing.items():
        L.append(f"- **{name} not run: {why}**")
    L.append("")
    L.append("time = median wall time over the rounds (all rounds in brackets); "
             "MB/s = source bytes of the snapshot concerned (day 1 for backup-1, day 2 otherwise) / median time, "
             "MB = 10^6 bytes; peak RSS = largest ru_maxrss of the tool's process over the rounds; "
             "repo = `du -sb` of the repository after the backup (MiB); for Coffer the figure in brackets "
             "is before parity: du(drives/) × k/(k+m) + du(everything outside drives/).")
    L.append("")
    L.append("| phase | tool | time s | MB/s | peak RSS MiB | repo MiB | status |")
    L.append("|---|---|---:|---:|---:|---:|---|")
    for phase in PHASES:
        for t in tools:
            a = agg.get((phase, t))
            if a is None:
                continue
            size = ""
            if (phase, t) in sizes:
                total, before = sizes[(phase, t)]
                size = f"{total / 2**20:.1f}"
                if t == "coffer":
                    size += f" ({before / 2**20:.1f})"
            status = "ok" if a["rc"] == 0 else f"FAILED in {a['failed']} of {a['n']} rounds (rc={a['rc']})"
            if a["verify"]:
                status += f", {a['verify']}"
            if a["note"]:
                status += f", {a['note']}"
            walls = "/".join(f"{w:.2f}" for w in a["walls"])
            if "wall" in a:
                time_cell = f"{a['wall']:.2f}" + (f" ({walls})" if len(a["walls"]) > 1 else "")
                L.append(f"| {phase} | {t} | {time_cell} | {a['mbps']:.1f} | {a['rss'] / 2**20:.0f} | {size} | {status} |")
            else:
                L.append(f"| {phase} | {t} | — | — | — | {size} | {status} |")
    L.append("")
    peers = [t for t in tools if t != "coffer"]
    if "coffer" in tools and peers:
        L.append("Coffer's ratios: throughput = Coffer MB/s ÷ peer MB/s from the median times "
                 "(higher is better); best = the same from each tool's fastest round, less disturbed by "
                 "other load; RSS = Coffer peak RSS ÷ peer peak RSS (lower is better).")
        L.append("")
        L.append("| phase | " + " | ".join(f"vs {p}: throughput | best | RSS" for p in peers) + " |")
        L.append("|---|" + "---:|---:|---:|" * len(peers))
        for phase in PHASES:
            c = agg.get((phase, "coffer"))
            if c is None:
                continue
            cells = []
            for p in peers:
                r = agg.get((phase, p))
                if r is None or "wall" not in c or "wall" not in r:
                    cells += ["—", "—", "—"]
                else:
                    cells += [f"{c['mbps'] / r['mbps']:.2f}×", f"{c['best_mbps'] / r['best_mbps']:.2f}×",
                              f"{c['rss'] / r['rss']:.2f}×"]
            L.append(f"| {phase} | " + " | ".join(cells) + " |")
        row = []
        for phase in ("backup-1", "backup-2"):
            cs = sizes.get((phase, "coffer"))
            for p in peers:
                ps = sizes.get((phase, p))
                if cs and ps and p == "coffer-base":
                    row.append(f"after {phase} vs {p}: {cs[0] / ps[0]:.2f}×")
                elif cs and ps:
                    row.append(f"after {phase} vs {p}: {cs[1] / ps[0]:.2f}× before parity, "
                               f"{cs[0] / ps[0]:.2f}× with parity")
        if row:
            L.append("")
            L.append("Stored bytes, Coffer ÷ peer (lower is better): " + "; ".join(row) + ".")
    L.append("")
    L.append("Commands of one round (setup untimed: `coffer init` + `coffer tenant create bench`; "
             "`restic init`; `borg init --encryption repokey-blake2`; WORK is the round's temp folder):")
    L.append("")
    for line in r0["commands"]:
        L.append(f"    {line}")
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------- run

def run_round(rnd, tools, exes, mkdata, scale, profile, given_src, parent, dropped, keep):
    """One round; given_src (SRC) is only read, else a data set is made."""
    work = tempfile.mkdtemp(prefix="coffer-compare-", dir=parent)
    if given_src:
        src = given_src
        log(f"round {rnd + 1}: work folder {work}; source {src} (read only)")
    else:
        src = os.path.join(work, "src")
        log(f"round {rnd + 1}: work folder {work}; generating data set (scale {scale}, profile {profile})")
        cmd = [sys.executable, mkdata, "create", src, "--scale", str(scale)]
        if profile != "mixed":
            cmd += ["--profile", profile]
        must(cmd)
    out = {"work": work, "results": {}, "sizes": {}, "commands": [],
           "day1_bytes": tree_bytes(src), "day1_files": tree_files(src)}

    classes = {"coffer": Coffer, "coffer-base": CofferBase, "restic": Restic, "borg": Borg}
    objs = {t: classes[t](exes[t], work) for t in tools}
    for t in tools:
        objs[t].setup()

    src_hashes = None
    for i, phase in enumerate(PHASES):
        if phase == "backup-2":
            if not given_src:
                log("mutating the data set into day 2")
                must([sys.executable, mkdata, "mutate", src])
            out["day2_bytes"] = tree_bytes(src)
            out["day2_files"] = tree_files(src)
        if phase == "restore":
            src_hashes, unreadable = tree_hashes(src)
            if unreadable:
                log(f"{unreadable} files of the source cannot be read; the restores are compared without them")
        src_bytes = out["day1_bytes"] if phase == "backup-1" else out["day2_bytes"]
        k = (i + rnd) % len(tools)
        for t in tools[k:] + tools[:k]:
            tool = objs[t]
            target = os.path.join(work, f"restore-{t}")
            cmds, cwd = tool.commands(phase, src, target)
            total = {"rc": 0, "wall": 0.0, "rss": 0}
            for cmd in cmds:
                out["commands"].append(" ".join(os.path.basename(c) if c == tool.exe else c.replace(work, "WORK")
                                                for c in cmd) + (f"   (in {cwd.replace(work, 'WORK')})" if cwd else ""))
                if dropped:
                    drop_caches()
                r = measure(cmd, tool.env(), cwd=cwd, logfile=tool.logfile)
                total["wall"] += r["wall"]
                total["rss"] = max(total["rss"], r["rss"])
                if given_src and phase in ("backup-1", "backup-2") and r["rc"] in tool.warn_codes:
                    total["note"] = f"some files unreadable (rc={r['rc']})"
                elif r["rc"] != 0:
                    total["rc"] = r["rc"]
                    break
            total["mbps"] = src_bytes / 1e6 / total["wall"] if total["wall"] > 0 else 0.0
            out["results"][(phase, t)] = total
            msg = f"{phase:9s} {t:7s} {total['wall']:8.2f} s {total['mbps']:8.1f} MB/s {total['rss'] / 2**20:7.0f} MiB"
            if total.get("note"):
                msg += f"  {total['note']}"
            if total["rc"] != 0:
                msg += f"  FAILED rc={total['rc']} (see {tool.logfile})"
                with open(tool.logfile, "rb") as f:
                    tail = f.read()[-1500:].decode(errors="replace")
                msg += "\n" + tail
                keep = True
            if phase in ("backup-1", "backup-2") and total["rc"] == 0:
                out["sizes"][(phase, t)] = (tool.repo_size(), tool.stored_before_parity())
                msg += f"  repo {out['sizes'][(phase, t)][0] / 2**20:.1f} MiB"
            if phase == "restore" and total["rc"] == 0:
                restored = os.path.join(target, src.lstrip("/"))
                total["verify"] = compare_trees(src_hashes, restored)
                msg += "  " + total["verify"]
                shutil.rmtree(target, ignore_errors=True)  # free the space before the next tool
            log(msg)
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return out


def build_base(root, rev):
    """Builds Coffer at git revision rev into bin/coffer-base."""
    wt = tempfile.mkdtemp(prefix="coffer-base-")
    os.rmdir(wt)
    log(f"building coffer-base: {rev} in {wt}")
    must(["git", "worktree", "add", "--detach", wt, rev])
    try:
        exe = os.path.join(root, "bin", "coffer-base")
        must(["go", "build", "-o", exe, "./cmd/coffer"], cwd=wt)
        rc, desc = run_quiet(["git", "-C", wt, "describe", "--always"])
    finally:
        must(["git", "worktree", "remove", "--force", wt])
    return exe, "coffer-base " + (desc.strip() if rc == 0 else rev)


def main():
    root = repo_root()
    os.chdir(root)
    scale = float(os.environ.get("SCALE", "0.25"))
    profile = os.environ.get("PROFILE") or "mixed"
    if profile not in ("mixed", "smallfiles"):
        sys.exit(f"compare: PROFILE={profile} is not mixed or smallfiles")
    given_src = os.path.realpath(os.environ["SRC"]) if os.environ.get("SRC") else None
    nrounds = max(1, int(os.environ.get("ROUNDS", "3")))
    tools = [t.strip() for t in os.environ.get("TOOLS", ",".join(ALL_TOOLS)).split(",") if t.strip()]
    no_install = os.environ.get("NO_INSTALL") == "1"
    keep = os.environ.get("KEEP") == "1"
    parent = os.environ.get("BENCH_TMP") or tempfile.gettempdir()
    if given_src:
        check_src(given_src, root, parent)
        mkdata = None
    else:
        mkdata = find_mkdata(root)
    date = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    machine = machine_info()
    load_start = loadavg()
    log(f"machine: {machine['nproc']} cores, {machine['cpu']}, {machine['mem']} RAM; load {load_start}")

    # 1. build coffer
    log("building coffer: go build -o bin/coffer ./cmd/coffer")
    must(["go", "build", "-o", "bin/coffer", "./cmd/coffer"])
    coffer_exe = os.path.join(root, "bin", "coffer")
    rc, rev = run_quiet(["git", "describe", "--always", "--dirty"])
    coffer_version = "coffer " + (rev.strip() if rc == 0 else "(no git)")

    # 2. peers
    exes = {"coffer": coffer_exe}
    versions = [coffer_version]
    missing = {}
    base = os.environ.get("BASE")
    if base:
        exes["coffer-base"], ver = build_base(root, base)
        versions.append(ver)
        if "coffer-base" not in tools:
            tools.insert(1 if tools and tools[0] == "coffer" else 0, "coffer-base")
    if "restic" in tools:
        exe, ver = ensure_restic(no_install)
        if exe:
            exes["restic"] = exe
            versions.append(ver)
        else:
            missing["restic"] = ver
    if "borg" in tools:
        exe, ver = ensure_borg(no_install)
        if exe:
            exes["borg"] = exe
            versions.append(ver)
        else:
            missing["borg"] = ver
    tools = [t for t in tools if t in exes]
    versions.append(must(["go", "env", "GOVERSION"]).strip())
    for name, why in missing.items():
        log(f"WARNING: {name} is not run: {why}")

    dropped = drop_caches()
    if not dropped:
        log("cannot drop the page cache (not permitted); caches stay warm")

    # 3. rounds
    rounds = [run_round(r, tools, exes, mkdata, scale, profile, given_src, parent, dropped, keep)
              for r in range(nrounds)]

    env_cmd = " ".join(f"{k}={os.environ[k]}" for k in ("SCALE", "PROFILE", "SRC", "ROUNDS", "TOOLS", "BASE", "BENCH_TMP")
                       if os.environ.get(k))
    ctx = {"date": date, "machine": machine, "scale": scale, "profile": profile, "src": given_src,
           "versions": ", ".join(versions),
           "dropped": dropped, "load_start": load_start, "load_end": loadavg(), "parent": parent,
           "command": (env_cmd + " " if env_cmd else "") + "make compare"}
    report = build_report(ctx, rounds, tools, missing)
    outdir = os.path.join(root, "bench", "out")
    os.makedirs(outdir, exist_ok=True)
    outfile = os.path.join(outdir, f"compare-{date}.md")
    with open(outfile, "w") as f:
        f.write(report)
    print()
    print(report)
    log(f"wrote {os.path.relpath(outfile, root)}")
    failed = [k for r in rounds for k, x in r["results"].items()
              if x["rc"] != 0 or "MISMATCH" in x.get("verify", "")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
