"""The outbox survives SIGKILL in the middle of heavy writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from edge.events import NewEvent
from edge.outbox import Outbox
from runtime.settings import REPO_ROOT

WRITER = textwrap.dedent(
    """
    import sys
    from edge.events import NewEvent
    from edge.outbox import Outbox
    box = Outbox(sys.argv[1], "cam-1", "s")
    i = 0
    while True:
        batch = [NewEvent(1764072000000 + i + k, "health", {"uptime_s": float(i + k)}) for k in range(50)]
        stored = box.append(batch)
        i += 50
        print(stored[-1].seq, flush=True)  # acknowledged to the caller
    """
)


def test_sigkill_during_writes_loses_nothing_acknowledged_and_reuses_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 5000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    box = Outbox(path, "cam-1", "s")
    rows = box.read(0, 1_000_000)
    seqs = [e.seq for e in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous, nothing torn
    assert len(seqs) >= acknowledged  # everything acknowledged is there
    assert rows[acknowledged - 1].data == {"uptime_s": float(acknowledged - 1)}
    fresh = box.append([NewEvent(1, "health", {"uptime_s": 0.0})])
    assert fresh[0].seq == seqs[-1] + 1 > acknowledged
