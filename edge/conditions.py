"""Named picture conditions for accuracy runs: what a camera's frames look like
at dusk, at night, through a cheap encoder, at a low resolution.

Each condition is a pure, deterministic transform of a decoded frame (its
noise is seeded by the frame's index), so the same clip under the same
condition gives the same counts on every run and at every detection rate.
Only the pixels change; an annotation maps exactly (a resize scales its
boxes by :attr:`Condition.scale`, nothing else moves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def _noise(shape: tuple[int, ...], sigma: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * sigma


def _dusk(image: np.ndarray, index: int) -> np.ndarray:
    # About a third of the light: the sensor's gain lifts the shadows a little
    # (gamma) and adds its noise, per pixel and per channel.
    light = (image.astype(np.float32) / 255.0) ** 1.1 * (255.0 / 3.0)
    return np.clip(light + _noise(image.shape, 4.0, index), 0, 255).astype(np.uint8)


def _night(image: np.ndarray, index: int) -> np.ndarray:
    # An infrared camera at night: no colour, flat contrast around a dim grey,
    # a softer picture and strong sensor noise.
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (3, 3), 0).astype(np.float32)
    flat = 40.0 + gray * 0.35 + _noise(gray.shape, 7.0, index)
    return cv2.cvtColor(np.clip(flat, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _compressed(image: np.ndarray, index: int) -> np.ndarray:
    # A cheap encoder at a starved bitrate: blocks, smeared edges, banding.
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 12])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    return image if decoded is None else np.asarray(decoded)


def _half(image: np.ndarray, index: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Condition:
    """A named transform of every frame; ``scale`` is the new size over the old."""

    name: str
    description: str
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None
    scale: float = 1.0

    def apply(self, image: np.ndarray, index: int) -> np.ndarray:
        """The frame as this condition shows it (``index`` seeds its noise)."""
        return self.transform(image, index) if self.transform is not None else image


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("daylight", "the clip as it is"),
    Condition("dusk", "a third of the light, gamma 1.1, sensor noise (sigma 4 of 255)", _dusk),
    Condition("night", "infrared-like: grey, contrast 0.35 around a dim grey, softened, noise (sigma 7)", _night),
    Condition("compressed", "JPEG quality 12 on every frame", _compressed),
    Condition("half", "half the width and height (INTER_AREA)", _half, scale=0.5),
)}


def condition(name: str) -> Condition:
    """The condition called ``name``; a ValueError lists the known ones."""
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}") from None
