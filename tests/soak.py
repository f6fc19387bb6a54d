"""The soak run: failover and chaos back to back, many times (``make soak``; not in ``make test``).

    python -m tests.soak [--scale-out 30] [--chaos 10] [--cluster 10] [--first-seed 1]

Runs the rebalance-mid-batch tests ``--rebalance`` times, the backlog run
(a loaded box, Kafka killed mid-drain) ``--backlog`` times, the scale-out
failover test (two workers, one SIGKILLed mid-run) ``--scale-out`` times,
the short chaos run on ``--chaos`` different seeds, and the cluster run (a
Kafka node killed, one frozen, two down, one of two bridges killed) on
``--cluster`` seeds, each in its own pytest process
with a deadline, and prints a line per run (pass / fail / hang, failover or
bridge takeover seconds, lost, double-counted) and a summary with the
failover and takeover p50 and p99. Exits non-zero if any run did not
pass. A hang is a run that went past its deadline: a bug, however rare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    kind: str
    n: int
    outcome: str  # pass, fail, hang
    seconds: float
    failover_s: float | None = None
    lost: int | None = None
    double: int | None = None
    extra: str = ""  # the run's own figures (a freeze's stand-still, a quorum's way back)

    def line(self) -> str:
        failover = f"{self.failover_s:5.1f} s" if self.failover_s is not None else "    - "
        counts = f"lost {self.lost}, double {self.double}" if self.lost is not None else "lost ?, double ?"
        extra = f"  {self.extra}" if self.extra else ""
        return f"{self.kind:<9} {self.n:>3}  {self.outcome:<4}  failover {failover}  {counts}{extra}  ({self.seconds:.0f} s)"


def run_one(kind: str, n: int, test: str, deadline_s: float, env: dict[str, str], logs: Path) -> Run:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    log = logs / f"{kind}-{n:02d}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env, "FLEETSIGHT_SOAK": "1", "FLEETSIGHT_SOAK_RESULT": str(result)},
        )
        try:
            code = proc.wait(timeout=deadline_s)
            outcome = "pass" if code == 0 else "fail"
        except subprocess.TimeoutExpired:
            outcome = "hang"
            # Ctrl-C: pytest runs its fixtures' teardown, which stops the
            # processes the test started; only then the hard way.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run = Run(kind, n, outcome, time.monotonic() - started)
    try:
        figures = json.loads(result.read_text() or "{}")
        run.failover_s, run.lost, run.double = figures.get("failover_s"), figures.get("lost"), figures.get("double")
        run.extra = figures.get("extra", "")
    except (OSError, ValueError):
        pass
    result.unlink(missing_ok=True)
    if outcome != "pass":
        print(f"    log: {log}", flush=True)
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale-out", type=int, default=30, help="failover runs")
    parser.add_argument("--chaos", type=int, default=10, help="chaos runs, one seed each")
    parser.add_argument("--cluster", type=int, default=10, help="cluster runs (Kafka nodes and a bridge killed), one seed each")
    parser.add_argument("--backlog", type=int, default=3, help="backlog runs (a loaded box, Kafka killed mid-drain)")
    parser.add_argument("--rebalance", type=int, default=10, help="runs of the rebalance-mid-batch tests (sink and worker)")
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="fleetsight-soak-"))
    print(f"soak: {args.scale_out} failover runs, {args.chaos} chaos runs, {args.cluster} cluster runs, {args.backlog} backlog runs, "
          f"{args.rebalance} rebalance runs; logs in {logs}", flush=True)
    runs: list[Run] = []
    for n in range(1, args.rebalance + 1):
        runs.append(run_one("rebalance", n, "tests/integration/test_rebalance.py", 420, {}, logs))
        print(runs[-1].line(), flush=True)
    for n in range(1, args.backlog + 1):
        runs.append(run_one("backlog", n, "tests/chaos/test_backlog.py", 900, {}, logs))
        print(runs[-1].line(), flush=True)
    for n in range(1, args.scale_out + 1):
        runs.append(run_one("failover", n, "tests/integration/test_scale_out.py", 420, {}, logs))
        print(runs[-1].line(), flush=True)
    for n in range(args.chaos):
        seed = args.first_seed + n
        runs.append(run_one("chaos", seed, "tests/chaos/test_chaos.py", 600, {"FLEETSIGHT_CHAOS_SEED": str(seed)}, logs))
        print(runs[-1].line(), flush=True)
    for n in range(args.cluster):
        seed = args.first_seed + n
        runs.append(run_one("cluster", seed, "tests/chaos/test_cluster.py", 600, {"FLEETSIGHT_CHAOS_SEED": str(seed)}, logs))
        print(runs[-1].line(), flush=True)
    failovers = [r.failover_s for r in runs if r.kind == "failover" and r.failover_s is not None]
    takeovers = [r.failover_s for r in runs if r.kind == "cluster" and r.failover_s is not None]
    outcomes = {o: sum(r.outcome == o for r in runs) for o in ("pass", "fail", "hang")}
    print(
        f"summary: {len(runs)} runs: {outcomes['pass']} passed, {outcomes['fail']} failed, {outcomes['hang']} hung; "
        f"lost {sum(r.lost or 0 for r in runs)}, double-counted {sum(r.double or 0 for r in runs)}"
    )
    if failovers:
        print(
            f"failover (SIGKILL to the dead worker's cameras moving in SQL), {len(failovers)} runs: "
            f"p50 {percentile(failovers, 0.5):.1f} s, p99 {percentile(failovers, 0.99):.1f} s, max {max(failovers):.1f} s"
        )
    if takeovers:
        print(
            f"bridge takeover (SIGKILL to every shard online on the other bridge), {len(takeovers)} runs: "
            f"p50 {percentile(takeovers, 0.5):.1f} s, p99 {percentile(takeovers, 0.99):.1f} s, max {max(takeovers):.1f} s"
        )
    sys.exit(0 if outcomes["pass"] == len(runs) else 1)


if __name__ == "__main__":
    main()
