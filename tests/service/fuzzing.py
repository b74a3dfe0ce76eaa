"""What the schemathesis modules (``tests/service/test_api_fuzz.py``, ``tests/claims/
test_claims_fuzz.py``) share: the seed and example count from the environment, the hypothesis
settings, an app on an empty migrated SQLite database of its own, the checks configuration and a
helper that points a generated case at things that exist.

Runs are derandomized, so CI sends the same requests every time. To explore other ones, set
``PROMOGUARD_FUZZ_SEED`` (an integer) and optionally ``PROMOGUARD_FUZZ_EXAMPLES`` (default 40 per
operation); a failure prints a curl command that reproduces it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from promoguard.app import create_app
from promoguard.settings import Settings
from promoguard.store import migrate

from .conftest import SECRET

__all__ = ["EXAMPLES", "HYPOTHESIS", "SEED", "fuzz_config", "fuzzed_app", "replaced"]

SEED = os.environ.get("PROMOGUARD_FUZZ_SEED") or None
EXAMPLES = int(os.environ.get("PROMOGUARD_FUZZ_EXAMPLES", "40"))

HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""The hypothesis settings of every fuzz test (a decorator)."""


def fuzzed_app(prefix: str) -> tuple[Settings, FastAPI]:
    """An app on an empty SQLite database in a temporary directory of its own (removed at exit).

    The fuzzed requests carry an admin key as a bearer token, so signing is required of no
    role: request signing has its own tests, and a signature (nonce, body digest) cannot survive
    schemathesis re-sending a case. The database is migrated before the app exists: loading the
    schema starts the app, and its background loops (sweeper, scheduler, monitoring) must find
    their tables while collection goes on.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    fuzzed = Settings(
        database_url=f"sqlite:///{directory / 'promoguard.db'}",
        environment="test",
        secret_key=SECRET,
        signing_required=[],
    )
    migrate.upgrade(fuzzed.database_url)
    return fuzzed, create_app(fuzzed)


def fuzz_config(operations: list[dict[str, Any]] | None = None) -> schemathesis.Config:
    """The checks, explicit so that a schemathesis.toml up the tree cannot change what CI checks.

    Every built-in check stays on (not_a_server_error, status_code_conformance,
    content_type_conformance, response_headers_conformance, response_schema_conformance,
    negative_data_rejection, positive_data_acceptance, missing_required_header,
    unsupported_method, allow_header_conformance, use_after_free and
    ensure_resource_availability) but two: the API keys are checked by a route dependency, not
    an OpenAPI security scheme, so the document declares no auth for ``ignored_auth`` and
    ``object_level_authorization`` to hold the API to (the 401/403 problems are declared;
    ``tests/service`` covers who may call what). ``operations`` are per-operation overrides.
    """
    return schemathesis.Config.from_dict(
        {
            **({"seed": int(SEED)} if SEED else {}),
            "checks": {
                "ignored_auth": {"enabled": False},
                "object_level_authorization": {"enabled": False},
            },
            **({"operations": operations} if operations else {}),
        }
    )


def replaced(case: schemathesis.Case, changes: dict[str, Any]) -> schemathesis.Case:
    """``case`` with ``changes``: names of its path parameters set in the path, the rest in a
    JSON object body (a body of another shape is left as generated)."""
    names = case.path_parameters or {}
    path = {k: v for k, v in changes.items() if k in names}
    body = {k: v for k, v in changes.items() if k not in path}
    if path:
        case.path_parameters = {**names, **path}
    if body and isinstance(case.body, dict):
        case.body = {**case.body, **body}
    return case
