"""The model registry the edge knows (``edge/models/models.json``) and the
spec of one model file: its architecture, its family's decoding parameters,
and the sha256 it is verified against before it is loaded.

An architecture is either shipped (its file lies in ``edge/models/``) or
brought: the registry knows how to decode it, the user supplies the file
(``model.path`` and ``model.sha256``, or ``fleetsight model publish``).
Nothing is ever fetched at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger("fleetsight.detector")

MODELS_DIR = Path(str(resources.files("edge").joinpath("models")))
DEFAULT_MODEL = "nanodet-g-416"


class ModelError(RuntimeError):
    """A model file is missing, altered, of another family, or cannot be loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """One model file and how to read it (see ``edge.families`` for each family)."""

    name: str  # the architecture, a key of models.json
    family: str  # how its input is made and its outputs decoded
    version: str
    path: Path
    sha256: str
    input_size: int  # longest side of the model's input
    strides: tuple[int, ...]
    reg_max: int  # NanoDet's box bins minus one (0 for YOLOX)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad: tuple[float, float, float]  # what letterbox padding is filled with, per channel, before normalisation
    classes: tuple[str, ...]
    confidence: float  # the family's thresholds, chosen once on the accuracy suite (README)
    track_low: float


@cache
def registry() -> dict[str, dict[str, Any]]:
    """models.json: architecture name -> entry."""
    entries: dict[str, dict[str, Any]] = json.loads((MODELS_DIR / "models.json").read_text())
    return entries


def canonical_name(name: str) -> str:
    """The architecture's name today (``nanodet-m-416``, its name in earlier releases, is ``nanodet-g-416``)."""
    for key, entry in registry().items():
        if name in entry.get("aliases", ()):
            return key
    return name


def architecture(name: str | None = None, family: str | None = None) -> str:
    """The registered architecture meant by a name, a family (its first
    architecture), or both (which must agree); the default model with neither."""
    if name is None and family is None:
        return DEFAULT_MODEL
    if name is not None:
        canonical = canonical_name(name)
        if canonical not in registry():
            raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(registry()))}")
        if family is not None and registry()[canonical]["family"] != family:
            raise ModelError(f"{name} is a {registry()[canonical]['family']} model, not {family}")
        return canonical
    for key, entry in registry().items():
        if entry["family"] == family:
            return key
    raise ModelError(f"unknown model family {family!r}; known: {', '.join(sorted({e['family'] for e in registry().values()}))}")


def model_spec(
    name: str = DEFAULT_MODEL, path: Path | None = None, sha256: str | None = None, version: str | None = None
) -> ModelSpec:
    """The spec of a registered architecture: its shipped file, or ``path`` (a
    file of that architecture, brought or rolled out, checked against ``sha256``)."""
    manifest = registry()
    canonical = canonical_name(name)
    if canonical not in manifest:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(manifest))}")
    if canonical != name:
        log.warning("model name %s is now %s (the shipped file is NanoDet-g); please rename it in the camera file", name, canonical)
    entry = manifest[canonical]
    if path is not None and sha256 is None:
        raise ModelError(f"model.path {path} needs model.sha256 as well: files are verified before loading")
    if path is None and entry.get("file") is None:
        raise ModelError(
            f"{canonical} ({entry['family']}) is not shipped: bring the file as model.path with its model.sha256, "
            f"or publish it with `fleetsight model publish FILE --family {entry['family']}` (README, \"Which detector for which camera\")"
        )
    mean = tuple(entry["mean"])
    return ModelSpec(
        name=canonical,
        family=entry["family"],
        version=version or (entry["version"] if path is None else f"{canonical}@sha256:{sha256[:12]}"),  # type: ignore[index]
        path=path or MODELS_DIR / entry["file"],
        sha256=sha256 or entry["sha256"],
        input_size=entry["input_size"],
        strides=tuple(entry["strides"]),
        reg_max=entry.get("reg_max", 0),
        mean=mean,
        std=tuple(entry["std"]),
        pad=tuple(float(v) for v in entry.get("pad", [round(m) for m in mean])),  # type: ignore[arg-type]
        classes=tuple((MODELS_DIR / entry["labels"]).read_text().split("\n")[: entry["num_classes"]]),
        confidence=entry["confidence"],
        track_low=entry["track_low"],
    )


def verify(path: Path, expected_sha256: str) -> None:
    """Refuse a model file whose content is not the one pinned."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected_sha256.lower():
        raise ModelError(f"model file {path} has sha256 {digest.hexdigest()}, expected {expected_sha256}: refusing to load it")
