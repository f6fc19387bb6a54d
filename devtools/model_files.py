"""The detector files a user brings, as the tests and benchmarks find them.

``../shared/models/`` (beside the project) holds one model of each family
the edge decodes besides the shipped one, with their source and licence in
its README. They come from public repositories, not a package registry, so
the project never commits or ships them: tests that need them skip, saying
why, where the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

from runtime.settings import REPO_ROOT

MODELS_DIR = REPO_ROOT.parent / "shared" / "models"

# architecture (edge/models/models.json) -> file and the sha256 the README pins
BROUGHT: dict[str, tuple[str, str]] = {
    "nanodet-plus-m-416": ("nanodet-plus-m-416.onnx", "c052c0a84ce361271f3e5a1ad0d2e333b2d57e9cf0330a2acc61c1863b28f259"),
    "yolox-nano-416": ("yolox-nano-416.onnx", "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"),
}


def brought_file(name: str) -> Path:
    """Where a brought model's file lies (it may be absent)."""
    return MODELS_DIR / BROUGHT[name][0]


def model_settings(name: str) -> dict[str, object]:
    """Dotted camera settings that run architecture ``name``: the shipped file, or the brought one."""
    if name not in BROUGHT:
        return {"model.name": name}
    return {"model.name": name, "model.path": str(brought_file(name)), "model.sha256": BROUGHT[name][1]}


def missing(names: list[str]) -> list[Path]:
    """The brought files among ``names`` that are not there."""
    return [brought_file(n) for n in names if n in BROUGHT and not brought_file(n).is_file()]
