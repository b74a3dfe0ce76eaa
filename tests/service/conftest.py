"""The service on real databases: every test here runs on SQLite and on PostgreSQL.

PostgreSQL is the one on 127.0.0.1:5432 (database ``test``, trust auth), or
``PROMOGUARD_TEST_POSTGRES_URL``. Each test gets its own schema, migrated from scratch and dropped
afterwards. Where PostgreSQL is not running the PostgreSQL half is skipped with a message, unless
``PROMOGUARD_REQUIRE_SERVICES=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from promoguard.app import create_app
from promoguard.security.keys import Role, create_key
from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store import migrate
from promoguard.store.db import Database

POSTGRES_URL = os.environ.get(
    "PROMOGUARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET = "test-secret-0123456789abcdef"


def _unreachable(service: str, url: str, exc: Exception) -> None:
    """Skip with a message saying why, or fail when CI requires the services."""
    message = (
        f"{service} is not reachable at {url} ({exc.__class__.__name__}): "
        f"the {service} integration tests are skipped. Start it (see README) or run .ci/run."
    )
    if os.environ.get("PROMOGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _postgres_or_skip() -> None:
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(plain, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _unreachable("PostgreSQL", POSTGRES_URL, exc)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A migrated, empty database of each backend.

    On PostgreSQL, ``PROMOGUARD_NONCE_FILE`` points into the test's own directory (for the
    settings and servers made from the environment): the nonce file's default there is one in
    the working directory, which would be the checkout, shared by every test.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'promoguard.db'}"
        migrate.upgrade(url)
        yield url
        return
    _postgres_or_skip()
    monkeypatch.setenv("PROMOGUARD_NONCE_FILE", str(tmp_path / "promoguard.nonces.db"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        environment="test",
        secret_key=SECRET,
        rules_refresh_seconds=0.2,
    )


def make_key(settings: Settings, role: str, **options: Any) -> tuple[str, str]:
    """Create an API key in the test database; returns (key id, secret)."""

    async def create() -> tuple[str, str]:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                key, secret = await create_key(
                    session,
                    master=settings.secret_key,
                    role=Role(role),
                    created_by="test",
                    **options,
                )
                return key.id, secret
        finally:
            await db.dispose()

    return asyncio.run(create())


def signed_client(settings: Settings, role: str = "admin", **options: Any) -> TestClient:
    """A client (not yet started) whose every request is signed with a new key of ``role``."""
    client_address = options.pop("client", ("127.0.0.1", 50000))
    key_id, secret = make_key(settings, role, **options)
    test_client = TestClient(create_app(settings), client=client_address)
    test_client.auth = PromoguardAuth(key_id, secret)
    test_client.key_id = key_id  # type: ignore[attr-defined]
    test_client.settings = settings  # type: ignore[attr-defined]  # approver keys, see helpers
    return test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The service, called with an admin key (every route admits it)."""
    with signed_client(settings) as test_client:
        yield test_client


REDIS_URL = os.environ.get("PROMOGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    """The local Redis (database 15), or a skip with a message (a failure in CI)."""
    import redis  # noqa: PLC0415

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unreachable("Redis", REDIS_URL, exc)
    return REDIS_URL
