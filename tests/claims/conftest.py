"""Fixtures of the claims tests: the service on both databases with the claims routes, a
simulated payment provider process (its own records file), and keys for the shop and the team.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.payments.conftest import Simulator, simulator  # noqa: F401 (fixture)
from tests.service.conftest import SECRET, database_url, make_key  # noqa: F401 (fixture)

from promoguard.app import create_app
from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings


def claims_app(settings: Settings) -> FastAPI:
    """The service's app (the claims routes are part of it)."""
    return create_app(settings)


def client_for(settings: Settings, role: str = "admin") -> TestClient:
    """A client (not yet started) signing every request with a new key of ``role``."""
    key_id, secret = make_key(settings, role)
    test_client = TestClient(claims_app(settings), client=("127.0.0.1", 50000))
    test_client.auth = PromoguardAuth(key_id, secret)
    test_client.settings = settings  # type: ignore[attr-defined]  # approver keys, see helpers
    return test_client


def auth(settings: Settings, role: str, **options: Any) -> PromoguardAuth:
    """Request auth for a new key of ``role``."""
    return PromoguardAuth(*make_key(settings, role, **options))


@pytest.fixture
def settings(database_url: str, simulator: Simulator, tmp_path: Path) -> Settings:  # noqa: F811
    return Settings(
        database_url=database_url,
        environment="test",
        secret_key=SECRET,
        rules_refresh_seconds=0.2,
        monitor_interval_seconds=60,
        incident_check_seconds=3600,
        payment_provider_url=simulator.url,
        payment_backoff_base_seconds=0.01,
        payment_backoff_max_seconds=0.05,
        queue_path=str(tmp_path / "queue.db"),
    )


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:
    """The service with the claims routes, called with an admin key, its catalogue loaded."""
    from tests.service.helpers import catalogue  # noqa: PLC0415

    with client_for(settings) as client:
        assert client.put("/v1/catalogue", json=catalogue()).status_code == 200
        yield client
