"""How each detector family takes a frame and gives its boxes back.

A family is the part of a detector that depends on how the network was
trained and exported: the input it expects (normalisation, where the
letterbox puts the picture) and the layout of its outputs. What every
family shares (the onnxruntime session, the class filter, NMS, mapping
boxes back to the frame) is ``edge.detector.Detector``.

Measured on this box and written up in ``../shared/models/README.md``:

- ``nanodet-g``: the shipped model (NanoDet-g, from the npm package). One
  score and one box output per stride (8, 16, 32), 11 bins a side, cell
  centres at +0.5 of a stride.
- ``nanodet-plus``: NanoDet-Plus (Apache-2.0 weights). One output of
  80 sigmoid scores and 4 x 8 bins per prior; strides 8 to 64, each level
  ceil(input / stride) wide, priors at the cell's corner (no +0.5).
- ``yolox``: YOLOX (Apache-2.0). Raw 0-255 BGR letterboxed at the top-left
  on grey 114; one output of centre offsets, log sizes, objectness and 80
  class probabilities per cell (strides 8, 16, 32); score = objectness x
  class.

A file whose outputs do not fit its family is refused when it is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from edge.model_spec import ModelError, ModelSpec

ALIGN = 32  # model inputs are letterboxed to multiples of this (every family's networks take them)

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (x1, y1, x2, y2 in input pixels), scores, class ids


@dataclass(frozen=True)
class Layout:
    """Where a frame lies in the model's input: its size, the frame's scale and offset."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    resized: tuple[int, int]  # the frame's width and height once scaled


class Family:
    """Input and outputs of one family of detectors; see the module docstring."""

    name: ClassVar[str]
    centred: ClassVar[bool] = True  # the letterbox centres the picture (else top-left)
    square_offsets: ClassVar[bool] = False  # a free-shape input keeps the offsets of the square letterbox

    def __init__(self, spec: ModelSpec, *, free_shape: bool, letterbox: bool) -> None:
        self.spec = spec
        self.free_shape = free_shape
        self.letterbox = letterbox
        self.output_names: list[str] = []
        self._scale_std = any(s != 1.0 for s in spec.std)
        self._inv_std = (1.0 / np.array(spec.std, np.float32)).reshape(1, 3, 1, 1)
        self._layouts: dict[tuple[int, int], Layout] = {}
        self._grids: dict[tuple[int, int], np.ndarray] = {}

    # --- input ----------------------------------------------------------------

    def layout(self, width: int, height: int) -> Layout:
        """How a frame of this size is letterboxed (worked out once per frame size)."""
        known = self._layouts.get((width, height))
        if known is None:
            known = self._layouts[(width, height)] = self._layout(width, height)
        return known

    def _layout(self, width: int, height: int) -> Layout:
        size = self.spec.input_size
        if not self.letterbox:
            return Layout(size, size, size / width, size / height, 0, 0, (size, size))
        scale = min(size / width, size / height)
        nw, nh = round(width * scale), round(height * scale)
        if not self.free_shape:
            pad_x, pad_y = ((size - nw) // 2, (size - nh) // 2) if self.centred else (0, 0)
            return Layout(size, size, scale, scale, pad_x, pad_y, (nw, nh))
        # A model whose height and width are free takes the frame letterboxed
        # to less than a square: a 4:3 frame is 416x352, not 416x416 of which
        # 104 rows are padding (15 % less work per frame).
        if self.square_offsets:
            # Each side keeps the offset modulo the alignment that the square
            # letterbox gives it, so every cell sees the picture where it did:
            # PETS09 with NanoDet-g and padding cut to 4 rows lost 0.08 MOTA
            # and counted occupancy 21 % off; aligned (416x352), it counts as
            # the square does.
            pad_x, pad_y = ((size - nw) // 2) % ALIGN, ((size - nh) // 2) % ALIGN
            iw, ih = nw + 2 * pad_x, nh + 2 * pad_y
            return Layout(iw + (-iw % ALIGN), ih + (-ih % ALIGN), scale, scale, pad_x, pad_y, (nw, nh))
        iw, ih = nw + (-nw % ALIGN), nh + (-nh % ALIGN)  # the least padding: 960x540 is 416x256
        pad_x, pad_y = ((iw - nw) // 2, (ih - nh) // 2) if self.centred else (0, 0)
        return Layout(iw, ih, scale, scale, pad_x, pad_y, (nw, nh))

    def blob(self, frame: np.ndarray) -> tuple[np.ndarray, Layout]:
        """BGR frame -> the NCHW input, and the layout to map boxes back with."""
        h, w = frame.shape[:2]
        lay = self.layout(w, h)
        nw, nh = lay.resized
        image = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if (nw, nh) != (lay.width, lay.height):
            image = cv2.copyMakeBorder(
                image, lay.pad_y, lay.height - nh - lay.pad_y, lay.pad_x, lay.width - nw - lay.pad_x,
                cv2.BORDER_CONSTANT, value=self.spec.pad,
            )
        # OpenCV subtracts the mean and lays out NCHW in one native pass; the
        # per-channel scale is one in-place multiply.
        blob = cv2.dnn.blobFromImage(image, 1.0, (lay.width, lay.height), self.spec.mean, swapRB=False, crop=False)
        if self._scale_std:
            blob *= self._inv_std  # type: ignore[arg-type]  # numpy's stubs: float32 in place is fine
        return blob, lay

    # --- output -----------------------------------------------------------------

    def check(self, names: list[str], outputs: list[np.ndarray]) -> None:
        """Take the output names to ask for from a run on a square input of
        ``input_size``; raise ModelError if the outputs are not this family's."""
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], lay: Layout, confidence: float, class_mask: np.ndarray) -> Decoded:
        """Boxes in input pixels at or above ``confidence`` for the classes in ``class_mask`` (before NMS)."""
        raise NotImplementedError

    def _refuse(self, outputs: list[np.ndarray], expected: str) -> ModelError:
        shapes = ", ".join("x".join(str(d) for d in o.shape) for o in outputs)
        return ModelError(
            f"{self.spec.path.name} is not a {self.name} model ({self.spec.name}): on a {self.spec.input_size}x{self.spec.input_size} "
            f"input its outputs are {shapes}, a {self.name} model gives {expected}; publish or configure it with the family it has"
        )

    def _grid(self, lay: Layout, offset: float, levels: str) -> np.ndarray:
        """Per cell of every stride, in output order: x, y of the prior and the stride."""
        grid = self._grids.get((lay.width, lay.height))
        if grid is None:
            parts = []
            for stride in self.spec.strides:
                rows, cols = (lay.height // stride, lay.width // stride) if levels == "floor" else (
                    math.ceil(lay.height / stride), math.ceil(lay.width / stride))
                ys, xs = np.mgrid[0:rows, 0:cols]
                cells = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
                parts.append(np.concatenate([(cells + offset) * stride, np.full((len(cells), 1), stride, np.float32)], 1))
            grid = self._grids[(lay.width, lay.height)] = np.concatenate(parts)
        return grid


def _best_class(scores: np.ndarray, class_mask: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose best wanted class reaches ``confidence``: their indices, scores and class ids."""
    wanted = np.flatnonzero(class_mask)
    if len(wanted) != len(class_mask):
        scores = scores[:, wanted]
    best = scores.argmax(1)
    conf = scores[np.arange(len(best)), best]
    rows = np.flatnonzero(conf >= confidence)
    return rows, conf[rows], wanted[best[rows]]


def _distances(logits: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """NanoDet's box sides: a softmax over each side's bins, its expectation (in strides)."""
    dist = logits.reshape(-1, 4, len(bins))
    dist = np.exp(dist - dist.max(2, keepdims=True))
    return (dist / dist.sum(2, keepdims=True)) @ bins


def _empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


class NanoDetG(Family):
    """The shipped NanoDet-g: a score and a box output per stride."""

    name = "nanodet-g"
    square_offsets = True

    def check(self, names: list[str], outputs: list[np.ndarray]) -> None:
        size, nc, nb = self.spec.input_size, len(self.spec.classes), 4 * (self.spec.reg_max + 1)
        by_shape = {tuple(v.shape[1:]): n for v, n in zip(outputs, names)}
        try:
            self.output_names = [by_shape[((size // s) ** 2, k)] for s in self.spec.strides for k in (nc, nb)]
        except KeyError:
            raise self._refuse(outputs, f"a {nc}-score and a {nb}-bin output per stride {self.spec.strides}") from None
        self._bins = np.arange(self.spec.reg_max + 1, dtype=np.float32)

    def decode(self, outputs: list[np.ndarray], lay: Layout, confidence: float, class_mask: np.ndarray) -> Decoded:
        grid = self._grid(lay, 0.5, "floor")
        found: list[Decoded] = []
        start = 0
        for i, stride in enumerate(self.spec.strides):
            scores, logits = outputs[2 * i][0], outputs[2 * i + 1][0]
            rows, conf, classes = _best_class(scores, class_mask, confidence)
            if len(rows):
                dist = _distances(logits[rows], self._bins) * stride
                centres = grid[start + rows, :2]
                found.append((np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], 1), conf, classes))
            start += len(scores)
        if not found:
            return _empty()
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]), np.concatenate([f[2] for f in found])


class NanoDetPlus(Family):
    """NanoDet-Plus: one output, scores then box bins, per prior of four strides."""

    name = "nanodet-plus"

    def check(self, names: list[str], outputs: list[np.ndarray]) -> None:
        size, nc, nb = self.spec.input_size, len(self.spec.classes), 4 * (self.spec.reg_max + 1)
        cells = sum(math.ceil(size / s) ** 2 for s in self.spec.strides)
        if len(outputs) != 1 or tuple(outputs[0].shape) != (1, cells, nc + nb):
            raise self._refuse(outputs, f"one output 1x{cells}x{nc + nb}")
        self.output_names = names
        self._bins = np.arange(self.spec.reg_max + 1, dtype=np.float32)

    def decode(self, outputs: list[np.ndarray], lay: Layout, confidence: float, class_mask: np.ndarray) -> Decoded:
        out, nc = outputs[0][0], len(self.spec.classes)
        rows, conf, classes = _best_class(out[:, :nc], class_mask, confidence)
        if not len(rows):
            return _empty()
        prior = self._grid(lay, 0.0, "ceil")[rows]
        dist = _distances(out[rows, nc:], self._bins) * prior[:, 2:]
        return np.concatenate([prior[:, :2] - dist[:, :2], prior[:, :2] + dist[:, 2:]], 1), conf, classes


class Yolox(Family):
    """YOLOX: one output of centre, size, objectness and class scores per cell."""

    name = "yolox"
    centred = False

    def check(self, names: list[str], outputs: list[np.ndarray]) -> None:
        size, nc = self.spec.input_size, len(self.spec.classes)
        cells = sum((size // s) ** 2 for s in self.spec.strides)
        if len(outputs) != 1 or tuple(outputs[0].shape) != (1, cells, 5 + nc):
            raise self._refuse(outputs, f"one output 1x{cells}x{5 + nc}")
        self.output_names = names

    def decode(self, outputs: list[np.ndarray], lay: Layout, confidence: float, class_mask: np.ndarray) -> Decoded:
        out = outputs[0][0]
        # The objectness is at most 1, so a cell under the threshold on it alone can go first.
        cand = np.flatnonzero(out[:, 4] >= confidence)
        if not len(cand):
            return _empty()
        rows, conf, classes = _best_class(out[cand, 5:] * out[cand, 4:5], class_mask, confidence)
        if not len(rows):
            return _empty()
        cells = cand[rows]
        grid = self._grid(lay, 0.0, "floor")[cells]
        stride = grid[:, 2:]
        centre = out[cells, :2] * stride + grid[:, :2]
        half = np.exp(out[cells, 2:4]) * stride / 2
        return np.concatenate([centre - half, centre + half], 1), conf, classes


FAMILY_CLASSES: dict[str, type[Family]] = {f.name: f for f in (NanoDetG, NanoDetPlus, Yolox)}


def family(spec: ModelSpec, *, free_shape: bool, letterbox: bool) -> Family:
    """The decoder for ``spec``'s family."""
    try:
        return FAMILY_CLASSES[spec.family](spec, free_shape=free_shape, letterbox=letterbox)
    except KeyError:
        raise ModelError(f"{spec.name}: unknown model family {spec.family!r}; known: {', '.join(FAMILY_CLASSES)}") from None
