"""Fixtures of the claims tests: the service on both databases, a simulated payment provider
process (its own records file), and keys for the shop and the team. The settings are the
remediation tests' (tests/plans/conftest.py): the same service, pointed at the provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.payments.conftest import simulator  # noqa: F401 (fixture)
from tests.plans.conftest import settings  # noqa: F401 (fixture)
from tests.service.conftest import database_url, make_key, signed_client  # noqa: F401 (fixture)

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings


def auth(settings: Settings, role: str, **options: Any) -> PromoguardAuth:  # noqa: F811
    """Request auth for a new key of ``role``."""
    return PromoguardAuth(*make_key(settings, role, **options))


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:  # noqa: F811
    """The service, called with an admin key, its catalogue loaded."""
    from tests.service.helpers import catalogue  # noqa: PLC0415

    with signed_client(settings) as client:
        assert client.put("/v1/catalogue", json=catalogue()).status_code == 200
        yield client
