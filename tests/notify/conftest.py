"""Fixtures of the notification tests: a fake clock, a real webhook receiver, a real SMTP server.

``database_url`` is the service tests' fixture (a migrated SQLite file, and a fresh PostgreSQL
schema or a skip saying why PostgreSQL is absent; a failure under PROMOGUARD_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from tests.service.conftest import SECRET, database_url, make_key  # noqa: F401 (fixture)
from tests.serving import free_port

from promoguard.settings import Settings

from .helpers import (
    FakeClock,
    Mailbox,
    MailHandler,
    Receiver,
    free_socket,
    receiver_app,
    wait_until,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:  # noqa: F811 (the imported fixture)
    return Settings(database_url=database_url, environment="test", secret_key=SECRET)


@pytest.fixture
def receiver(database_url: str) -> Iterator[Receiver]:  # noqa: F811
    """A real HTTP server (uvicorn, own thread) at ``receiver.url``."""
    sock = free_socket()
    port = sock.getsockname()[1]
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hooks/incidents")
    config = uvicorn.Config(
        receiver_app(receiver, database_url), log_level="warning", lifespan="on", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not wait_until(lambda: server.started, thread):
            pytest.fail("the webhook receiver did not start")
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def outbound_key(settings: Settings) -> tuple[str, str]:
    """An operator key in the test database: the receiver knows it, the webhooks sign with it."""
    return make_key(settings, "operator")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd, own thread) on a free local port."""
    mailbox = Mailbox("127.0.0.1", free_port())
    controller = Controller(MailHandler(mailbox), hostname=mailbox.host, port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
