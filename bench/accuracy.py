"""Counting accuracy on the suite: both annotated scenes, every picture condition, 10 and 5 fps.

Run: .venv/bin/python -m bench.accuracy [--no-write] [--set model.input_size=320 ...]

The real edge pipeline (gate, detector, tracker, scene, outbox) with the
camera files ``bench/pets09-s2l1.yaml`` (11 lines, 5 zones over a square
filmed from high up) and ``bench/mot16-09.yaml`` (9 lines, 4 zones at a shop
front filmed from hip height), each clip under every condition of
``edge/conditions.py``, at 10 and 5 detections a second
(``devtools/accuracy_suite.py``). The report goes to stdout and replaces the
"Counting accuracy" section of BENCHMARKS.md. The annotations are
CC BY-NC-SA: read from ``../shared/eval/``, never copied into the repository.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from bench.common import ROOT, parse_settings, sample_frames
from devtools.accuracy_suite import RATES, run_suite, scenes
from devtools.model_files import BROUGHT, model_settings
from devtools.model_files import missing as missing_models
from edge.accuracy import format_families, format_lines, format_suite
from edge.conditions import CONDITIONS
from edge.model_spec import DEFAULT_MODEL, registry

SECTION = "## Counting accuracy against ground truth"
FAMILIES_SECTION = "## Counting accuracy per detector family"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a camera setting over the scenes' files, dotted, the value in YAML (a lever to try); implies --no-write")
    parser.add_argument("--model", help="another architecture of edge/models/models.json (a brought one is read from ../shared/models); implies --no-write")
    parser.add_argument("--families", action="store_true",
                        help="the shipped model and every brought one found in ../shared/models, side by side (its own section of BENCHMARKS.md)")
    args = parser.parse_args()
    if args.families:
        return families(args.no_write)
    settings = parse_settings(args.set)
    if args.model:
        settings = {**model_settings(args.model), **settings}
    specs = suite_scenes()
    if specs is None:
        return 2
    started = time.monotonic()
    total = len(specs) * len(CONDITIONS)
    seen = []

    def done(rs: list) -> None:
        seen.append(rs)
        print(f"[{len(seen)}/{total}] {rs[0].scene} {rs[0].condition}: "
              + ", ".join(f"{r.fps:.3g} fps crossings {100 * r.crossing_error:.1f} % off" for r in rs), file=sys.stderr)

    results = run_suite(specs, done=done, settings=settings)
    elapsed = time.monotonic() - started
    conditions = "; ".join(f"{c.name}: {c.description}" for c in CONDITIONS.values())
    report = (
        f"{format_suite(results)}\n#### Per line and direction (truth, then counted per condition and rate)\n\n{format_lines(results)}"
    )
    print(report)
    if settings:
        print(f"with {', '.join(f'{k}={v}' for k, v in settings.items())}")
    if not args.no_write and not settings:
        section = (
            f"{SECTION}\n\nCommand: `.venv/bin/python -m bench.accuracy` ({elapsed:.0f} s on this 2-core box, a process per core). "
            "The real edge pipeline over PETS 2009 S2.L1 (`vtest.avi`, 19 people, `bench/pets09-s2l1.yaml`) and MOT16-09 "
            "(a shop front, 25 pedestrians; distractors, occluders and reflections are ignore regions, `bench/mot16-09.yaml`), "
            f"against their MOTChallenge ground truth in `../shared/eval/`, at {' and '.join(f'{r:g}' for r in RATES)} detections a second. "
            f"Conditions ({conditions}). Errors are summed absolute differences per line and direction (per zone, per zone and minute) "
            "over the true totals; tracks are the `track.start` events (`camera_minute_counts.objects`); MOTA/IDF1 from "
            "py-motmetrics on the frames the detector ran; the last column is how far the 5 fps crossing counts are from the "
            "10 fps ones.\n\n" + report
        )
        _write_section(SECTION, section)
    return 0


def suite_scenes() -> list | None:
    """The suite's scenes, or None (and why, on stderr) where their data is missing."""
    sample_frames(limit=1)  # fetches vtest.avi once if it is missing
    specs = scenes()
    missing = [str(p) for s in specs for p in s.missing()]
    if missing:
        print(f"suite data missing: {', '.join(missing)}", file=sys.stderr)
        return None
    return specs


def families(no_write: bool) -> int:
    """The suite once per detector family, each at its own thresholds, and a table of them side by side."""
    specs = suite_scenes()
    if specs is None:
        return 2
    models = [DEFAULT_MODEL, *(name for name in BROUGHT if not missing_models([name]))]
    started = time.monotonic()
    by_model = {}
    for i, name in enumerate(models, 1):
        print(f"[{i}/{len(models)}] {name} ...", file=sys.stderr, flush=True)
        by_model[name] = run_suite(specs, settings=model_settings(name))
    elapsed = time.monotonic() - started
    thresholds = ", ".join(f"{n} {registry()[n]['confidence']:g} / {registry()[n]['track_low']:g}" for n in models)
    report = format_families(by_model) + "".join(f"\n#### {name}\n\n{format_suite(rs)}" for name, rs in by_model.items())
    print(report)
    if not no_write:
        section = (
            f"{FAMILIES_SECTION}\n\nCommand: `.venv/bin/python -m bench.accuracy --families` ({elapsed:.0f} s on this 2-core box). "
            "The whole suite (both scenes, every condition, 10 and 5 fps; the section above says how) once per detector family, "
            "each at its family's thresholds from `edge/models/models.json`, chosen once on this suite "
            f"(confidence to start a track / to continue one: {thresholds}). The brought models are the files in `../shared/models/` "
            "(source, licence and sha256 in its README; never committed). Crowding is the share of person detections overlapping "
            "another (`edge/crowding.py`).\n\n" + report
        )
        _write_section(FAMILIES_SECTION, section)
    return 0


def _write_section(title: str, section: str) -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip() + "\n", text) if title in text else text.rstrip() + "\n\n" + section
    (ROOT / "BENCHMARKS.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
