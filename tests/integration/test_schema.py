"""The SQL contract: migrations, models and the aggregate records agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from schemas.aggregates import TABLES
from sinks.models import MODELS, RECONCILER_COLUMNS, Base
from streams.state import metadata as stream_state
from tests.support import Stack

pytestmark = pytest.mark.integration


def test_models_have_exactly_the_columns_the_records_carry() -> None:
    assert set(MODELS) == set(TABLES)
    for name, spec in TABLES.items():
        columns = {c.name for c in MODELS[name].__table__.columns} - {"updated_at"} - RECONCILER_COLUMNS.get(name, frozenset())
        assert columns == set(spec.columns), name
        assert [c.name for c in MODELS[name].__table__.primary_key] == list(spec.key), name


def _not_partition(conn: Connection) -> Callable[[str | None, str, Any], bool]:
    """The partitions of a partitioned table are made by sinks/partitions.py, not described by a model."""
    partitions = set(conn.exec_driver_sql("SELECT relname FROM pg_class WHERE relispartition").scalars())
    return lambda name, type_, parent: not (type_ == "table" and name in partitions)


async def test_migrations_build_what_the_models_describe(stack: Stack) -> None:
    described = MetaData()
    for table in [*Base.metadata.tables.values(), *stream_state.tables.values()]:
        table.to_metadata(described)
    engine = create_async_engine(stack.settings.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c, opts={"include_name": _not_partition(c)}), described))
    finally:
        await engine.dispose()
    assert diff == []
