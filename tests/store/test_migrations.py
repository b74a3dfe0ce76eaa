"""The migrations build exactly the tables the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from promoguard.store import migrate
from promoguard.store.schema import metadata


def test_a_migrated_database_matches_the_models(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert drift == [], drift


def test_migrations_reach_the_head_revision(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
