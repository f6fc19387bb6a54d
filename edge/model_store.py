"""The camera's local model store: chunks as they arrive, verified files,
which version is current and which failed (see edge/updater.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from edge.config import CameraConfig
from edge.detector import ObjectDetector, build_detector
from edge.model_spec import ModelError, canonical_name, model_spec, verify
from schemas.rollout import DesiredModel

log = logging.getLogger("fleetsight.updater")


class ModelStore:
    """Rolled-out model files on the camera's disk, and which one is current."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def file(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.onnx"

    def _parts(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.parts"

    def missing(self, desired: DesiredModel) -> list[int]:
        """Chunks not yet here intact (a resumed download asks only for these)."""
        parts = self._parts(desired.sha256)
        out = []
        for i, expected in enumerate(desired.chunk_sha256):
            try:
                ok = hashlib.sha256((parts / str(i)).read_bytes()).hexdigest() == expected
            except FileNotFoundError:
                ok = False
            if not ok:
                out.append(i)
        return out

    def write_chunk(self, desired: DesiredModel, index: int, data: bytes) -> None:
        parts = self._parts(desired.sha256)
        parts.mkdir(exist_ok=True)
        tmp = parts / f"{index}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, parts / str(index))

    def assemble(self, desired: DesiredModel) -> Path:
        """Join the chunks into the model file and check it; raises ModelError if it is not the one announced."""
        parts = self._parts(desired.sha256)
        target = self.file(desired.sha256)
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for i in range(desired.chunks):
                out.write((parts / str(i)).read_bytes())
        try:
            verify(tmp, desired.sha256)
        except ModelError:
            tmp.unlink()
            shutil.rmtree(parts, ignore_errors=True)
            raise
        os.replace(tmp, target)
        shutil.rmtree(parts, ignore_errors=True)
        return target

    def _read(self, name: str) -> dict:
        try:
            return json.loads((self.directory / name).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _write(self, name: str, data: dict) -> None:
        tmp = self.directory / f"{name}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.directory / name)

    def current(self) -> dict:
        """``{version, name, sha256, path}`` of the model a rollout made current, or {}."""
        return self._read("current.json")

    def set_current(self, desired: DesiredModel, path: Path) -> None:
        self._write("current.json", {"version": desired.version, "name": desired.name, "sha256": desired.sha256, "path": str(path)})
        keep = {path.name, self.file(desired.sha256).name}
        for old in self.directory.glob("*.onnx"):
            if old.name not in keep:
                old.unlink()

    def failure(self, desired: DesiredModel) -> str | None:
        """Why this rollout already failed here, if it did."""
        entry = self._read("failed.json").get(desired.sha256)
        return entry["reason"] if entry and entry["rollout_id"] == desired.rollout_id else None

    def record_failure(self, desired: DesiredModel, reason: str) -> None:
        failed = self._read("failed.json")
        failed[desired.sha256] = {"rollout_id": desired.rollout_id, "version": desired.version, "reason": reason}
        self._write("failed.json", failed)
        if desired.sha256 != self.current().get("sha256"):
            self.file(desired.sha256).unlink(missing_ok=True)


def startup_detector(config: CameraConfig, store: ModelStore) -> ObjectDetector:
    """The model a rollout made current if it still loads, else the config's."""
    current = store.current()
    if current and canonical_name(current.get("name", "")) == canonical_name(config.model.name):
        try:
            return build_detector(config, model_spec(current["name"], Path(current["path"]), current["sha256"], current["version"]))
        except ModelError as exc:
            log.error("%s: rolled-out model %s does not load (%s); using the configured one", config.camera_id, current["version"], exc)
    return build_detector(config)
