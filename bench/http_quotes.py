"""HTTP API speed: ``POST /v1/quotes`` and ``POST /v1/orders`` through ``promoguard serve``,
and what authentication costs: signed requests against bearer-key requests.

Every ``/v1`` route needs an API key. For each backend (SQLite in a temporary file; PostgreSQL in
a fresh schema of the ``test`` database, created before and dropped after, so other users of that
database never see it) the bench:

1. creates two keys with ``promoguard keys create`` (which migrates the database first): an
   ``operator`` key to seed campaigns and a ``storefront`` key for quotes and orders. The CLI and
   every server get the same ``PROMOGUARD_SECRET_KEY`` and ``PROMOGUARD_DATABASE_URL`` (any other
   ``PROMOGUARD_*`` variable inherited from the shell is dropped, so the configuration is the
   bench's), and the bench checks each printed secret is the one that server secret derives;
2. for each authentication mode, in this order (``--auth`` picks one):

   * ``unsigned``, the baseline: the server runs with ``PROMOGUARD_SIGNING_REQUIRED='[]'`` and
     ``PROMOGUARD_RATE_LIMITS='{}'``, and the storefront calls with
     ``Authorization: Bearer <key id>.<secret>`` (key lookup and a SHA-256 of the secret only);
   * ``signed``, the production defaults: every role must sign (HMAC over the canonical string,
     timestamp within the skew, body digest, a nonce recorded once) and the default rate limits
     count every request;

   it starts ``promoguard serve --workers N`` (migrations, then uvicorn) in its own process group,
   with a nonce file of its own in a temporary directory (``PROMOGUARD_NONCE_FILE``),
   and polls ``/healthz`` until it answers; the first server seeds a realistic set of live
   campaigns through the API (``POST /v1/campaigns``, review by three approver keys, then
   ``/activate``, signed with the operator key): a store-wide 每满 threshold, category
   thresholds, SKU special prices and a member price;
3. warms up, then drives ``POST /v1/quotes`` for ``--duration`` seconds with ``--concurrency``
   requests in flight, one keep-alive connection each, from this process (a separate process
   from the server's);
4. on the last server only (the signed one by default; ``--skip-orders`` skips this): keeps the
   quote tokens the quote phase got back (topping them up if there are too few), warms the order
   path up, then drives ``POST /v1/orders`` for ``--duration`` seconds with
   ``--order-concurrency`` orders in flight (16 by default: a shop's checkouts arrive spread
   out, not 32 at once), each order with its own fresh quote token and a unique
   ``Idempotency-Key``;
5. terminates each server's whole process group, whatever happened.

Signing costs the client CPU too (SHA-256 of the body, an HMAC, a fresh random nonce), and on a
small machine the load generator shares the cores with the server. So the requests of a timed
signed phase are signed before it starts (for quotes, twice the warm-up's rate plus 500 per
second of the phase, at most ``--presign-rate``; for orders, one per quote token held), each
with its own nonce, their timestamps well inside the server's 300 s skew for any phase shorter
than ``PRESIGN_MAX_AGE``; the phase only sends them. Should they run out, or grow too old, the
rest are signed as they are sent and the count shows in the table (``signed live``). Warm-ups
and token top-ups are signed as they go.

The signing overhead is ``1 - signed quotes/s / unsigned quotes/s`` (target: at most 15 %). The
server's CPU time per request is steadier than requests/s on a shared machine, so its increase is
reported next to it; ``--rounds N`` alternates fresh unsigned and signed servers N times and
pools each mode's rounds, so a neighbour's burst of CPU does not land on one mode only.

Any response that is not 2xx (or a transport failure, or a quote priced under a different rules
stamp than the one seeded) is an error: counted, and the first few bodies are printed. Latency is
measured by the client from the first byte written to the last byte read, with a fixed number of
requests in flight (a closed loop: mean latency = concurrency / throughput).

The default load client speaks HTTP/1.1 keep-alive directly on asyncio (uvloop when installed):
on a machine with two cores shared by the server and the load generator, every microsecond the
client spends is taken from the server. ``--client httpx`` uses httpx instead, for comparison
(it costs some 30 times the client CPU per request).

uvicorn's workers share one listening socket and the first one awake accepts every connection
waiting, so a burst of connects can land on a single worker while the other idles. Before each
phase the bench reconnects until every worker holds its share of the connections (read from
``/proc``), so the figures are what the workers do together; ``--unbalanced`` keeps the
connections where a burst puts them. The table shows the connections each worker held and its
share of the server's CPU, the server's CPU time per request (steadier than requests/s when the
machine is shared), and how busy the load generator, PostgreSQL and everything else were.

Usage::

    python bench/http_quotes.py                          # both backends, 15 s per phase
    python bench/http_quotes.py --duration 10 --backend sqlite
    python bench/http_quotes.py --backend sqlite --skip-orders      # the signing overhead only
    python bench/http_quotes.py --backend sqlite --skip-orders --rounds 3
    python bench/http_quotes.py --auth signed            # production settings only
    python bench/http_quotes.py --server-env PROMOGUARD_REDIS_URL=redis://127.0.0.1:6379/0
    python bench/http_quotes.py --concurrency 64 --workers 4
    python bench/http_quotes.py --profile /tmp/pg        # one worker under cProfile

The last line printed is one JSON object, for scripts: ``quotes_rps``, ``quotes_p99_ms``,
``orders_rps``, ``orders_p99_ms``, ... (from the signed server, or the only one run) for SQLite;
``quotes_rps_unsigned``, ``quotes_rps_signed``, their ``_p99_ms`` and ``_server_cpu_ms``,
``signing_overhead_pct`` (throughput) and ``signing_overhead_cpu_pct`` (server CPU per request);
the same keys ending in ``_pg`` for PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import platform
import pstats
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promoguard.security.keys import derive_secret
from promoguard.security.signing import PromoguardAuth, sign

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-0123456789abcdef"
"""``PROMOGUARD_SECRET_KEY`` of the key-creating CLI and of every server: keys derive from it."""
AUTH_MODES = ("unsigned", "signed")
"""The order the modes run in: the baseline first; orders run on the last server."""
AUTH_LABELS = {"unsigned": "bearer", "signed": "signed"}
PRESIGN_MAX_AGE = 240.0
"""Seconds a presigned request may wait before it is sent (the server allows 300 s of skew)."""
OVERHEAD_TARGET_PCT = 15.0
"""Signing and rate limits may cost at most this share of the unsigned quote throughput."""
TARGETS = {"quotes": (2000.0, 25.0), "orders": (500.0, 50.0)}
"""Per phase: (requests/s at least, p99 ms at most)."""
ERROR_SAMPLES = 3
REQUEST_TIMEOUT = 30.0
CONNECT_PAUSE = 0.005

CATEGORIES = 20
SKUS = 2000
PRICES = (990, 1990, 2990, 4990, 9900, 12900, 19900, 39900, 89900)
TIERS = ("silver", "gold", "platinum")

Headers = tuple[tuple[str, str], ...]
Item = tuple[str, bytes, Headers]
"""One request to send: path, JSON body, extra headers."""

err = Console(stderr=True)


# -- the catalogue, the campaigns and the carts ---------------------------------------------


@dataclass(frozen=True)
class Sku:
    sku: str
    category: str
    price: int


def catalogue(rng: random.Random) -> list[Sku]:
    """2,000 SKUs in 20 categories at list prices from 9.90 to 899.00."""
    return [Sku(f"sku{n:05d}", f"cat{n % CATEGORIES:02d}", rng.choice(PRICES)) for n in range(SKUS)]


def campaign_specs(items: list[Sku], rng: random.Random) -> list[dict[str, Any]]:
    """42 live campaigns: 1 store-wide 每满 threshold, 10 category thresholds, 30 SKU special
    prices on 1-2 SKUs each, 1 member price on three categories."""
    now = datetime.now(UTC)
    window = {
        "valid_from": (now - timedelta(days=1)).isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
    }
    specs: list[dict[str, Any]] = [
        {
            "kind": "threshold",
            "id": "store-every-300-minus-30",
            "name": "每满300减30",
            "scope": {"all_items": True, "exclude_categories": ["cat19"]},
            "tiers": [{"min_spend": 30000, "discount": 3000}],
            "repeat": True,
            "repeat_cap": 30000,
            "priority": 10,
        }
    ]
    for n in range(10):
        specs.append(
            {
                "kind": "threshold",
                "id": f"cat{n:02d}-threshold",
                "name": f"cat{n:02d} 满199减20 / 满399减50",
                "scope": {"categories": [f"cat{n:02d}"]},
                "tiers": [
                    {"min_spend": 19900, "discount": 2000},
                    {"min_spend": 39900, "discount": 5000},
                ],
                "priority": 20 + n,
            }
        )
    promoted = rng.sample(items, 60)
    for n in range(30):
        picked = promoted[2 * n : 2 * n + rng.randint(1, 2)]
        specs.append(
            {
                "kind": "fixed_price",
                "id": f"special-{n:02d}",
                "name": f"特价 {n}",
                "scope": {"skus": [i.sku for i in picked]},
                "price": max(1, min(i.price for i in picked) * 85 // 100),
            }
        )
    specs.append(
        {
            "kind": "member_price",
            "id": "member-price-electronics",
            "name": "会员价",
            "scope": {"categories": ["cat10", "cat11", "cat12"]},
            "offers": [
                {"tier": "silver", "percent": "3"},
                {"tier": "gold", "percent": "5"},
                {"tier": "platinum", "percent": "8"},
            ],
        }
    )
    return [spec | window for spec in specs]


def quote_bodies(items: list[Sku], specs: list[dict[str, Any]], rng: random.Random) -> list[bytes]:
    """4,096 quote requests: carts of 1-8 lines (a fifth of the picks from promoted SKUs),
    quantities 1-3, customers from a pool of 5,000, a third of them members."""
    promoted_skus = {s for spec in specs for s in spec["scope"].get("skus", ())}
    promoted = [i for i in items if i.sku in promoted_skus]
    bodies = []
    for _ in range(4096):
        picked: dict[str, Sku] = {}
        for _ in range(rng.randint(1, 8)):
            item = rng.choice(promoted if rng.random() < 0.2 else items)
            picked[item.sku] = item
        number = rng.randrange(5000)
        customer: dict[str, Any] = {"id": f"customer-{number}"}
        if number % 3 == 0:
            customer["member_tier"] = TIERS[number % len(TIERS)]
        lines = [
            {
                "sku": i.sku,
                "category": i.category,
                "unit_price": i.price,
                "quantity": rng.choice((1, 1, 1, 2, 3)),
            }
            for i in picked.values()
        ]
        body = {"customer": customer, "cart": {"lines": lines}, "coupons": []}
        bodies.append(orjson.dumps(body))
    return bodies


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def own_nonce_file(directory: str | Path) -> dict[str, str]:
    """The setting that gives a run's servers a nonce file of their own in ``directory`` (on
    PostgreSQL the default is one in the working directory, which every earlier run would have
    left behind, filled)."""
    return {"PROMOGUARD_NONCE_FILE": str(Path(directory) / "promoguard.nonces.db")}


def promoguard_env(
    database_url: str, mode: str = "signed", extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the key-creating CLI and of every server: one secret and one database
    for all. ``PROMOGUARD_*`` variables of the shell are dropped (the settings are the bench's);
    the unsigned baseline lets every role call with a bearer key and counts no rate limits.
    ``extra`` (``--server-env``, for experiments) overrides any setting but those two."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PROMOGUARD_")}
    env["PROMOGUARD_ENVIRONMENT"] = "production"
    if mode == "unsigned":
        env |= {"PROMOGUARD_SIGNING_REQUIRED": "[]", "PROMOGUARD_RATE_LIMITS": "{}"}
    env |= extra or {}
    env |= {"PROMOGUARD_DATABASE_URL": database_url, "PROMOGUARD_SECRET_KEY": SECRET}
    return env


def _promoguard(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("promoguard")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from promoguard.cli import main; main()", *args]


def _server_command(port: int, workers: int, profile: Path | None) -> list[str]:
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if profile is not None:
        # One worker: uvicorn then serves in the main process, where cProfile is.
        script = Path(sys.executable).with_name("promoguard")
        return [sys.executable, "-m", "cProfile", "-o", str(profile), str(script), *serve]
    return _promoguard(*serve)


@dataclass(frozen=True)
class ApiKey:
    """A key the CLI created, and its secret."""

    role: str
    key_id: str
    secret: str


def create_key(database_url: str, role: str, extra: dict[str, str], *options: str) -> ApiKey:
    """``promoguard keys create --role ROLE`` (it migrates the database first) with the bench's
    database and secret; the key id and secret parsed from what it prints."""
    command = _promoguard("keys", "create", "--role", role, "--label", f"bench {role}", *options)
    done = subprocess.run(
        command,
        env=promoguard_env(database_url, extra=extra) | {"NO_COLOR": "1", "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    key_id = re.search(r"^key id:\s+(pk_[A-Za-z0-9_-]+)", done.stdout, re.MULTILINE)
    secret = re.search(r"^secret:\s+(\S+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or key_id is None or secret is None:
        said = "\n".join((done.stdout + done.stderr).splitlines()[-12:])
        raise RuntimeError(
            f"promoguard keys create --role {role} failed ({done.returncode}):\n{said}"
        )
    key = ApiKey(role, key_id[1], secret[1])
    if key.secret != derive_secret(SECRET, key.key_id):
        raise RuntimeError(
            f"the {role} key's secret is not the one PROMOGUARD_SECRET_KEY derives: the CLI and "
            "the bench disagree on the server secret"
        )
    return key


class Server:
    """``promoguard serve`` in its own process group; :meth:`stop` ends the whole group."""

    def __init__(self, env: dict[str, str], workers: int, log: Path, profile: Path | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                _server_command(self.port, workers, profile),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        # uvicorn re-raises the signal that stopped it once it has shut down; a SIGTERM then
        # kills the process before cProfile writes its file, a SIGINT unwinds through it.
        self.stop_signal = signal.SIGINT if profile is not None else signal.SIGTERM

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll ``/healthz`` until it answers 200; the seconds it took."""
        start = time.perf_counter()
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while time.perf_counter() - start < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited ({self.process.returncode}):\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return time.perf_counter() - start
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /healthz in {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far: this server's process group (``server``, and each process as
        ``pid:N``), every ``postgres`` process, and the whole machine (from ``/proc/stat``), so a
        phase can tell who was busy."""
        tick = os.sysconf("SC_CLK_TCK")
        server = postgres = 0
        found: dict[str, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            used = int(fields[11]) + int(fields[12])
            if int(fields[2]) == self.pgid:
                server += used
                if not self._is_helper(entry.path):
                    found[f"pid:{entry.name}"] = used / tick
            elif stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
                postgres += used
        machine = 0
        with contextlib.suppress(OSError):
            jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
            machine = sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait
        return found | {
            "server": server / tick,
            "postgres": postgres / tick,
            "machine": machine / tick,
        }

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the workers, or the leader when it serves alone."""
        group = [
            int(entry.name)
            for entry in os.scandir("/proc")
            if entry.name.isdigit()
            and self._in_group(entry.path)
            and not self._is_helper(entry.path)
        ]
        workers = [pid for pid in group if pid != self.pgid]
        return workers or [self.pgid]

    def _in_group(self, proc: str) -> bool:
        try:
            stat = Path(proc, "stat").read_text()
        except OSError:
            return False
        return int(stat[stat.rindex(")") + 2 :].split()[2]) == self.pgid

    def connection_owners(self, client_ports: set[int]) -> dict[int, int]:
        """Which worker (pid) holds the server end of each of our connections (by client port),
        from ``/proc/net/tcp`` and the workers' file descriptors."""
        inodes: dict[str, int] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], fields[9]
                    if int(local.rsplit(":", 1)[1], 16) != self.port:
                        continue
                    client_port = int(remote.rsplit(":", 1)[1], 16)
                    if client_port in client_ports:
                        inodes[f"socket:[{inode}]"] = client_port
        owners: dict[int, int] = {}
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        client_port = inodes.get(os.readlink(fd.path))
                        if client_port is not None:
                            owners[client_port] = pid
        return owners

    @staticmethod
    def _is_helper(proc: str) -> bool:
        """multiprocessing's resource tracker: in the group, but not a worker."""
        try:
            return b"resource_tracker" in Path(proc, "cmdline").read_bytes()
        except OSError:
            return True

    def worker_split(self, before: dict[str, float], after: dict[str, float]) -> list[float]:
        """Each worker's share of the server's CPU between two snapshots, busiest first (the
        supervisor is left out when there are workers)."""
        used = {
            key: after[key] - before.get(key, 0.0)
            for key in after
            if key.startswith("pid:") and (key != f"pid:{self.pgid}" or len(after) == 4)
        }
        total = sum(used.values())
        return sorted((v / total for v in used.values()), reverse=True) if total else []

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after 15 s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, self.stop_signal)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                err.print("[yellow]the server did not stop within 15 s: SIGKILL[/]")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)  # workers the leader left behind, if any
        self.process.wait()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def tracebacks(self) -> int:
        """Exceptions the server logged (a chained exception counts once)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        chained = text.count("\nThe above exception was the direct cause") + text.count(
            "\nDuring handling of the above exception"
        )
        return text.count("Traceback (most recent call last)") - chained


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="promoguard-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database at ``url``, dropped afterwards; yields the URL to use."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _review(client: httpx.Client, campaign_id: str, approvers: list[ApiKey]) -> None:
    """Submit version 1 (acknowledging every lint warning) and approve it for each department."""
    base = f"/v1/campaigns/{campaign_id}/versions/1"
    findings = client.get(f"{base}/lint").json()["findings"]
    acks = {f["code"]: "benchmark seed" for f in findings}
    submitted = client.post(f"{base}/submit", json={"acknowledgements": acks})
    if submitted.status_code != 200:
        raise RuntimeError(f"submitting {campaign_id}: {submitted.status_code} {submitted.text}")
    for key in approvers:
        auth = PromoguardAuth(key.key_id, key.secret)
        decided = client.post(f"{base}/approvals", json={"decision": "approve"}, auth=auth)
        if decided.status_code != 200:
            raise RuntimeError(f"approving {campaign_id}: {decided.status_code} {decided.text}")


def seed(base: str, specs: list[dict[str, Any]], operator: ApiKey, approvers: list[ApiKey]) -> int:
    """Create every campaign, take it through review and make it live through the API, each
    request signed with the operator's (or an approver's) key; the rules stamp that results."""
    auth = PromoguardAuth(operator.key_id, operator.secret)
    with httpx.Client(base_url=base, timeout=30.0, auth=auth) as client:
        for spec in specs:
            created = client.post("/v1/campaigns", json={"spec": spec})
            if created.status_code != 201:
                raise RuntimeError(f"creating {spec['id']}: {created.status_code} {created.text}")
            _review(client, spec["id"], approvers)
            live = client.post(f"/v1/campaigns/{spec['id']}/activate", json={})
            if live.status_code != 200:
                raise RuntimeError(f"activating {spec['id']}: {live.status_code} {live.text}")
    return len(specs)  # the stamp starts at 0 and every activation bumps it once


# -- the load generator ----------------------------------------------------------------------


class ProtocolError(Exception):
    """The server answered something this small client does not read."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, one request at a time, Content-Length bodies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: Any = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head: tuple[int, int, int, bool] | None = None  # header end, status, length, close
        self._answered = 0
        self._last_status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment] (uvloop's are not subclasses)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                ConnectionError(
                    f"the server closed the connection ({exc!r}) after {self._answered} "
                    f"response(s) on it, the last one HTTP {self._last_status}"
                )
            )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            done = self._response()
        except (ProtocolError, ValueError, IndexError) as exc:
            waiter.set_exception(ProtocolError(str(exc)))
            self.close()
            return
        if done is not None:
            self._waiter = None
            waiter.set_result(done)

    def _response(self) -> tuple[int, bytes] | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            status_line, *header_lines = self._buffer[:end].decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            length, close = -1, False
            for line in header_lines:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection":
                    close = value.strip().lower() == "close"
                elif name == "transfer-encoding":
                    raise ProtocolError(f"transfer-encoding {value.strip()} is not read here")
            if length < 0:
                raise ProtocolError("a response without Content-Length")
            self._head = (end + 4, status, length, close)
        start, status, length, close = self._head
        if len(self._buffer) < start + length:
            return None
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        self._head = None
        self._answered += 1
        self._last_status = status
        if close:
            self.close()
        return status, body

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self.closed or self._transport is None:
            raise ConnectionError("the connection is closed")
        self._waiter = self._loop.create_future()
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class RawSlot:
    """One keep-alive connection for one in-flight request at a time; it reconnects when the
    server has closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._authority = f"{host}:{port}"
        self._conn: _Connection | None = None

    async def connect(self) -> None:
        if self._conn is not None:
            self._conn.close()
        loop = asyncio.get_running_loop()
        _, self._conn = await loop.create_connection(
            lambda: _Connection(loop), self.host, self.port
        )
        sock = self._conn._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def local_port(self) -> int | None:
        if self._conn is None or self._conn._transport is None:
            return None
        port: int = self._conn._transport.get_extra_info("sockname")[1]
        return port

    async def send(self, path: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
        if self._conn is None or self._conn.closed:
            await self.connect()
        assert self._conn is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._authority}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        )
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await self._conn.send(head.encode() + body)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class RawClient:
    """HTTP/1.1 on asyncio directly: one :class:`RawSlot` per request in flight."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def slot(self) -> RawSlot:
        made = RawSlot(self.host, self.port)
        await made.connect()
        return made

    async def close(self) -> None:
        return None


class HttpxSlot:
    """A request slot on the shared ``httpx.AsyncClient`` (which pools the connections)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, path: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
        response = await self._client.post(
            path, content=body, headers={"Content-Type": "application/json", **dict(headers)}
        )
        return response.status_code, response.content

    def local_port(self) -> int | None:
        return None

    def close(self) -> None:
        return None


class HttpxClient:
    """The same through httpx, for comparison."""

    def __init__(self, base: str, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.AsyncClient(base_url=base, limits=limits, timeout=REQUEST_TIMEOUT)

    async def slot(self) -> HttpxSlot:
        return HttpxSlot(self.client)

    async def close(self) -> None:
        await self.client.aclose()


Client = RawClient | HttpxClient
Slot = RawSlot | HttpxSlot


@dataclass
class PhaseResult:
    backend: str
    phase: str
    mode: str = "signed"
    """The server's and client's authentication: ``unsigned`` (bearer) or ``signed``."""
    round: int = 1
    """Which of ``--rounds`` (0: several pooled)."""
    elapsed: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    exhausted: bool = False
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    postgres_cpu: float = 0.0
    machine_cpu: float = 0.0
    worker_split: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    presigned: int = 0
    """Requests signed before the phase started."""
    live_signed: int = 0
    """Requests of the phase signed as they were sent (the presigned ones ran out or aged)."""
    sign_us: float = 0.0
    """Client CPU to sign one request before the phase (µs)."""

    @property
    def server_ms_per_request(self) -> float:
        """Server CPU per completed request: steadier than req/s when the machine is shared."""
        done = len(self.latencies_ns)
        return self.server_cpu / done * 1e3 if done else float("nan")

    @classmethod
    def pooled(cls, results: list[PhaseResult]) -> PhaseResult:
        """Several rounds of one phase as one: requests, time, latencies and CPU added up."""
        if len(results) == 1:
            return results[0]
        first = results[0]
        merged = cls(first.backend, first.phase, first.mode, 0)
        for r in results:
            merged.elapsed += r.elapsed
            merged.latencies_ns += r.latencies_ns
            merged.ok += r.ok
            for kind, n in r.errors.items():
                merged.errors[kind] = merged.errors.get(kind, 0) + n
            merged.samples += r.samples[: ERROR_SAMPLES - len(merged.samples)]
            merged.exhausted |= r.exhausted
            merged.server_cpu += r.server_cpu
            merged.client_cpu += r.client_cpu
            merged.postgres_cpu += r.postgres_cpu
            merged.machine_cpu += r.machine_cpu
            merged.presigned += r.presigned
            merged.live_signed += r.live_signed
        merged.connections, merged.worker_split = first.connections, first.worker_split
        merged.sign_us = sum(r.sign_us for r in results) / len(results)
        return merged

    @property
    def client_ms_per_request(self) -> float:
        """The load generator's CPU per completed request (signing done before the phase not
        included: see :attr:`sign_us`)."""
        done = len(self.latencies_ns)
        return self.client_cpu / done * 1e3 if done else float("nan")

    @property
    def other_cpu(self) -> float:
        """Machine CPU neither the server, the load generator nor PostgreSQL used."""
        used = self.server_cpu + self.client_cpu + self.postgres_cpu
        return max(0.0, self.machine_cpu - used)

    def error(self, kind: str, detail: str) -> None:
        seen = self.errors.get(kind, 0)
        self.errors[kind] = seen + 1
        if seen < ERROR_SAMPLES:  # the first few of each kind
            self.samples.append(f"{kind}: {detail[:600]}")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1e6

    def met(self) -> bool | None:
        target = TARGETS.get(self.phase)
        if target is None:
            return None
        rps, p99 = target
        return self.error_count == 0 and self.rps >= rps and self.percentile_ms(0.99) <= p99


async def drive(
    slots: list[Slot],
    items: Iterator[Item],
    *,
    duration: float,
    result: PhaseResult,
    check: Callable[[bytes], str | None],
) -> PhaseResult:
    """Keep one request in flight per slot until ``duration`` passes or ``items`` run out.

    ``check`` reads a 2xx body and returns an error description, or None when it is right.
    """
    clock = time.perf_counter_ns
    deadline = clock() + int(duration * 1e9)
    latencies = result.latencies_ns

    async def run(slot: Slot) -> None:
        try:
            while clock() < deadline:
                item = next(items, None)
                if item is None:
                    result.exhausted = True
                    return
                start = clock()
                try:
                    status, body = await slot.send(*item)
                except (OSError, ProtocolError, httpx.HTTPError) as exc:
                    latencies.append(clock() - start)
                    kind = "timeout" if isinstance(exc, TimeoutError) else "transport"
                    result.error(kind, repr(exc))
                    continue
                latencies.append(clock() - start)
                if not 200 <= status < 300:
                    result.error(f"HTTP {status}", body.decode(errors="replace"))
                    continue
                try:
                    problem = check(body)
                except (ValueError, KeyError, TypeError) as exc:  # not the JSON expected
                    problem = f"{exc!r} reading {body[:300]!r}"
                if problem is None:
                    result.ok += 1
                else:
                    result.error("wrong answer", problem)
        finally:
            slot.close()

    cpu = time.process_time()
    start = clock()
    await asyncio.gather(*(run(slot) for slot in slots))
    result.elapsed = (clock() - start) / 1e9
    result.client_cpu = time.process_time() - cpu
    return result


async def open_slots(
    client: Client, server: Server, count: int, *, balance: bool
) -> tuple[list[Slot], list[int]]:
    """Open ``count`` slots; with ``balance``, reconnect until every worker holds as many
    connections as the others (give or take one). Returns the slots and the connections each
    worker holds (empty when that cannot be told: the httpx client, no ``/proc``).

    uvicorn's workers share one listening socket, and whichever is awake first accepts every
    connection that is waiting: a burst of connects often lands on one worker, which then serves
    all the load while the other idles. Balancing measures what the workers can do together;
    ``--unbalanced`` shows what a burst of clients gets.
    """
    slots = []
    for _ in range(count):
        slots.append(await client.slot())
        if balance:
            await asyncio.sleep(CONNECT_PAUSE)
    if not isinstance(client, RawClient):
        return slots, []
    workers = server.worker_pids()
    per: dict[int, list[Slot]] = {}
    for _ in range(count * 20):
        ports = {slot.local_port() for slot in slots}
        owners = server.connection_owners({p for p in ports if p is not None})
        if len(owners) < len(slots):  # not accepted by a worker yet
            await asyncio.sleep(0.01)
            continue
        per = {pid: [s for s in slots if owners.get(s.local_port() or 0) == pid] for pid in workers}
        sizes = [len(held) for held in per.values()]
        if not balance or len(workers) < 2 or max(sizes) - min(sizes) <= 1:
            break
        busiest = max(per, key=lambda pid: len(per[pid]))
        await per[busiest][0].connect()  # another worker may accept the new connection
        await asyncio.sleep(CONNECT_PAUSE)
    return slots, sorted((len(held) for held in per.values()), reverse=True)


def quote_items(bodies: list[bytes]) -> Iterator[Item]:
    return (("/v1/quotes", body, ()) for body in itertools.cycle(bodies))


def order_items(tokens: Iterable[str]) -> Iterator[Item]:
    for token in tokens:
        body = orjson.dumps({"quote_token": token})
        yield "/v1/orders", body, (("Idempotency-Key", uuid.uuid4().hex),)


class Credentials:
    """How the storefront authenticates its requests: ``unsigned`` sends
    ``Authorization: Bearer <key id>.<secret>``, ``signed`` the five ``X-Promoguard-*`` headers
    of :func:`promoguard.security.signing.sign` with a fresh nonce each."""

    def __init__(self, key: ApiKey, mode: str) -> None:
        self.key = key
        self.mode = mode
        self._bearer: Headers = (("Authorization", f"Bearer {key.key_id}.{key.secret}"),)

    @property
    def signed(self) -> bool:
        return self.mode == "signed"

    def apply(self, items: Iterable[Item]) -> Iterator[Item]:
        """The same requests with their credentials (signed as they are drawn)."""
        if not self.signed:
            for path, body, headers in items:
                yield path, body, headers + self._bearer
            return
        key_id, secret = self.key.key_id, self.key.secret
        for path, body, headers in items:
            signed = sign(key_id=key_id, secret=secret, method="POST", path=path, body=body)
            yield path, body, headers + tuple(signed.items())


class Presigned:
    """Requests signed before a timed phase, then (if they run out or grow older than
    :data:`PRESIGN_MAX_AGE`) the rest of ``live``, signed as they are sent."""

    def __init__(self, ready: list[Item], live: Iterator[Item], sign_us: float) -> None:
        self._ready = iter(ready)
        self._live = live
        self._made = time.time()
        self.count = len(ready)
        self.sign_us = sign_us
        self.live_signed = 0

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        if time.time() - self._made < PRESIGN_MAX_AGE:
            ready = next(self._ready, None)
            if ready is not None:
                return ready
        item = next(self._live)
        self.live_signed += 1
        return item


def presign(credentials: Credentials, items: Iterable[Item], count: int) -> Iterator[Item]:
    """Sign the first ``count`` of ``items`` now (bearer requests need nothing done)."""
    live = credentials.apply(items)
    if not credentials.signed:
        return live
    cpu = time.process_time()
    ready = list(itertools.islice(live, count))
    spent = time.process_time() - cpu
    gc.freeze()  # the client's collections need not walk them while timed
    return Presigned(ready, live, spent / len(ready) * 1e6 if ready else 0.0)


def quote_check(stamp: int, tokens: list[str] | None) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        data = orjson.loads(body)
        if data.get("rules_stamp") != stamp:
            return f"priced under rules stamp {data.get('rules_stamp')}, not {stamp}"
        if tokens is not None:
            tokens.append(data["quote_token"])
        return None

    return check


def order_check(body: bytes) -> str | None:
    data = orjson.loads(body)
    if not isinstance(data.get("id"), str) or data.get("status") != "created":
        return f"not a created order: {body[:300]!r}"
    return None


# -- one backend -----------------------------------------------------------------------------


@dataclass
class BackendRun:
    backend: str
    startup_s: float = 0.0
    seeded: int = 0
    phases: list[PhaseResult] = field(default_factory=list)
    tracebacks: int = 0
    logs: list[tuple[str, int, str]] = field(default_factory=list)
    """Per server: its mode, the tracebacks in its log and the log's last lines."""
    failure: str | None = None


async def _exercise(  # noqa: PLR0917 (one backend's one server)
    server: Server,
    args: argparse.Namespace,
    run: BackendRun,
    bodies: list[bytes],
    credentials: Credentials,
    orders: bool,
    round_: int,
) -> None:
    client: Client = (
        RawClient("127.0.0.1", server.port)
        if args.client == "raw"
        else HttpxClient(server.base, max(args.concurrency, args.order_concurrency))
    )
    stamp = run.seeded
    backend = run.backend
    mode = credentials.mode
    name = mode if args.rounds == 1 else f"{mode}-{round_}"

    async def phase(
        phase_name: str,
        items: Iterator[Item],
        check: Callable[[bytes], str | None],
        duration: float,
        *,
        measured: bool = True,
        concurrency: int = args.concurrency,
    ) -> PhaseResult:
        label = phase_name if measured else f"({phase_name})"
        err.print(
            f"  {backend}/{name}: {label} for up to {duration:g} s at {concurrency} in flight"
        )
        result = PhaseResult(backend, phase_name, mode, round_)
        if isinstance(items, Presigned):
            result.presigned, result.sign_us = items.count, items.sign_us
        slots, result.connections = await open_slots(
            client, server, concurrency, balance=not args.unbalanced
        )
        gc.collect()
        cpu = server.cpu_seconds()
        await drive(slots, items, duration=duration, result=result, check=check)
        after = server.cpu_seconds()
        result.server_cpu = after["server"] - cpu["server"]
        result.postgres_cpu = after["postgres"] - cpu["postgres"]
        result.machine_cpu = after["machine"] - cpu["machine"]
        result.worker_split = server.worker_split(cpu, after)
        if isinstance(items, Presigned):
            result.live_signed = items.live_signed
        if measured:
            run.phases.append(result)
        elif result.error_count:
            run.phases.append(result)  # errors while warming up are reported too
        return result

    def timed(items: Iterable[Item], count: int) -> Iterator[Item]:
        """``items`` for a timed phase: the first ``count`` signed now, not while timed."""
        made = presign(credentials, items, count)
        if isinstance(made, Presigned):
            err.print(
                f"  {backend}/{name}: signed {made.count:,} requests before the phase "
                f"({made.sign_us:.1f} µs of client CPU each)"
            )
        return made

    # Warm-up: every worker loads the live rules and compiles its statements; the stamp check
    # proves every worker prices under all the seeded campaigns.
    await asyncio.sleep(1.0)  # > rules_refresh_seconds: each worker sees the final stamp
    warm = credentials.apply(quote_items(bodies))
    warmed = await phase(
        "quote warm-up", warm, quote_check(stamp, None), args.warmup, measured=False
    )

    tokens: list[str] = []
    # Enough for twice the warm-up's pace (itself signing as it went), within --presign-rate.
    ahead = int(args.duration * min(args.presign_rate, 2 * warmed.rps + 500))
    quotes = timed(quote_items(bodies), ahead)
    await phase("quotes", quotes, quote_check(stamp, tokens), args.duration)

    if orders:
        wanted = int(args.duration * args.order_token_rate) + args.order_warmup
        if len(tokens) < wanted:
            err.print(
                f"  {backend}/{name}: fetching {wanted - len(tokens):,} more quote tokens "
                "(not timed)"
            )
            extra = credentials.apply(itertools.islice(quote_items(bodies), wanted - len(tokens)))
            await phase("token top-up", extra, quote_check(stamp, tokens), 600.0, measured=False)

        warm_tokens, rest = tokens[: args.order_warmup], tokens[args.order_warmup :]
        warm = credentials.apply(order_items(warm_tokens))
        await phase(
            "order warm-up",
            warm,
            order_check,
            600.0,
            measured=False,
            concurrency=args.order_concurrency,
        )
        await phase(
            "orders",
            timed(order_items(rest), len(rest)),
            order_check,
            args.duration,
            concurrency=args.order_concurrency,
        )
    await client.close()


def _run_loop(coro: Awaitable[None]) -> None:
    try:
        import uvloop  # noqa: PLC0415 (optional)
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def run_backend(
    run: BackendRun,
    url: str,
    args: argparse.Namespace,
    specs: list[dict[str, Any]],
    bodies: list[bytes],
) -> None:
    """Create the keys, then serve, seed and measure one backend in each authentication mode
    into ``run`` (what was measured stays if it fails)."""
    backend = run.backend
    workers = 1 if args.profile else args.workers
    extra = dict(pair.split("=", 1) for pair in args.server_env)
    operator, storefront = create_key(url, "operator", extra), create_key(url, "storefront", extra)
    approvers = [
        create_key(url, "approver", extra, "--department", department)
        for department in ("marketing", "engineering", "product")
    ]
    err.print(
        f"{backend}: created keys {operator.key_id} (operator, seeds) and {storefront.key_id} "
        "(storefront, quotes and orders)"
    )
    modes = AUTH_MODES if args.auth == "both" else (args.auth,)
    servers = [(r, mode) for r in range(1, args.rounds + 1) for mode in modes]
    for n, (round_, mode) in enumerate(servers):
        name = mode if args.rounds == 1 else f"{mode}-{round_}"
        profile = Path(f"{args.profile}-{backend}-{name}.prof") if args.profile else None
        with tempfile.TemporaryDirectory(prefix="promoguard-bench-log-") as tmp:
            env = promoguard_env(url, mode, own_nonce_file(tmp) | extra)
            server = Server(env, workers, Path(tmp) / "server.log", profile)
            try:
                startup = server.wait_ready()
                run.startup_s = run.startup_s or startup
                err.print(
                    f"{backend}/{name}: serving on {server.base} with {workers} worker(s), "
                    f"ready in {startup:.1f} s"
                )
                if not run.seeded:
                    run.seeded = seed(server.base, specs, operator, approvers)
                    err.print(f"  {backend}: seeded {run.seeded} live campaigns through the API")
                orders = not args.skip_orders and n == len(servers) - 1
                credentials = Credentials(storefront, mode)
                _run_loop(_exercise(server, args, run, bodies, credentials, orders, round_))
            finally:
                server.stop()
                tracebacks = server.tracebacks()
                run.tracebacks += tracebacks
                run.logs.append((name, tracebacks, server.tail(25)))
        if profile is not None and profile.exists():
            _print_profile(profile)


def _print_profile(path: Path) -> None:
    err.rule(f"cProfile of the server (one worker): {path}")
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.strip_dirs().sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)


# -- the report ------------------------------------------------------------------------------


def report(runs: list[BackendRun], args: argparse.Namespace) -> dict[str, Any]:
    console = Console(width=None if sys.stdout.isatty() else 200)
    workers = 1 if args.profile else args.workers
    table = Table(
        title=f"promoguard HTTP API: {workers} worker(s), {args.concurrency} in flight "
        f"({args.order_concurrency} for orders), "
        f"{args.duration:g} s per phase, {args.client} client, {os.cpu_count()} CPUs "
        f"({platform.python_implementation()} {platform.python_version()})",
        caption="targets: quotes ≥ 2,000 ok req/s with p99 ≤ 25 ms; orders ≥ 500 ok req/s with "
        "p99 ≤ 50 ms; and no errors. auth: bearer = a server with no signing required and no "
        "rate limits, the storefront key as a bearer token; signed = the default settings "
        "(signatures, nonces, rate limits), every request signed (a timed phase's before it "
        "starts). server ms/req: the server's CPU time per request. conns: connections each "
        "worker held; CPU split: each worker's share of the server's CPU. server / client / "
        f"postgres / other: CPU cores busy (of {os.cpu_count()}) in the server's processes, this "
        "load generator, every postgres process, and anything else on the machine.",
    )
    columns = (
        "backend",
        "phase",
        "auth",
        "requests",
        "ok req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
    )
    cpu = ("server ms/req", "server", "conns", "CPU split %", "client", "postgres", "other")
    for column in (*columns, "errors", *cpu, "target"):
        left = column in ("backend", "phase", "auth")
        table.add_column(column, justify="left" if left else "right")
    summary: dict[str, Any] = {}
    main_mode = "signed" if args.auth == "both" else args.auth
    for run in runs:
        suffix = "" if run.backend == "sqlite" else "_pg"
        groups = _groups(run)
        pooled = [PhaseResult.pooled(group) for group in groups.values() if len(group) > 1]
        for r in run.phases + pooled:
            met = r.met()
            verdict = "-" if met is None else "[green]met[/]" if met else "[red]missed[/]"
            notes = " [yellow](ran out of tokens)[/]" if r.exhausted and r.phase == "orders" else ""
            if r.live_signed:
                notes += f" [yellow]({r.live_signed:,} signed live)[/]"
            if args.rounds > 1:
                notes = (f" #{r.round}" if r.round else " [bold](pooled)[/]") + notes
            table.add_row(
                run.backend,
                r.phase + notes,
                AUTH_LABELS[r.mode],
                f"{len(r.latencies_ns):,}",
                f"{r.rps:,.0f}",
                f"{r.percentile_ms(0.50):.1f}",
                f"{r.percentile_ms(0.90):.1f}",
                f"{r.percentile_ms(0.99):.1f}",
                f"{r.percentile_ms(1.0):.1f}",
                f"[red]{r.error_count:,}[/]" if r.error_count else "0",
                f"{r.server_ms_per_request:.2f}",
                f"{r.server_cpu / r.elapsed:.2f}" if r.elapsed else "-",
                "/".join(map(str, r.connections)) or "-",
                "/".join(f"{share:.0%}".rstrip("%") for share in r.worker_split) or "-",
                f"{r.client_cpu / r.elapsed:.2f}" if r.elapsed else "-",
                f"{r.postgres_cpu / r.elapsed:.2f}" if r.elapsed else "-",
                f"{r.other_cpu / r.elapsed:.2f}" if r.elapsed else "-",
                verdict,
            )
        for (phase, mode), group in groups.items():
            r = PhaseResult.pooled(group)
            if phase not in TARGETS:
                continue
            met = r.met()
            if phase == "quotes":
                summary |= {
                    f"quotes_rps_{r.mode}{suffix}": round(r.rps, 1),
                    f"quotes_p50_ms_{r.mode}{suffix}": round(r.percentile_ms(0.50), 2),
                    f"quotes_p99_ms_{r.mode}{suffix}": round(r.percentile_ms(0.99), 2),
                    f"quotes_errors_{r.mode}{suffix}": r.error_count,
                    f"quotes_server_cpu_ms_{r.mode}{suffix}": round(r.server_ms_per_request, 3),
                    f"quotes_client_cpu_ms_{r.mode}{suffix}": round(r.client_ms_per_request, 3),
                }
            if mode == main_mode:
                summary |= {
                    f"{r.phase}_rps{suffix}": round(r.rps, 1),
                    f"{r.phase}_p50_ms{suffix}": round(r.percentile_ms(0.50), 2),
                    f"{r.phase}_p99_ms{suffix}": round(r.percentile_ms(0.99), 2),
                    f"{r.phase}_errors{suffix}": r.error_count,
                    f"{r.phase}_server_cpu_ms{suffix}": round(r.server_ms_per_request, 3),
                    f"{r.phase}_connections_per_worker{suffix}": r.connections,
                    f"{r.phase}_target_met{suffix}": met,
                }
            if r.presigned:
                summary[f"{r.phase}_presigned{suffix}"] = r.presigned
                summary[f"{r.phase}_signed_live{suffix}"] = r.live_signed
                summary[f"{r.phase}_client_sign_us{suffix}"] = round(r.sign_us, 1)
        summary |= _overhead(run, suffix)
        summary[f"server_tracebacks{suffix}"] = run.tracebacks
        if run.failure:
            summary[f"failure{suffix}"] = run.failure
    console.print(table)
    _print_overhead(console, runs)
    _print_problems(console, runs)
    summary |= {
        "workers": workers,
        "concurrency": args.concurrency,
        "order_concurrency": args.order_concurrency,
        "duration_s": args.duration,
        "client": args.client,
        "auth": args.auth,
        "rounds": args.rounds,
        "server_env": args.server_env,
        "orders_auth": None if args.skip_orders else main_mode,
    }
    return summary


def _groups(run: BackendRun) -> dict[tuple[str, str], list[PhaseResult]]:
    """The run's phases by (phase, mode): one per round."""
    groups: dict[tuple[str, str], list[PhaseResult]] = {}
    for r in run.phases:
        groups.setdefault((r.phase, r.mode), []).append(r)
    return groups


def _quote_phases(run: BackendRun) -> dict[str, PhaseResult]:
    """The quote phase of each mode, its rounds pooled."""
    return {
        mode: PhaseResult.pooled(group)
        for (phase, mode), group in _groups(run).items()
        if phase == "quotes"
    }


def _overhead(run: BackendRun, suffix: str) -> dict[str, Any]:
    """What signing and rate limits cost the quote path, when both modes were measured."""
    quotes = _quote_phases(run)
    unsigned, signed = quotes.get("unsigned"), quotes.get("signed")
    if unsigned is None or signed is None or not unsigned.rps:
        return {}
    overhead = (1 - signed.rps / unsigned.rps) * 100
    cpu = (signed.server_ms_per_request / unsigned.server_ms_per_request - 1) * 100
    clean = unsigned.error_count == 0 and signed.error_count == 0
    return {
        f"signing_overhead_pct{suffix}": round(overhead, 1),
        f"signing_overhead_cpu_pct{suffix}": round(cpu, 1),
        f"signing_overhead_target_met{suffix}": clean and overhead <= OVERHEAD_TARGET_PCT,
    }


def _print_overhead(console: Console, runs: list[BackendRun]) -> None:
    table = Table(
        title="signed quotes against unsigned (bearer) quotes",
        caption=f"overhead = 1 - signed req/s / unsigned req/s (target ≤ {OVERHEAD_TARGET_PCT:g} "
        "%, and no errors); server CPU: the increase of the server's CPU time per request; "
        "client sign: client CPU to sign one request, spent before the timed phase.",
    )
    for column in (
        "backend",
        "unsigned req/s",
        "signed req/s",
        "overhead %",
        "unsigned p99 ms",
        "signed p99 ms",
        "unsigned server ms/req",
        "signed server ms/req",
        "server CPU +%",
        "client sign µs",
        "target",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    shown = False
    for run in runs:
        quotes = _quote_phases(run)
        unsigned, signed = quotes.get("unsigned"), quotes.get("signed")
        if unsigned is None or signed is None:
            continue
        figures = _overhead(run, "")
        if not figures:
            continue
        shown = True
        met = figures["signing_overhead_target_met"]
        table.add_row(
            run.backend,
            f"{unsigned.rps:,.0f}",
            f"{signed.rps:,.0f}",
            f"{figures['signing_overhead_pct']:.1f}",
            f"{unsigned.percentile_ms(0.99):.1f}",
            f"{signed.percentile_ms(0.99):.1f}",
            f"{unsigned.server_ms_per_request:.3f}",
            f"{signed.server_ms_per_request:.3f}",
            f"{figures['signing_overhead_cpu_pct']:.1f}",
            f"{signed.sign_us:.1f}",
            "[green]met[/]" if met else "[red]missed[/]",
        )
    if shown:
        console.print(table)


def _print_problems(console: Console, runs: list[BackendRun]) -> None:
    """Every error kind with the first few bodies; failures and the server log's tail."""
    for run in runs:
        for r in run.phases:
            if r.error_count:
                counts = ", ".join(f"{kind} x{n:,}" for kind, n in r.errors.items())
                console.print(
                    f"[red]{run.backend} {r.phase} ({AUTH_LABELS[r.mode]}): "
                    f"{r.error_count:,} error(s)[/] ({counts})"
                )
                for sample in r.samples:
                    console.print(f"  {sample}", markup=False)
        if run.failure:
            console.print(f"[red]{run.backend}: the run failed:[/] {escape(run.failure)}")
        if run.tracebacks:
            console.print(
                f"[red]{run.backend}: {run.tracebacks} traceback(s) in the server logs[/]"
            )
        for mode, tracebacks, tail in run.logs:
            if (tracebacks or run.failure) and tail:
                console.print(f"[bold]{run.backend}/{mode} server log, last lines:[/]")
                console.print(tail, markup=False)


def _env_pair(text: str) -> str:
    name, equals, _ = text.partition("=")
    if not equals or not name.startswith("PROMOGUARD_"):
        raise argparse.ArgumentTypeError(f"{text!r} is not PROMOGUARD_NAME=VALUE")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured phase")
    parser.add_argument("--concurrency", type=int, default=32, help="quote requests in flight")
    parser.add_argument(
        "--order-concurrency",
        type=int,
        default=16,
        help="orders in flight in the order phase (mean latency = in flight / throughput, so "
        "32 in flight at 500 orders/s is 64 ms before any work)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--auth",
        choices=("both", *AUTH_MODES),
        default="both",
        help="both: an unsigned (bearer, no rate limits) server for the quote baseline, then a "
        "signed one (default settings) for quotes and orders; or only one of them",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate the unsigned and signed servers this many times (a fresh server each "
        "time); the summary pools the rounds, which evens out a shared machine's noise",
    )
    parser.add_argument(
        "--skip-orders", action="store_true", help="measure quotes only (no order phase)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_env_pair,
        help="a setting for every server (and the key CLI), for experiments (repeat): e.g. "
        "PROMOGUARD_REDIS_URL=redis://127.0.0.1:6379/0, or PROMOGUARD_RATE_LIMITS='{}' with "
        "--auth signed; it overrides the bench's settings but the database and the secret",
    )
    parser.add_argument(
        "--presign-rate",
        type=float,
        default=5000.0,
        help="at most this many signed quote requests prepared per second of the phase before it "
        "starts (twice the warm-up's rate, plus 500, when less; any more needed are signed while "
        "timed, and counted)",
    )
    parser.add_argument(
        "--unbalanced",
        action="store_true",
        help="open every connection at once and keep them where they land (by default the bench "
        "reconnects until each worker holds its share)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of quotes first")
    parser.add_argument(
        "--order-warmup", type=int, default=200, help="orders placed before the timed phase"
    )
    parser.add_argument(
        "--order-token-rate",
        type=float,
        default=1200.0,
        help="quote tokens to hold per second of the order phase (the phase stops if they run out)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PROMOGUARD_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="PostgreSQL database; the bench works in a fresh schema it drops afterwards",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="run ONE worker under cProfile, write PREFIX-<backend>.prof and print the top",
    )
    args = parser.parse_args()

    # A SIGTERM to the bench unwinds like Ctrl-C, so the server group is always terminated.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    rng = random.Random(args.seed)
    items = catalogue(rng)
    specs = campaign_specs(items, rng)
    bodies = quote_bodies(items, specs, rng)
    gc.freeze()

    runs: list[BackendRun] = []
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        run = BackendRun(backend)
        runs.append(run)
        database = sqlite_database() if backend == "sqlite" else postgres_schema(args.pg_url)
        try:
            with database as url:
                run_backend(run, url, args, specs, bodies)
        except Exception as exc:  # report it with whatever was measured before
            err.print(f"[red]{backend} failed:[/] {escape(str(exc))}")
            run.failure = f"{type(exc).__name__}: {exc}"

    summary = report(runs, args)
    print(json.dumps(summary))
    if any(run.failure for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
