"""The chaos runs' folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def chaos_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private, and the broker and the
    # database run as their own users.
    root = Path(tempfile.mkdtemp(prefix="fleetsight-chaos-"))
    os.chmod(root, 0o755)
    yield root
    if os.environ.get("FLEETSIGHT_CHAOS_KEEP"):  # logs and data, to read after a run
        print(f"chaos run kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
