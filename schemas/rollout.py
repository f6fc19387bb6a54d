"""Model rollout messages between the cloud and the edges (MQTT, JSON).

Desired state, retained, written by ``fleetsight model rollout``:
``{root}/cameras/{camera_id}/control/model`` or ``{root}/sites/{site}/control/model``.
A camera follows whichever of the two has the higher rollout id (ids grow
with time, and unlike clocks they cannot disagree), so an offline camera
finds its instruction waiting when it returns, and a camera that joins a
site later gets the site's model.

The file itself, retained, content-addressed: ``{root}/models/{sha256}/{i}``,
chunk ``i`` of ``chunks``. A camera subscribes only to the chunks it lacks,
so an interrupted download resumes where it stopped.

Reported state, retained, written by the camera:
``{root}/cameras/{camera_id}/model``.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.codec import load_schema

CHUNK_SIZE = 256 * 1024  # well under the broker's 2 MiB packet limit
_IDENT = load_schema("event")["$defs"]["ident"]["pattern"]
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"

State = Literal["downloading", "loading", "probation", "active", "refused", "failed", "rolled_back"]


class RolloutError(ValueError):
    """A rollout message that cannot be used."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, payload: bytes):  # type: ignore[no-untyped-def]
        try:
            return cls.model_validate(json.loads(payload))
        except (ValueError, ValidationError) as exc:
            raise RolloutError(f"not a valid {cls.__name__}: {exc}") from None


class DesiredModel(_Message):
    """What a camera (or every camera of a site) should run."""

    rollout_id: int = Field(ge=1, description="orders camera- against site-level instructions: the higher wins")
    issued_at_ms: int = Field(ge=0)
    version: str = Field(pattern=VERSION_PATTERN)
    name: str = Field(pattern=_IDENT, description="architecture, one the edge knows (edge/models/models.json)")
    sha256: str = Field(pattern=SHA256)
    size: int = Field(gt=0)
    chunk_size: int = Field(gt=0)
    chunk_sha256: list[str] = Field(min_length=1, description="sha256 of every chunk, to verify and resume")

    @property
    def chunks(self) -> int:
        return len(self.chunk_sha256)


class ModelReport(_Message):
    """What a camera says about its model: the one it runs and the rollout it is on."""

    camera_id: str = Field(pattern=_IDENT)
    running_version: str
    running_sha256: str = Field(pattern=SHA256)
    rollout_id: int | None = None
    version: str | None = None
    state: State | None = None
    detail: str = ""
    progress: float = Field(0.0, ge=0.0, le=1.0, description="share of the file downloaded")
    ts_ms: int = Field(default_factory=lambda: int(time.time() * 1000))


def chunk_hashes(content: bytes, chunk_size: int = CHUNK_SIZE) -> list[str]:
    """sha256 of each ``chunk_size`` piece of ``content``."""
    return [hashlib.sha256(content[i : i + chunk_size]).hexdigest() for i in range(0, len(content), chunk_size)]
