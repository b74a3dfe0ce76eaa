"""Fixtures of the dashboard tests: the service on SQLite with a catalogue and a live campaign,
and logging in to the dashboard as a key of a role (the form, its CSRF token, the session)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import SECRET, make_key, signed_client
from tests.service.helpers import catalogue

from promoguard.settings import Settings
from promoguard.store import migrate

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    migrate.upgrade(url)
    return Settings(
        database_url=url,
        environment="test",
        secret_key=SECRET,
        rules_refresh_seconds=0.2,
        incident_check_seconds=3600,
        queue_path=str(tmp_path / "queue.db"),
    )


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:
    """The service with a catalogue, called with an admin key (API calls are signed)."""
    with signed_client(settings) as client:
        assert client.put("/v1/catalogue", json=catalogue()).status_code == 200
        yield client


@dataclass
class Staff:
    """Someone logged in to the dashboard in a client's cookie jar."""

    key_id: str
    secret: str
    csrf: str


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF_FIELD.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def login(client: TestClient, settings: Settings, role: str, **options: Any) -> Staff:
    """Create a key of ``role`` and log in with it through the form."""
    key_id, secret = make_key(settings, role, **options)
    form = client.get("/ui/login", auth=None)
    assert form.status_code == 200
    done = client.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "key_id": key_id, "secret": secret, "next": "/ui"},
        auth=None,
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    page = client.get("/ui/campaigns", auth=None)
    assert page.status_code == 200
    return Staff(key_id, secret, csrf_of(page.text))
