"""The nonce-store tests take the service tests' database and settings of each backend."""

from tests.service.conftest import database_url, settings  # noqa: F401 (fixtures)
