"""The service tests' fixtures (a migrated SQLite file and a fresh PostgreSQL schema, or a skip
saying why PostgreSQL is absent), and a shop client whose monitor stays out of the way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import database_url, settings, signed_client  # noqa: F401 (fixtures)

from promoguard.settings import Settings


def shop_catalogue() -> dict[str, Any]:
    """Twelve SKUs: every third one shoes, the rest apparel; odd ones tagged ``sale``."""
    return {
        "currency": "CNY",
        "member_tiers": ["gold", "platinum"],
        "items": [
            {
                "sku": f"sku-{n}",
                "category": "shoes" if n % 3 == 0 else "apparel",
                "tags": ["sale"] if n % 2 else [],
                "unit_price": 5000 + 1375 * n,
                "cost": 2000,
            }
            for n in range(12)
        ],
    }


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:  # noqa: F811 (the imported fixture)
    """An admin client of a shop with the test catalogue; the watch runs only when asked."""
    quiet = settings.model_copy(
        update={"monitor_interval_seconds": 3600, "incident_check_seconds": 3600}
    )
    with signed_client(quiet) as client:
        assert client.put("/v1/catalogue", json=shop_catalogue()).status_code == 200
        yield client
