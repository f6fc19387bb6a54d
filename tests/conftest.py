"""Test fixtures: the real local services, and isolated pipelines on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.settings import Settings, load_settings


@pytest.fixture(scope="session")
def services() -> Iterator[Settings]:
    """Mosquitto, Kafka and PostgreSQL on loopback; stopped again if we started them."""
    from devtools.services import Services

    settings = load_settings()
    local = Services(settings)
    started = not local.running()
    if started:
        local.up()
    yield settings
    if started:
        local.down()


async def _stack(services: Settings, tmp: Path, **overrides):
    from tests.support import Stack

    stack = Stack(services, tmp, **overrides)
    await stack.create_database()
    return stack


@pytest.fixture
async def stack_factory(services: Settings, tmp_path: Path):
    """Make pipeline namespaces with settings of the test's own."""
    made = []

    async def make(**overrides):
        s = await _stack(services, tmp_path / f"stack{len(made)}", **overrides)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.cleanup()


@pytest.fixture
async def stack(services: Settings, tmp_path: Path) -> AsyncIterator[Stack]:  # noqa: F821
    """A fresh pipeline namespace; start its processes with ``stack.start(...)``."""
    s = await _stack(services, tmp_path)
    try:
        yield s
    finally:
        await s.cleanup()


@pytest.fixture(scope="module")
def running_stack(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F821
    """One pipeline (bridge, worker, sink) shared by the tests of a module."""
    loop = asyncio.new_event_loop()
    s = loop.run_until_complete(_stack(services, tmp_path_factory.mktemp("stack")))
    try:
        for component in ("bridge", "worker", "sink"):
            s.start(component)
        loop.run_until_complete(s.wait_bridge_online())
        yield s
    finally:
        loop.run_until_complete(s.cleanup())
        loop.close()


@pytest.fixture(scope="session")
def media() -> Path:
    """Real sample video and images (from Debian packages, fetched once)."""
    import subprocess

    from runtime.settings import REPO_ROOT

    directory = REPO_ROOT / ".services" / "media"
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "fetch-media.sh"), str(directory)], check=True)
    return directory
