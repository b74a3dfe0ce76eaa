"""Shared by the remediation service tests: run a coroutine against the app's database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


def in_session(client: TestClient, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in a read session of the service's own database, on its event loop."""

    async def run() -> T:
        db: Any = client.app.state.services.db  # type: ignore[attr-defined]
        async with db.read() as session:
            return await work(session)

    return client.portal.call(run)  # type: ignore[union-attr]
