"""Counting accuracy on PETS 2009 S2.L1 (vtest.avi) against its hand-made ground truth.

Run: .venv/bin/python bench/accuracy.py [--annotation ../shared/eval/pets09-s2l1/gt.txt]

The real edge pipeline (detector, tracker, scene, outbox) with the camera
config ``bench/pets09-s2l1.yaml`` (9 lines, 5 zones over the square's
walkways), at every frame (10 fps), every 2nd (5 fps) and every 3rd
(3.3 fps), and on the mirrored clip at 10 and 5 fps; see
``fleetsight edge eval``. The report goes to stdout and replaces the
"Counting accuracy" section of BENCHMARKS.md. The annotation is CC BY-NC-SA:
it is read from where it lies, never copied into the repository.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from common import MEDIA, ROOT, sample_frames

from fleetsight.cli import main as fleetsight

SECTION = "## Counting accuracy against ground truth"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation", type=Path, default=ROOT.parent / "shared" / "eval" / "pets09-s2l1" / "gt.txt")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    sample_frames(limit=1)  # fetches the clip once if it is missing
    with tempfile.TemporaryDirectory() as tmp:
        report_file = Path(tmp) / "report.md"
        code = fleetsight([
            "edge", "eval", "--config", str(ROOT / "bench" / "pets09-s2l1.yaml"), "--annotation", str(args.annotation),
            "--video", str(MEDIA / "vtest.avi"), "--every", "1", "2", "3", "--mirrored", "1", "2",
            "--markdown", str(report_file),
        ])
        if code:
            return code
        report = report_file.read_text()
    if not args.no_write:
        text = (ROOT / "BENCHMARKS.md").read_text()
        section = (
            f"{SECTION}\n\nCommand: `.venv/bin/python bench/accuracy.py` (the real edge pipeline with "
            "`bench/pets09-s2l1.yaml` over `vtest.avi`, PETS 2009 S2.L1, against its MOTChallenge ground truth in "
            "`../shared/eval/pets09-s2l1/`; 19 people). Errors are summed absolute differences per line and "
            "direction (per zone, per zone and minute) over the true totals; tracks are the `track.start` events "
            "(`camera_minute_counts.objects`); MOTA/IDF1 from py-motmetrics on the frames the detector ran.\n\n"
            + report.replace("### ", "#### ")
        )
        pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
        text = pattern.sub(lambda _: section.rstrip() + "\n", text) if SECTION in text else text.rstrip() + "\n\n" + section
        (ROOT / "BENCHMARKS.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
