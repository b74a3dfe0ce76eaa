"""Reconciliation asks a provider page again when it fails for a passing reason (a 5xx, a
timeout) and gives up on one that keeps failing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from promoguard.payments.provider import ProviderUnavailableError, Refund
from promoguard.payments.reconcile import PAGE_TRIES, reconcile
from promoguard.store import migrate
from promoguard.store.db import Database


class Flaky:
    """A provider (third party: a stand-in with failure injection) whose list fails first."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def list_refunds(self, **_: Any) -> list[Refund]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ProviderUnavailableError("500 api_error: injected")
        return []


def run(tmp_path: Path, provider: Flaky) -> Any:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(url)

    async def go() -> Any:
        db = Database(url)
        try:
            return await reconcile(db, provider)  # type: ignore[arg-type]
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_a_page_that_fails_now_and_then_is_asked_again(tmp_path: Path):
    provider = Flaky(failures=2)
    assert run(tmp_path, provider).ok
    assert provider.calls == 3


def test_a_provider_that_keeps_failing_is_an_error(tmp_path: Path):
    provider = Flaky(failures=PAGE_TRIES)
    with pytest.raises(ProviderUnavailableError):
        run(tmp_path, provider)
    assert provider.calls == PAGE_TRIES
