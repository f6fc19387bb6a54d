"""Tamper checks on the sample clip: shifted, covered and blurred views are
reported, the clip itself never is."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.tamper import TamperCheck, _grey


@pytest.fixture(scope="module")
def frames(media: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(media / "vtest.avi"))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def learnt(frames: list[np.ndarray]) -> TamperCheck:
    check = TamperCheck(every_s=1.0, learn=5, hold=3)
    for i in range(5):  # one frame a second, the clip is 10 fps
        check.observe(frames[i * 10], float(i))
    return check


def shifted(frame: np.ndarray, dx: int) -> np.ndarray:
    return cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, 0]]), (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REFLECT)


def covered(frame: np.ndarray, share: float) -> np.ndarray:
    out = frame.copy()
    out[:, : int(frame.shape[1] * share)] = (40, 40, 40)
    return out


VIEWS = {
    "moved": lambda f: shifted(f, 25),  # a 25-pixel pan of a 768-pixel view
    "blocked": lambda f: covered(f, 0.6),  # a box in front of most of the view
    "defocused": lambda f: cv2.GaussianBlur(f, (0, 0), 3),
}


def test_the_clip_itself_is_never_tampering_nor_is_dimmer_light(frames: list[np.ndarray]) -> None:
    check = learnt(frames)
    for frame in frames[50::10]:
        assert check.measure(_grey(frame)) == frozenset()
        assert check.measure(_grey((frame * 0.3).astype(np.uint8))) == frozenset()  # dusk is not blur


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_each_tampered_view_is_seen_all_through_the_clip(frames: list[np.ndarray], kind: str) -> None:
    check = learnt(frames)
    seen = [check.measure(_grey(VIEWS[kind](frame))) for frame in frames[50::10]]
    assert all(s == {kind} for s in seen), [sorted(s) for s in seen]


def test_a_verdict_holds_before_it_is_reported_and_before_it_clears(frames: list[np.ndarray]) -> None:
    check = learnt(frames)
    t = 10.0
    changes = []
    for i, frame in enumerate(frames[100:400:10]):
        view = covered(frame, 0.6) if 5 <= i < 15 or i == 20 else frame  # a blocked stretch, then one odd frame
        t += 1.0
        if check.observe(view, t):
            changes.append((i, sorted(check.active)))
    # Reported on the 3rd blocked look, cleared on the 3rd clear one; the lone frame never.
    assert changes == [(7, ["blocked"]), (17, [])]


def test_frames_between_looks_are_not_looked_at(frames: list[np.ndarray]) -> None:
    check = learnt(frames)
    assert check.observe(covered(frames[60], 0.9), 10.0) is False
    assert not check.due(10.5) and check.due(11.0)
