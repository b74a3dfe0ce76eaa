"""Alembic environment: runs migrations with a synchronous engine for the configured URL."""

from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine, pool

from promoguard.store.db import UTCDateTime
from promoguard.store.schema import metadata

config = context.config


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:  # noqa: ARG001
    # Migrations use plain SQLAlchemy types: UTCDateTime is DateTime(timezone=True) in the database.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations()
