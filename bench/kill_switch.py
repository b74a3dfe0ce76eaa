"""Kill switch propagation: how long after a pause, a resume or a rollback made through one
``promoguard serve`` process another process prices with it.

The bench migrates a database (a SQLite file in a temporary directory by default; with
``--database-url postgresql+psycopg://...`` a fresh schema of that database, dropped afterwards),
creates an admin, a storefront and one approver key per review department, and starts two
``promoguard serve`` processes on it, A and B (``PROMOGUARD_*`` variables of the shell are dropped,
so the configuration is the bench's; ``--redis-url`` adds ``PROMOGUARD_REDIS_URL``, so a change
is also announced on Redis pub/sub). Through A it takes a 满200减50 campaign (v1) through review
and live, then v2 (满200减90) in its place.

B is then quoted (a 300-yuan coat) every ``--poll-ms`` ms for the whole run, as a busy worker is,
and ``--rounds`` times, each after a random pause of that polling (so a move lands anywhere in
B's refresh cycle), the bench makes three moves through A:

* ``pause``: ``POST /v1/campaigns/mj/pause``: B must stop discounting;
* ``resume``: ``POST /v1/campaigns/mj/activate {"version": <the paused one>}``: B must discount
  again (the version is named: ``{}`` means the latest version, which after a rollback is the
  one rolled back from, not the paused one);
* ``rollback``: ``POST /v1/campaigns/mj/rollback``: B must give the other version's discount
  (rollbacks alternate v2 -> v1 -> v2 ...).

A move's propagation time is from the moment A's response arrived until the response of the first
quote from B that shows the move (an upper bound, to within one poll). Each figure is printed per
move as p50 / p95 / max in ms, with how many exceeded the 1 s the kill switch promises.

Usage::

    python bench/kill_switch.py                                  # SQLite, stamp polling only
    python bench/kill_switch.py --redis-url redis://127.0.0.1:6379/15
    python bench/kill_switch.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/kill_switch.py --rounds 50 --refresh 0.25

The last line printed is one JSON object with the figures (``pause_p50_ms``, ``pause_p95_ms``,
``pause_max_ms``, the same for ``resume`` and ``rollback``, and ``over_deadline``), for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from http_quotes import (  # bench/ is on sys.path when run
    own_nonce_file,
    postgres_schema,
    sqlite_database,
)
from promoguard.security.keys import DEPARTMENTS, Role, create_key
from promoguard.security.signing import PromoguardAuth
from promoguard.store import migrate
from promoguard.store.db import Database

SECRET = "bench-secret-0123456789abcdef"
DEADLINE_MS = 1000.0
"""What the kill switch promises: every worker prices with a move within 1 s."""
CAMPAIGN = "mj"
COAT = {"sku": "coat", "category": "apparel", "unit_price": 30000, "quantity": 1}
CART = {"customer": {"id": "c-1"}, "cart": {"lines": [COAT]}}
VERSIONS = {1: 5000, 2: 9000}
"""Version -> the discount it gives the cart (满200减50, 满200减90)."""
MOVES = ("pause", "resume", "rollback")

err = Console(stderr=True)


def threshold(off: int) -> dict[str, Any]:
    return {
        "id": CAMPAIGN,
        "kind": "threshold",
        "scope": {"all_items": True},
        "tiers": [{"min_spend": 20000, "discount": off}],
    }


# -- the database, the keys and the servers ---------------------------------------------------


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """The URL to use: a temporary SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if url is None:
        with sqlite_database() as sqlite_url:
            yield sqlite_url
    elif url.startswith("postgresql"):
        with postgres_schema(url) as schema_url:
            yield schema_url
    else:
        yield url


@dataclass
class Keys:
    admin: PromoguardAuth
    storefront: PromoguardAuth
    approvers: dict[str, PromoguardAuth] = field(default_factory=dict)


def make_keys(url: str) -> Keys:
    async def create() -> Keys:
        db = Database(url)
        try:
            async with db.write() as session:

                async def key(role: Role, department: str | None = None) -> PromoguardAuth:
                    row, secret = await create_key(
                        session, master=SECRET, role=role, created_by="bench", department=department
                    )
                    return PromoguardAuth(row.id, secret)

                keys = Keys(await key(Role.ADMIN), await key(Role.STOREFRONT))
                for department in DEPARTMENTS:
                    keys.approvers[department] = await key(Role.APPROVER, department)
                return keys
        finally:
            await db.dispose()

    return asyncio.run(create())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def servers(env: dict[str, str], count: int = 2) -> Iterator[list[str]]:
    """Start ``count`` ``promoguard serve`` processes at once; yield their base URLs."""
    promoguard = str(Path(sys.executable).with_name("promoguard"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PROMOGUARD_")}
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [promoguard, "serve", "--port", str(port)],
                env={**base_env, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, base in started:
            for _ in range(600):
                if process.poll() is not None:
                    error = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"promoguard serve exited: {error}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            else:
                raise RuntimeError(f"{base} did not come up")
        yield [base for _, base in started]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the campaign -----------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def review(admin: httpx.Client, keys: Keys, version: int) -> None:
    """Submit a version (acknowledging every lint warning) and approve it in every department."""
    base = f"/v1/campaigns/{CAMPAIGN}/versions/{version}"
    findings = ok(admin.get(f"{base}/lint"))["findings"]
    acks = {f["code"]: "bench" for f in findings}
    ok(admin.post(f"{base}/submit", json={"acknowledgements": acks}))
    for auth in keys.approvers.values():
        ok(admin.post(f"{base}/approvals", json={"decision": "approve"}, auth=auth))


def seed(admin: httpx.Client, keys: Keys) -> None:
    """v1 live, then v2 live in its place (so a rollback has somewhere to go)."""
    ok(admin.post("/v1/campaigns", json={"spec": threshold(VERSIONS[1])}), 201)
    review(admin, keys, 1)
    ok(admin.post(f"/v1/campaigns/{CAMPAIGN}/activate", json={}))
    ok(admin.post(f"/v1/campaigns/{CAMPAIGN}/versions", json={"spec": threshold(VERSIONS[2])}), 201)
    review(admin, keys, 2)
    ok(admin.post(f"/v1/campaigns/{CAMPAIGN}/activate", json={"version": 2}))


# -- the measurement --------------------------------------------------------------------------


class Poller:
    """Quotes B every ``interval`` seconds, on a fixed cadence, whatever else happens."""

    def __init__(self, client: httpx.Client, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.next = time.monotonic()
        self.quotes = 0

    def discount(self) -> int:
        delay = self.next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next = max(self.next + self.interval, time.monotonic())
        self.quotes += 1
        total: int = ok(self.client.post("/v1/quotes", json=CART))["discount_total"]
        return total

    def keep_busy(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.discount()

    def until(self, expected: int, since: float, timeout: float) -> float:
        """Poll until B gives ``expected``; the ms from ``since`` to that quote's response."""
        while True:
            seen = self.discount()
            now = time.monotonic()
            if seen == expected:
                return (now - since) * 1000
            if now - since > timeout:
                raise RuntimeError(f"B still gives {seen}, not {expected}, after {timeout} s")


def percentile(samples: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run(args: argparse.Namespace, url: str) -> tuple[dict[str, list[float]], int]:
    migrate.upgrade(url)
    keys = make_keys(url)
    env = {
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
    }
    if args.refresh is not None:
        env["PROMOGUARD_RULES_REFRESH_SECONDS"] = str(args.refresh)
    if args.redis_url:
        env["PROMOGUARD_REDIS_URL"] = args.redis_url
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {move: [] for move in MOVES}
    with (
        tempfile.TemporaryDirectory(prefix="promoguard-kill-switch-") as tmp,
        servers(env | own_nonce_file(tmp)) as (base_a, base_b),
        httpx.Client(base_url=base_a, auth=keys.admin, timeout=30) as admin,
        httpx.Client(base_url=base_b, auth=keys.storefront, timeout=30) as shop_b,
    ):
        seed(admin, keys)
        poller = Poller(shop_b, args.poll_ms / 1000)
        live_version = 2
        poller.until(VERSIONS[live_version], time.monotonic(), args.timeout)

        def move(action: str, body: dict[str, Any]) -> float:
            poller.keep_busy(rng.uniform(args.idle_min, args.idle_max))
            ok(admin.post(f"/v1/campaigns/{CAMPAIGN}/{action}", json=body))
            return time.monotonic()

        with err.status("moving...") as status:
            for number in range(1, args.rounds + 1):
                status.update(f"round {number} of {args.rounds}")
                since = move("pause", {"reason": "bench"})
                samples["pause"].append(poller.until(0, since, args.timeout))
                since = move("activate", {"version": live_version})  # see the docstring
                samples["resume"].append(poller.until(VERSIONS[live_version], since, args.timeout))
                since = move("rollback", {"reason": "bench"})
                live_version = 3 - live_version
                samples["rollback"].append(
                    poller.until(VERSIONS[live_version], since, args.timeout)
                )
    return samples, poller.quotes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="default: SQLite in a temporary directory; PostgreSQL: a new schema"
    )
    parser.add_argument("--redis-url", help="announce changes on Redis pub/sub too")
    parser.add_argument("--rounds", type=int, default=20, help="pauses, resumes and rollbacks each")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="how often B is quoted")
    parser.add_argument(
        "--refresh", type=float, help="PROMOGUARD_RULES_REFRESH_SECONDS (default: the server's)"
    )
    parser.add_argument("--idle-min", type=float, default=0.2, help="seconds of polling between")
    parser.add_argument("--idle-max", type=float, default=0.8, help="moves, chosen at random")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on a move after this")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    started = time.monotonic()
    with database(args.database_url) as url:
        samples, quotes = run(args, url)
    elapsed = time.monotonic() - started

    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    signal = "stamp + Redis pub/sub" if args.redis_url else "stamp polling"
    refresh = f"{args.refresh} s" if args.refresh is not None else "default"
    table = Table(
        title=f"propagation from worker A to worker B: {backend}, {signal}, refresh {refresh} "
        f"({platform.python_implementation()} {platform.python_version()}, {args.rounds} rounds, "
        f"B quoted every {args.poll_ms:g} ms)"
    )
    for column in ("move", "n", "p50 ms", "p95 ms", "max ms", "mean ms", "over 1 s"):
        table.add_column(column, justify="right")
    summary: dict[str, Any] = {}
    over = 0
    for move, values in samples.items():
        late = sum(v > DEADLINE_MS for v in values)
        over += late
        p50, p95, top = percentile(values, 0.5), percentile(values, 0.95), max(values)
        table.add_row(
            move,
            str(len(values)),
            f"{p50:.1f}",
            f"{p95:.1f}",
            f"{top:.1f}",
            f"{statistics.fmean(values):.1f}",
            str(late),
        )
        summary |= {
            f"{move}_p50_ms": round(p50, 1),
            f"{move}_p95_ms": round(p95, 1),
            f"{move}_max_ms": round(top, 1),
        }
    err.print(f"{quotes:,} quotes from B in {elapsed:.1f} s")
    Console().print(table)
    summary |= {"backend": backend.lower(), "redis": bool(args.redis_url), "over_deadline": over}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
