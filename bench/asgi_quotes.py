"""The server's own CPU time per ``POST /v1/quotes`` (``--orders``: per ``POST /v1/orders``),
without the network: the app is called as an ASGI application in this process, so a profile
shows only promoguard (middleware, FastAPI, the security gate, pricing, the quote token) and
the figure does not move with a neighbour's load as much as requests/s through ``promoguard
serve`` does.

The database, the keys, the 42 live campaigns and the carts are those of
``bench/http_quotes.py`` (seeded through the API, signed). By default prometheus-client runs in
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as ``promoguard serve --workers 2`` does),
so the metrics cost what they cost in production. What it leaves out: uvicorn's HTTP parsing and
socket writes (the same for every configuration).

Usage::

    python bench/asgi_quotes.py --auth unsigned --requests 20000
    python bench/asgi_quotes.py --auth signed --backend postgresql
    python bench/asgi_quotes.py --auth signed --redis redis://127.0.0.1:6379/12
    python bench/asgi_quotes.py --auth signed --profile /tmp/signed.prof
    python bench/asgi_quotes.py --auth signed --backend postgresql --orders --requests 3000

It prints CPU ms per request (this process: the event loop and the database driver's threads),
requests/s and, with ``--profile``, the top of a cProfile of the measured requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import os
import pstats
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from http_quotes import (
    DEFAULT_PG_URL,
    SECRET,
    campaign_specs,
    catalogue,
    own_nonce_file,
    quote_bodies,
)

Headers = list[tuple[bytes, bytes]]


@contextlib.contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL schema, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="promoguard-asgi-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _key(url: str, role: str, department: str | None = None) -> tuple[str, str]:
    from promoguard.security.keys import Role, create_key  # noqa: PLC0415
    from promoguard.store.db import Database  # noqa: PLC0415

    db = Database(url)
    try:
        async with db.write() as session:
            key, secret = await create_key(
                session, master=SECRET, role=Role(role), created_by="bench", department=department
            )
            return key.id, secret
    finally:
        await db.dispose()


async def _seed(app: Any, specs: list[dict[str, Any]], url: str) -> None:
    """Create, review and activate every campaign through the API (signed)."""
    import httpx  # noqa: PLC0415

    from promoguard.security.signing import PromoguardAuth  # noqa: PLC0415

    operator = PromoguardAuth(*await _key(url, "operator"))
    approvers = [
        PromoguardAuth(*await _key(url, "approver", d))
        for d in ("marketing", "engineering", "product")
    ]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", auth=operator
    ) as client:
        for spec in specs:
            created = await client.post("/v1/campaigns", json={"spec": spec})
            assert created.status_code == 201, created.text
            base = f"/v1/campaigns/{spec['id']}/versions/1"
            findings = (await client.get(f"{base}/lint")).json()["findings"]
            acks = {f["code"]: "benchmark seed" for f in findings}
            done = await client.post(f"{base}/submit", json={"acknowledgements": acks})
            assert done.status_code == 200, done.text
            for approver in approvers:
                done = await client.post(
                    f"{base}/approvals", json={"decision": "approve"}, auth=approver
                )
                assert done.status_code == 200, done.text
            done = await client.post(f"/v1/campaigns/{spec['id']}/activate", json={})
            assert done.status_code == 200, done.text


Request = tuple[str, bytes, Headers]


def _requests(
    bodies: list[bytes], count: int, auth: str, key: tuple[str, str], path: str = "/v1/quotes"
) -> list[Request]:
    from promoguard.security.signing import sign  # noqa: PLC0415

    made = []
    for body in itertools.islice(itertools.cycle(bodies), count):
        headers: Headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if path == "/v1/orders":
            headers.append((b"idempotency-key", uuid.uuid4().hex.encode()))
        if auth == "signed":
            signed = sign(key_id=key[0], secret=key[1], method="POST", path=path, body=body)
            headers += [(k.lower().encode(), v.encode()) for k, v in signed.items()]
        else:
            headers.append((b"authorization", f"Bearer {key[0]}.{key[1]}".encode()))
        made.append((path, body, headers))
    return made


async def _order_bodies(
    app: Any, bodies: list[bytes], count: int, auth: str, key: tuple[str, str]
) -> list[bytes]:
    """``count`` order bodies, each with a quote token of its own (quoted here, not timed)."""
    made: list[bytes] = []
    for path, body, headers in _requests(bodies, count, auth, key):
        status, answer = await _call(app, path, body, headers)
        assert status == 200, answer[:300]
        made.append(orjson.dumps({"quote_token": orjson.loads(answer)["quote_token"]}))
    return made


async def _call(app: Any, path: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def _drive(app: Any, requests: list[Request], concurrency: int) -> int:
    queue = iter(requests)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for path, body, headers in queue:
            status, answer = await _call(app, path, body, headers)
            if status not in (200, 201):
                errors += 1
                if errors <= 3:
                    print(f"HTTP {status}: {answer[:300]!r}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def run(args: argparse.Namespace, url: str) -> None:
    from promoguard.app import create_app  # noqa: PLC0415
    from promoguard.settings import Settings  # noqa: PLC0415
    from promoguard.store import migrate  # noqa: PLC0415

    await asyncio.to_thread(migrate.upgrade, url)
    options: dict[str, Any] = {}
    if args.auth == "unsigned":
        options = {"signing_required": [], "rate_limits": {}}
    if args.redis:
        options["redis_url"] = args.redis
        options["redis_prefix"] = f"bench{uuid.uuid4().hex[:8]}:"
    settings = Settings(
        environment="production",
        database_url=url,
        secret_key=SECRET,
        rules_refresh_seconds=0.5,
        **options,
    )
    rng = random.Random(args.seed)
    items = catalogue(rng)
    specs = campaign_specs(items, rng)
    bodies = quote_bodies(items, specs, rng)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await _seed(app, specs, url)
        key = await _key(url, "storefront")
        await asyncio.sleep(1.0)  # every rule change is loaded
        if args.orders:
            # Quote tokens live 15 minutes: enough for a run.
            orders = await _order_bodies(app, bodies, args.warmup + args.requests, args.auth, key)
            warm = _requests(orders[: args.warmup], args.warmup, args.auth, key, "/v1/orders")
            timed = _requests(orders[args.warmup :], args.requests, args.auth, key, "/v1/orders")
        else:
            warm = _requests(bodies, args.warmup, args.auth, key)
            timed = _requests(bodies, args.requests, args.auth, key)
        errors = await _drive(app, warm, args.concurrency)
        gc.collect()
        gc.freeze()
        profiler = cProfile.Profile() if args.profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        errors += await _drive(app, timed, args.concurrency)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(timed)
    print(
        f"{args.backend} {args.auth}{' redis' if args.redis else ''}: {n:,} "
        f"{'orders' if args.orders else 'quotes'}, "
        f"{cpu / n * 1e3:.3f} CPU ms/req, {n / wall:,.0f} req/s, "
        f"{args.concurrency} in flight, errors {errors}"
    )
    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(args.profile, stream=sys.stdout)
        stats.strip_dirs().sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--auth", choices=("unsigned", "signed"), default="unsigned")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument(
        "--orders",
        action="store_true",
        help="time POST /v1/orders instead (each with a quote token of its own, quoted first)",
    )
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", help="nonces and limits in this Redis (a fresh key prefix)")
    parser.add_argument("--single-process-metrics", action="store_true")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", help="write a cProfile of the measured requests here")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    for name in list(os.environ):
        if name.startswith("PROMOGUARD_"):
            del os.environ[name]
    with contextlib.ExitStack() as stack:
        if not args.single_process_metrics:
            # Before prometheus-client is imported: it picks its value class then.
            metrics = stack.enter_context(tempfile.TemporaryDirectory(prefix="asgi-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
        url = stack.enter_context(database(args.backend, args.pg_url))
        nonces = stack.enter_context(tempfile.TemporaryDirectory(prefix="asgi-nonces-"))
        os.environ.update(own_nonce_file(nonces))
        try:
            import uvloop  # noqa: PLC0415
        except ImportError:
            asyncio.run(run(args, url))
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run(args, url))


if __name__ == "__main__":
    main()
