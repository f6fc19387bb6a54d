"""The accuracy suite: both annotated scenes, every picture condition, 10 and 5 fps.

A change to detection, tracking or scene logic is judged on all of it, never
on one clip or one line (DESIGN.md, "Counts must be true"). The scenes'
annotations stay where they lie in ``../shared/eval/`` (CC BY-NC-SA: read,
never copied into the project); their camera files are ``bench/<scene>.yaml``.

Each (scene, condition) pair is one pass over the clip that feeds both rates
(``edge.accuracy.evaluate_rates``); the pairs run in worker processes, one
per core, each with a one-thread detector.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge.accuracy import RateResult, evaluate_rates, load_annotation
from edge.conditions import CONDITIONS, condition
from edge.config import CameraConfig, load_camera_config
from runtime.settings import REPO_ROOT

EVAL_DIR = REPO_ROOT.parent / "shared" / "eval"
RATES = (10.0, 5.0)  # detections per second


@dataclass(frozen=True)
class SceneSpec:
    """An annotated clip and the camera file that counts it."""

    name: str
    video: Path
    annotation: Path
    config: Path
    fps: float  # the clip's own frame rate

    def stride(self, rate: float) -> int:
        """Every how many frames the detector runs to look ``rate`` times a second."""
        return max(1, round(self.fps / rate))

    def missing(self) -> list[Path]:
        return [p for p in (self.video, self.annotation, self.config) if not p.is_file()]


def scenes(media: Path = REPO_ROOT / ".services" / "media") -> list[SceneSpec]:
    """The suite's scenes: PETS 2009 S2.L1 (a square from high up) and MOT16-09 (a shop front from hip height)."""
    return [
        SceneSpec("pets09-s2l1", media / "vtest.avi", EVAL_DIR / "pets09-s2l1" / "gt.txt", REPO_ROOT / "bench" / "pets09-s2l1.yaml", 10.0),
        SceneSpec("mot16-09", EVAL_DIR / "mot16-09" / "mot16-09.mp4", EVAL_DIR / "mot16-09" / "gt.txt", REPO_ROOT / "bench" / "mot16-09.yaml", 30.0),
    ]


def override(config: CameraConfig, settings: Mapping[str, object]) -> CameraConfig:
    """``config`` with dotted settings replaced (``{"model.input_size": 320}``): a lever tried on the whole suite."""
    for dotted, value in settings.items():
        *parents, name = dotted.split(".")
        target: object = config
        for part in parents:
            target = getattr(target, part)
        if name not in type(target).model_fields:  # type: ignore[attr-defined]
            raise ValueError(f"{dotted}: {type(target).__name__} has no setting {name!r}")
        setattr(target, name, value)
    return type(config).model_validate(config.model_dump())  # checked as a camera file would be


def _run_case(
    scene: SceneSpec, condition_name: str, rates: Sequence[float], threads: int | None, settings: Mapping[str, object],
) -> list[RateResult]:
    config = override(load_camera_config(scene.config), settings)
    if threads:
        config.model.threads = threads
    return evaluate_rates(
        config, scene.video, load_annotation(scene.annotation), strides=[scene.stride(r) for r in rates],
        condition=condition(condition_name), scene=scene.name,
    )


def run_suite(
    specs: Iterable[SceneSpec], conditions: Iterable[str] = tuple(CONDITIONS), rates: Sequence[float] = RATES,
    *, jobs: int | None = None, done: Callable[[list[RateResult]], None] | None = None, settings: Mapping[str, object] | None = None,
) -> list[RateResult]:
    """Every scene under every condition at every rate, in scene, condition, rate order
    (``settings``: dotted camera settings over the scenes' camera files)."""
    cases = [(s, c) for s in specs for c in conditions]
    jobs = jobs or min(len(cases), os.cpu_count() or 1)
    # Several at once: each detector on one thread, one per core.
    threads = 1 if jobs > 1 else None
    results: list[RateResult] = []
    with ProcessPoolExecutor(jobs) as pool:
        for future in [pool.submit(_run_case, s, c, rates, threads, settings or {}) for s, c in cases]:
            case = future.result()
            results += case
            if done:
                done(case)
    return results
