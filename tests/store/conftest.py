"""The store tests take the service tests' migrated database of each backend."""

from tests.service.conftest import database_url  # noqa: F401 (fixture)
