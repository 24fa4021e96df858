"""Alembic environment: the URL comes from the caller or from Longdoc's settings."""

from __future__ import annotations

from alembic import context

from service.config import get_settings
from service.db import make_engine
from service.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # A batch rebuild drops the old table; with foreign keys on, that DROP
            # would cascade into every table that points at it. The pragma only
            # takes effect outside a transaction, so it is committed on its own.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
