"""Fixtures of the remediation plan tests: the service on both databases, a simulated payment
provider process (its own records file), and the service's settings pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.payments.conftest import Simulator, simulator  # noqa: F401 (fixture)
from tests.service.conftest import SECRET, database_url  # noqa: F401 (fixture)

from promoguard.settings import Settings


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
