"""The SQL contract: migrations, models and the aggregate records agree."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
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


async def test_migrations_build_what_the_models_describe(stack: Stack) -> None:
    described = MetaData()
    for table in [*Base.metadata.tables.values(), *stream_state.tables.values()]:
        table.to_metadata(described)
    engine = create_async_engine(stack.settings.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), described))
    finally:
        await engine.dispose()
    assert diff == []
