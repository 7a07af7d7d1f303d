"""Azimuth vs DVC vs Snakemake vs a plain shell baseline, side by side on one machine.

The 4-stage pipeline of shared/anchors.md: `gen` writes SIZE_MB of seeded random bytes, `count_zero`
and `count_ff` each read the whole file and count one byte value, `agg` joins the two counts.
Every stage appends its name to `runs.log` (outside the tools' view) so re-runs are counted the
same way for every tool.

Measured per tool: cold run (wall time, overhead over the baseline), no-op re-run (median of 5),
`touch` of the big file (time, stages re-run), a one-byte change of the big file (time, stages
re-run), peak RSS of the orchestrator process alone (not its stages), and bytes written beyond
what the baseline writes (`wchar` from /proc/PID/io, which includes reaped children: a copy of
the artifact into a cache shows up as +1024 MiB).

Run it through bench/orchestrators.sh, which builds Azimuth and installs DVC and Snakemake.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

GEN = """\
import random, sys
out, seed, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(out, "wb") as f:
    for _ in range(mb // 8):
        f.write(rng.randbytes(8 << 20))
open(sys.argv[4], "a").write("gen\\n")
"""
COUNT = """\
import sys
path, value, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = 0
with open(path, "rb") as f:
    while chunk := f.read(8 << 20):
        n += chunk.count(bytes([value]))
open(out, "w").write(f"{n}\\n")
open(sys.argv[4], "a").write(f"count_{value}\\n")
"""
AGG = """\
import sys
a, b, out = sys.argv[1:4]
open(out, "w").write(f"zero={open(a).read().strip()} ff={open(b).read().strip()}\\n")
open(sys.argv[4], "a").write("agg\\n")
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def measure(cmd, cwd, env=None):
    """Runs cmd; returns (wall seconds, peak RSS MiB of that process alone, MiB it wrote)."""
    log = open(os.path.join(cwd, "bench-last-run.log"), "w")
    start = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    peak_kb, wchar = 0, 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            with open(f"/proc/{p.pid}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        wchar = max(wchar, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
        time.sleep(0.002)
    wall = time.perf_counter() - start
    log.close()
    if p.returncode != 0:
        tail = open(os.path.join(cwd, "bench-last-run.log")).read()[-3000:]
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{tail}")
    return wall, peak_kb / 1024, wchar / (1 << 20)


class Tool:
    name = ""

    def __init__(self, root, args):
        self.dir = os.path.join(root, self.name)
        self.args = args
        self.log = os.path.join(self.dir, "runs.log")

    def runs(self):
        try:
            return len(open(self.log).read().split())
        except FileNotFoundError:
            return 0

    def big_file(self):
        raise NotImplementedError

    def setup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        for name, text in [("gen.py", GEN), ("count.py", COUNT), ("agg.py", AGG)]:
            write(os.path.join(self.dir, "scripts", name), text)
        self.setup_tool()

    def reset(self):
        """Back to a cold state: no outputs, no cache."""
        self.setup()


class Baseline(Tool):
    name = "baseline"

    def setup_tool(self):
        mb, log = self.args.size_mb, self.log
        write(os.path.join(self.dir, "run.sh"), textwrap.dedent(f"""\
            set -e
            mkdir -p out
            python3 scripts/gen.py out/data.bin 42 {mb} {log}
            python3 scripts/count.py out/data.bin 0 out/zero.txt {log}
            python3 scripts/count.py out/data.bin 255 out/ff.txt {log}
            python3 scripts/agg.py out/zero.txt out/ff.txt out/report.txt {log}
            """))

    def cmd(self):
        return ["sh", "run.sh"]


class Azimuth(Tool):
    name = "azimuth"

    def setup_tool(self):
        write(os.path.join(self.dir, "pipeline.yaml"), textwrap.dedent(f"""\
            params: {{seed: 42}}
            stages:
              gen:
                cmd: [python3, "${{inputs.script}}", "${{outputs.data}}", "${{params.seed}}", "{self.args.size_mb}", "{self.log}"]
                inputs: {{script: {{path: scripts/gen.py}}}}
                params: {{seed: "${{seed}}"}}
                outputs: {{data: data.bin}}
              count_zero:
                cmd: [python3, "${{inputs.script}}", "${{inputs.data}}", "0", "${{outputs.n}}", "{self.log}"]
                inputs: {{script: {{path: scripts/count.py}}, data: gen.data}}
                outputs: {{n: zero.txt}}
              count_ff:
                cmd: [python3, "${{inputs.script}}", "${{inputs.data}}", "255", "${{outputs.n}}", "{self.log}"]
                inputs: {{script: {{path: scripts/count.py}}, data: gen.data}}
                outputs: {{n: ff.txt}}
              agg:
                cmd: [python3, "${{inputs.script}}", "${{inputs.a}}", "${{inputs.b}}", "${{outputs.r}}", "{self.log}"]
                inputs: {{script: {{path: scripts/agg.py}}, a: count_zero.n, b: count_ff.n}}
                outputs: {{r: report.txt}}
            """))

    def cmd(self):
        return [self.args.azimuth, "run", "-q", "-j", "1"]

    def big_file(self):
        return os.path.join(self.dir, "out/gen/data.bin")


class Dvc(Tool):
    name = "dvc"

    def setup_tool(self):
        write(os.path.join(self.dir, "params.yaml"), "seed: 42\n")
        log, mb = self.log, self.args.size_mb
        write(os.path.join(self.dir, "dvc.yaml"), textwrap.dedent(f"""\
            stages:
              gen:
                cmd: python3 scripts/gen.py data.bin ${{seed}} {mb} {log}
                deps: [scripts/gen.py]
                params: [seed]
                outs: [data.bin]
              count_zero:
                cmd: python3 scripts/count.py data.bin 0 zero.txt {log}
                deps: [scripts/count.py, data.bin]
                outs: [zero.txt]
              count_ff:
                cmd: python3 scripts/count.py data.bin 255 ff.txt {log}
                deps: [scripts/count.py, data.bin]
                outs: [ff.txt]
              agg:
                cmd: python3 scripts/agg.py zero.txt ff.txt report.txt {log}
                deps: [scripts/agg.py, zero.txt, ff.txt]
                outs: [report.txt]
            """))
        env = self.env()
        subprocess.run(["git", "init", "-q"], cwd=self.dir, check=True)
        subprocess.run([self.dvc(), "init", "-q"], cwd=self.dir, check=True, env=env)
        subprocess.run([self.dvc(), "config", "core.analytics", "false"], cwd=self.dir, check=True, env=env)
        subprocess.run([self.dvc(), "config", "core.autostage", "false"], cwd=self.dir, check=True, env=env)

    def env(self):
        return dict(os.environ, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=os.path.join(self.dir, ".dvc-site"))

    def dvc(self):
        return os.path.join(self.args.venv, "bin", "dvc")

    def cmd(self):
        return [self.dvc(), "repro", "-q"]

    def big_file(self):
        return os.path.join(self.dir, "data.bin")


class Snakemake(Tool):
    name = "snakemake"

    def setup_tool(self):
        log, mb = self.log, self.args.size_mb
        write(os.path.join(self.dir, "Snakefile"), textwrap.dedent(f"""\
            rule all:
                input: "report.txt"
            rule gen:
                input: "scripts/gen.py"
                output: "data.bin"
                params: seed=42
                shell: "python3 scripts/gen.py {{output}} {{params.seed}} {mb} {log}"
            rule count_zero:
                input: "scripts/count.py", "data.bin"
                output: "zero.txt"
                shell: "python3 scripts/count.py data.bin 0 {{output}} {log}"
            rule count_ff:
                input: "scripts/count.py", "data.bin"
                output: "ff.txt"
                shell: "python3 scripts/count.py data.bin 255 {{output}} {log}"
            rule agg:
                input: "scripts/agg.py", "zero.txt", "ff.txt"
                output: "report.txt"
                shell: "python3 scripts/agg.py zero.txt ff.txt {{output}} {log}"
            """))

    def cmd(self):
        return [os.path.join(self.args.venv, "bin", "snakemake"), "--cores", "1", "all"]

    def big_file(self):
        return os.path.join(self.dir, "data.bin")


def cold_run(tool):
    env = tool.env() if hasattr(tool, "env") else None
    tool.reset()
    return measure(tool.cmd(), tool.dir, env)


def bench(tool, result):
    env = tool.env() if hasattr(tool, "env") else None
    noops = []
    for _ in range(5):
        before = tool.runs()
        wall, rss2, _ = measure(tool.cmd(), tool.dir, env)
        assert tool.runs() == before, f"{tool.name}: a no-op run re-ran stages"
        noops.append(wall)
        result["rss"] = max(result["rss"], rss2)
    result["noop"] = statistics.median(noops)
    big = tool.big_file()
    time.sleep(0.05)
    os.utime(big, None)  # what `touch` does
    before = tool.runs()
    result["touch"], _, _ = measure(tool.cmd(), tool.dir, env)
    result["touch_reruns"] = tool.runs() - before
    os.chmod(big, 0o644)
    with open(big, "r+b") as f:
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0xFF]))
    before = tool.runs()
    result["onebyte"], _, _ = measure(tool.cmd(), tool.dir, env)
    result["onebyte_reruns"] = tool.runs() - before
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--azimuth", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", default=os.path.join(os.getcwd(), ".bench", "orchestrators"))
    args = ap.parse_args()
    tools = [Baseline(args.root, args), Azimuth(args.root, args), Dvc(args.root, args), Snakemake(args.root, args)]
    # Cold runs in interleaved rounds (baseline, then each tool), so load changes on the machine
    # hit everyone alike; overheads are paired with the baseline of the same round.
    results = {t.name: {"cold_runs": [], "overheads": [], "overheads_s": [], "rss": 0.0, "wrote": 0.0} for t in tools}
    for rnd in range(args.rounds):
        base_wall = None
        for t in tools:
            print(f"round {rnd + 1}/{args.rounds}: cold run of {t.name} ...", file=sys.stderr, flush=True)
            wall, rss, wrote = cold_run(t)
            r = results[t.name]
            r["cold_runs"].append(wall)
            r["rss"] = max(r["rss"], rss)
            r["wrote"] = wrote
            if t.name == "baseline":
                base_wall = wall
            else:
                r["overheads"].append((wall - base_wall) / base_wall * 100)
                r["overheads_s"].append(wall - base_wall)
    for t in tools:
        r = results[t.name]
        r["cold"] = statistics.median(r["cold_runs"])
        if t.name != "baseline":
            r["overhead"] = statistics.median(r["overheads"])
            r["overhead_s"] = statistics.median(r["overheads_s"])
            print(f"re-runs of {t.name} ...", file=sys.stderr, flush=True)
            bench(t, r)
    base = results["baseline"]["cold"]
    base_wrote = results["baseline"]["wrote"]
    print(f"\n4-stage pipeline, {args.size_mb} MiB artifact, {os.cpu_count()} cores; baseline (plain shell) cold run {base:.2f} s (median of {args.rounds})\n")
    cols = ["azimuth", "dvc", "snakemake"]
    print("cold runs per round (s): " + "; ".join(f"{t.name} " + " ".join(f"{x:.2f}" for x in results[t.name]["cold_runs"]) for t in tools) + "\n")
    print(f"{'measurement':<34}" + "".join(f"{c:>14}" for c in cols))
    rows = [
        ("cold run, median (s)", lambda r: f"{r['cold']:.2f}"),
        ("cold overhead, paired median", lambda r: f"{r['overhead']:+.1f}%"),
        ("cold overhead, paired median (s)", lambda r: f"{r['overhead_s']:+.2f}"),
        ("no-op re-run, median of 5 (ms)", lambda r: f"{r['noop'] * 1000:.0f}"),
        ("touch big file: run (ms)", lambda r: f"{r['touch'] * 1000:.0f}"),
        ("touch big file: stages re-run", lambda r: f"{r['touch_reruns']}"),
        ("1-byte change: run (s)", lambda r: f"{r['onebyte']:.2f}"),
        ("1-byte change: stages re-run", lambda r: f"{r['onebyte_reruns']}"),
        ("orchestrator peak RSS (MiB)", lambda r: f"{r['rss']:.1f}"),
        ("MiB written beyond the baseline", lambda r: f"{r['wrote'] - base_wrote:.1f}"),
    ]
    for label, fmt in rows:
        print(f"{label:<34}" + "".join(f"{fmt(results[c]):>14}" for c in cols))
    a = results["azimuth"]
    print()
    for other in ["dvc", "snakemake"]:
        o = results[other]
        print(f"no-op: azimuth is {o['noop'] / a['noop']:.0f}x faster than {other}; "
              f"touch: {o['touch'] / a['touch']:.1f}x faster")
    print("\n1-byte change: azimuth's workspace file is a hard link to the cached object, so an edit in place")
    print("changes the object too: azimuth detects it, discards the object, re-runs `gen`, keeps the user's")
    print("edited file (reported, not overwritten), and early cutoff keeps the readers fresh. DVC restores")
    print("its own copy over the edit; Snakemake accepts the edit and re-runs the readers.")


if __name__ == "__main__":
    main()
