"""Which nonce store a deployment gets (``PROMOGUARD_NONCE_STORE``), and the nonce file on
PostgreSQL: one per host, shared by every worker process of the host."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from redis.asyncio import Redis
from tests.service.conftest import SECRET, make_key, signed_client
from tests.service.helpers import claim_headers, coupon_spec, live, snapshot
from tests.serving import serving
from typer.testing import CliRunner

from promoguard.app import create_app
from promoguard.cli import EXIT_INVALID, app
from promoguard.security.nonces import (
    DatabaseNonces,
    NonceStore,
    RedisNonces,
    SqliteNonces,
    nonce_store,
)
from promoguard.settings import Settings
from promoguard.store.db import Database, sync_url

POSTGRES = "postgresql+psycopg://promoguard@db.internal/shop"
"""Never connected to: choosing a store opens nothing."""
REDIS = "redis://127.0.0.1:6379/15"
WARNING = "several hosts set PROMOGUARD_REDIS_URL or PROMOGUARD_NONCE_STORE=database"


@pytest.fixture(autouse=True)
def _no_inherited_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test chooses, not what the environment (or a fixture) says."""
    for name in ("PROMOGUARD_NONCE_STORE", "PROMOGUARD_NONCE_FILE", "PROMOGUARD_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def chosen(database_url: str = POSTGRES, **fields: Any) -> NonceStore:
    settings = Settings(database_url=database_url, environment="test", **fields)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    return nonce_store(settings, Database(settings.database_url), redis)


def test_on_postgresql_without_redis_the_default_is_the_nonce_file_in_the_working_directory(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="promoguard.security.nonces"):
        store = chosen()

    assert isinstance(store, SqliteNonces)
    assert store.path == tmp_path / "promoguard.nonces.db"
    [warning] = caplog.records  # one line, said when the worker starts
    assert warning.levelno == logging.WARNING
    assert "kept per host" in warning.getMessage()
    assert WARNING in warning.getMessage()


def test_a_configured_nonce_file_is_used_on_postgresql(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMOGUARD_NONCE_FILE", str(tmp_path / "nonces" / "shop.db"))

    store = chosen()

    assert isinstance(store, SqliteNonces)
    assert store.path == tmp_path / "nonces" / "shop.db"


def test_each_choice_gives_its_store(tmp_path):
    embedded = f"sqlite:///{tmp_path / 'shop.db'}"
    got = {
        "auto, PostgreSQL, Redis": chosen(redis_url=REDIS),
        "auto, SQLite": chosen(embedded),
        "auto, SQLite, Redis": chosen(embedded, redis_url=REDIS),
        "redis": chosen(nonce_store="redis", redis_url=REDIS),
        "file, Redis": chosen(nonce_store="file", redis_url=REDIS),
        "database": chosen(nonce_store="database"),
        "database, Redis": chosen(nonce_store="database", redis_url=REDIS),
        "database, SQLite": chosen(embedded, nonce_store="database"),
    }

    assert {name: type(store) for name, store in got.items()} == {
        "auto, PostgreSQL, Redis": RedisNonces,
        "auto, SQLite": SqliteNonces,
        "auto, SQLite, Redis": RedisNonces,
        "redis": RedisNonces,
        "file, Redis": SqliteNonces,
        "database": DatabaseNonces,
        "database, Redis": DatabaseNonces,
        "database, SQLite": DatabaseNonces,
    }
    embedded_store = got["auto, SQLite"]
    assert isinstance(embedded_store, SqliteNonces)
    assert embedded_store.path == tmp_path / "shop.nonces.db"  # beside the database, as before


def test_the_embedded_nonce_file_is_not_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="promoguard.security.nonces"):
        chosen(f"sqlite:///{tmp_path / 'shop.db'}")
        chosen(nonce_store="database")

    assert caplog.records == []


def test_redis_nonces_without_a_redis_url_are_a_configuration_error(monkeypatch):
    with pytest.raises(ValidationError, match="set PROMOGUARD_REDIS_URL"):
        Settings(nonce_store="redis")
    with pytest.raises(ValidationError, match="PROMOGUARD_NONCE_STORE=redis"):
        Settings(nonce_store="redis", redis_url="")

    # What an operator sees: the server does not start (nor migrate anything).
    monkeypatch.setenv("PROMOGUARD_NONCE_STORE", "redis")
    result = CliRunner().invoke(app, ["serve"])

    assert result.exit_code == EXIT_INVALID
    assert "configuration (PROMOGUARD_* variables) is invalid" in result.output
    assert "set PROMOGUARD_REDIS_URL" in " ".join(result.output.split())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_each_start_of_a_postgresql_worker_with_the_nonce_file_warns_once(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="promoguard.security.nonces"):
        with TestClient(create_app(settings)):
            pass
        with TestClient(create_app(settings)):
            pass

    warnings = [r for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 2


def _used_nonces(database_url: str) -> int:
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM used_nonces")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_replayed_to_another_worker_process_on_postgresql_is_refused_and_changes_nothing(
    settings, database_url, tmp_path, monkeypatch
):
    """Two ``promoguard serve`` processes on one PostgreSQL, no Redis, nothing said about
    nonces: both resolve the default nonce file in the working directory they share."""
    monkeypatch.delenv("PROMOGUARD_NONCE_FILE")  # the database fixture's, for in-process apps
    with signed_client(settings) as admin:
        live(admin, coupon_spec(per_user_limit=50, quantity=1000))
    key_id, secret = make_key(settings, "storefront")
    env = {
        "PROMOGUARD_DATABASE_URL": database_url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_REDIS_URL": "",  # "" is no Redis
    }
    body = json.dumps({"customer_id": "c-1"}).encode()
    to_one, to_two = claim_headers(key_id, secret, body), claim_headers(key_id, secret, body)
    with serving(env, cwd=tmp_path) as one, serving(env, cwd=tmp_path) as two:
        first = [
            httpx.post(f"{one}/v1/coupons/cp/claims", content=body, headers=to_one),
            httpx.post(f"{two}/v1/coupons/cp/claims", content=body, headers=to_two),
        ]
        before = snapshot(database_url)
        replays = [
            httpx.post(f"{two}/v1/coupons/cp/claims", content=body, headers=to_one),
            httpx.post(f"{one}/v1/coupons/cp/claims", content=body, headers=to_two),
        ]
        after = snapshot(database_url)

    assert [r.status_code for r in first] == [201, 201]
    assert [(r.status_code, r.json()["code"]) for r in replays] == [(401, "nonce_replayed")] * 2
    assert after == before  # a refused replay changes nothing
    assert _used_nonces(database_url) == 0  # the nonces are in the file, not the database
    assert (tmp_path / "promoguard.nonces.db").exists()
