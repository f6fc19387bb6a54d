"""Database engine and migrations."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "sinks:migrations")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (``fleetsight db upgrade``)."""
    command.upgrade(alembic_config(database_url), revision)


def make_engine(database_url: str) -> AsyncEngine:
    return create_async_engine(database_url, pool_size=2, max_overflow=2, pool_pre_ping=True)
