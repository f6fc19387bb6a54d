"""Prometheus metrics of the camera side (served by ``runtime.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EDGE_FRAMES = Counter("fleetsight_edge_frames", "Frames read", ["camera"])
EDGE_FRAMES_SKIPPED = Counter("fleetsight_edge_frames_skipped", "Frames the detector did not run on (motion gate, or the camera's detection rate)", ["camera"])
EDGE_INFERENCE = Histogram("fleetsight_edge_inference_seconds", "Detector time per frame", ["camera"],
                           buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1))
EDGE_EVENTS = Counter("fleetsight_edge_events", "Events stored in the outbox", ["camera", "type"])
EDGE_OUTBOX_DEPTH = Gauge("fleetsight_edge_outbox_depth", "Events waiting for the cloud's confirmation", ["camera"])
EDGE_OUTBOX_DROPPED = Gauge("fleetsight_edge_outbox_dropped", "Events a full outbox dropped, ever", ["camera"])
EDGE_LINK_UP = Gauge("fleetsight_edge_link_up", "1 while connected to the broker", ["camera"])
EDGE_MODEL = Gauge("fleetsight_edge_model_info", "The model in use (value 1)", ["camera", "version"])
