"""Motion gate on synthetic frames."""

from __future__ import annotations

import numpy as np

from edge.gate import MotionGate


def frame(x: int | None = None) -> np.ndarray:
    image = np.full((240, 320, 3), 90, np.uint8)
    if x is not None:
        image[100:160, x : x + 40] = 230
    return image


def test_still_scene_is_skipped_until_the_refresh_interval() -> None:
    gate = MotionGate(max_interval=5)
    decisions = [gate.should_detect(frame(50)) for _ in range(11)]
    assert decisions == [True, False, False, False, False, True, False, False, False, False, True]


def test_moving_object_triggers_every_frame() -> None:
    gate = MotionGate(max_interval=100)
    gate.should_detect(frame(10))
    assert all(gate.should_detect(frame(10 + 8 * i)) for i in range(1, 20))


def test_sensor_noise_below_threshold_is_not_motion() -> None:
    rng = np.random.default_rng(0)
    gate = MotionGate(max_interval=100)
    gate.should_detect(frame())
    noisy = [np.clip(frame().astype(int) + rng.integers(-6, 7, frame().shape), 0, 255).astype(np.uint8) for _ in range(10)]
    assert not any(gate.should_detect(f) for f in noisy)


def test_a_walker_in_a_dim_picture_is_motion() -> None:
    # A sixth of the light: the walker differs from the ground by 23 levels
    # (140 in daylight), under a fixed threshold of 25.
    def dim(x: int) -> np.ndarray:
        image = frame(x) // 6
        image[:20] = 80  # a lit sign: the picture's brightest part
        return image

    gate = MotionGate(max_interval=100)
    gate.should_detect(dim(10))
    assert all(gate.should_detect(dim(10 + 8 * i)) for i in range(1, 10))


def test_slow_steps_add_up_against_the_frame_the_detector_saw() -> None:
    gate = MotionGate(max_interval=100, min_area=0.01)
    gate.should_detect(frame(100))
    # One pixel a frame is under min_area each time; against the last
    # detected frame it adds up and the detector runs again within a few frames.
    decisions = [gate.should_detect(frame(100 + i)) for i in range(1, 12)]
    assert not decisions[0] and any(decisions)
