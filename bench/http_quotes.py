"""HTTP API speed: ``POST /v1/quotes`` and ``POST /v1/orders`` through ``promoguard serve``.

For each backend (SQLite in a temporary file; PostgreSQL in a fresh schema of the ``test``
database, created before and dropped after, so other users of that database never see it):

1. start ``promoguard serve --workers N`` (migrations, then uvicorn) in its own process group and
   poll ``/healthz`` until it answers;
2. seed a realistic set of live campaigns through the API (``POST /v1/campaigns`` then
   ``/activate``): a store-wide 每满 threshold, category thresholds, SKU special prices and a
   member price;
3. warm up, then drive ``POST /v1/quotes`` for ``--duration`` seconds with ``--concurrency``
   requests in flight, one keep-alive connection each, from this process (a separate process
   from the server's);
4. keep the quote tokens the quote phase got back (topping them up if there are too few), warm
   the order path up, then drive ``POST /v1/orders`` for ``--duration`` seconds, each order with
   its own fresh quote token and a unique ``Idempotency-Key``;
5. terminate the server's whole process group, whatever happened.

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
    python bench/http_quotes.py --concurrency 64 --workers 4
    python bench/http_quotes.py --profile /tmp/pg        # one worker under cProfile

The last line printed is one JSON object (``quotes_rps``, ``quotes_p99_ms``, ``orders_rps``,
``orders_p99_ms``, ... for SQLite; the same keys ending in ``_pg`` for PostgreSQL), for scripts.
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

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-0123456789abcdef"
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


def _server_command(port: int, workers: int, profile: Path | None) -> list[str]:
    script = Path(sys.executable).with_name("promoguard")
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if profile is not None:
        # One worker: uvicorn then serves in the main process, where cProfile is.
        return [sys.executable, "-m", "cProfile", "-o", str(profile), str(script), *serve]
    if script.exists():
        return [str(script), *serve]
    return [sys.executable, "-c", "from promoguard.cli import main; main()", *serve]


class Server:
    """``promoguard serve`` in its own process group; :meth:`stop` ends the whole group."""

    def __init__(self, database_url: str, workers: int, log: Path, profile: Path | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = os.environ | {
            "PROMOGUARD_DATABASE_URL": database_url,
            "PROMOGUARD_SECRET_KEY": SECRET,
            "PROMOGUARD_ENVIRONMENT": "production",
        }
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


def seed(base: str, specs: list[dict[str, Any]]) -> int:
    """Create and activate every campaign through the API; the rules stamp that results."""
    with httpx.Client(base_url=base, timeout=30.0, headers={"X-Actor": "bench"}) as client:
        for spec in specs:
            created = client.post("/v1/campaigns", json={"spec": spec})
            if created.status_code != 201:
                raise RuntimeError(f"creating {spec['id']}: {created.status_code} {created.text}")
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

    @property
    def server_ms_per_request(self) -> float:
        """Server CPU per completed request: steadier than req/s when the machine is shared."""
        done = len(self.latencies_ns)
        return self.server_cpu / done * 1e3 if done else float("nan")

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
    log_tail: str = ""
    failure: str | None = None


async def _exercise(
    server: Server, args: argparse.Namespace, run: BackendRun, bodies: list[bytes]
) -> None:
    client: Client = (
        RawClient("127.0.0.1", server.port)
        if args.client == "raw"
        else HttpxClient(server.base, args.concurrency)
    )
    stamp = run.seeded
    backend = run.backend

    async def phase(
        name: str,
        items: Iterator[Item],
        check: Callable[[bytes], str | None],
        duration: float,
        *,
        measured: bool = True,
    ) -> PhaseResult:
        label = name if measured else f"({name})"
        err.print(f"  {backend}: {label} for up to {duration:g} s at {args.concurrency} in flight")
        result = PhaseResult(backend, name)
        slots, result.connections = await open_slots(
            client, server, args.concurrency, balance=not args.unbalanced
        )
        gc.collect()
        cpu = server.cpu_seconds()
        await drive(slots, items, duration=duration, result=result, check=check)
        after = server.cpu_seconds()
        result.server_cpu = after["server"] - cpu["server"]
        result.postgres_cpu = after["postgres"] - cpu["postgres"]
        result.machine_cpu = after["machine"] - cpu["machine"]
        result.worker_split = server.worker_split(cpu, after)
        if measured:
            run.phases.append(result)
        elif result.error_count:
            run.phases.append(result)  # errors while warming up are reported too
        return result

    # Warm-up: every worker loads the live rules and compiles its statements; the stamp check
    # proves every worker prices under all the seeded campaigns.
    await asyncio.sleep(1.0)  # > rules_refresh_seconds: each worker sees the final stamp
    await phase(
        "quote warm-up", quote_items(bodies), quote_check(stamp, None), args.warmup, measured=False
    )

    tokens: list[str] = []
    await phase("quotes", quote_items(bodies), quote_check(stamp, tokens), args.duration)

    wanted = int(args.duration * args.order_token_rate) + args.order_warmup
    if len(tokens) < wanted:
        err.print(f"  {backend}: fetching {wanted - len(tokens):,} more quote tokens (not timed)")
        extra = itertools.islice(quote_items(bodies), wanted - len(tokens))
        await phase("token top-up", extra, quote_check(stamp, tokens), 600.0, measured=False)

    warm, rest = tokens[: args.order_warmup], tokens[args.order_warmup :]
    await phase("order warm-up", order_items(warm), order_check, 600.0, measured=False)
    await phase("orders", order_items(rest), order_check, args.duration)
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
    """Serve, seed and measure one backend into ``run`` (what was measured stays if it fails)."""
    backend = run.backend
    workers = 1 if args.profile else args.workers
    profile = Path(f"{args.profile}-{backend}.prof") if args.profile else None
    with tempfile.TemporaryDirectory(prefix="promoguard-bench-log-") as tmp:
        server = Server(url, workers, Path(tmp) / "server.log", profile)
        try:
            run.startup_s = server.wait_ready()
            err.print(
                f"{backend}: serving on {server.base} with {workers} worker(s), "
                f"ready in {run.startup_s:.1f} s"
            )
            run.seeded = seed(server.base, specs)
            err.print(f"  {backend}: seeded {run.seeded} live campaigns through the API")
            _run_loop(_exercise(server, args, run, bodies))
        finally:
            server.stop()
            run.tracebacks = server.tracebacks()
            run.log_tail = server.tail(25)
    if profile is not None and profile.exists():
        _print_profile(profile)


def _print_profile(path: Path) -> None:
    err.rule(f"cProfile of the server (one worker): {path}")
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.strip_dirs().sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)


# -- the report ------------------------------------------------------------------------------


def report(runs: list[BackendRun], args: argparse.Namespace) -> dict[str, Any]:
    console = Console(width=None if sys.stdout.isatty() else 180)
    workers = 1 if args.profile else args.workers
    table = Table(
        title=f"promoguard HTTP API: {workers} worker(s), {args.concurrency} in flight, "
        f"{args.duration:g} s per phase, {args.client} client, {os.cpu_count()} CPUs "
        f"({platform.python_implementation()} {platform.python_version()})",
        caption="targets: quotes ≥ 2,000 ok req/s with p99 ≤ 25 ms; orders ≥ 500 ok req/s with "
        "p99 ≤ 50 ms; and no errors. server ms/req: the server's CPU time per request. conns: "
        "connections each worker held; CPU split: each worker's share of the server's CPU. "
        "server / client / postgres / other: CPU cores busy (of "
        f"{os.cpu_count()}) in the server's processes, this load generator, every postgres "
        "process, and anything else on the machine.",
    )
    columns = ("backend", "phase", "requests", "ok req/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    cpu = ("server ms/req", "server", "conns", "CPU split %", "client", "postgres", "other")
    for column in (*columns, "errors", *cpu, "target"):
        table.add_column(column, justify="left" if column in ("backend", "phase") else "right")
    summary: dict[str, Any] = {}
    for run in runs:
        suffix = "" if run.backend == "sqlite" else "_pg"
        for r in run.phases:
            target = TARGETS.get(r.phase)
            met = r.met()
            verdict = "-" if met is None else "[green]met[/]" if met else "[red]missed[/]"
            table.add_row(
                run.backend,
                r.phase
                + (
                    " [yellow](ran out of tokens)[/]" if r.exhausted and r.phase == "orders" else ""
                ),
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
            if target is not None:
                summary[f"{r.phase}_rps{suffix}"] = round(r.rps, 1)
                summary[f"{r.phase}_p50_ms{suffix}"] = round(r.percentile_ms(0.50), 2)
                summary[f"{r.phase}_p99_ms{suffix}"] = round(r.percentile_ms(0.99), 2)
                summary[f"{r.phase}_errors{suffix}"] = r.error_count
                summary[f"{r.phase}_server_cpu_ms{suffix}"] = round(r.server_ms_per_request, 3)
                summary[f"{r.phase}_connections_per_worker{suffix}"] = r.connections
                summary[f"{r.phase}_target_met{suffix}"] = met
        summary[f"server_tracebacks{suffix}"] = run.tracebacks
        if run.failure:
            summary[f"failure{suffix}"] = run.failure
    console.print(table)
    _print_problems(console, runs)
    summary |= {
        "workers": workers,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "client": args.client,
    }
    return summary


def _print_problems(console: Console, runs: list[BackendRun]) -> None:
    """Every error kind with the first few bodies; failures and the server log's tail."""
    for run in runs:
        for r in run.phases:
            if r.error_count:
                counts = ", ".join(f"{kind} x{n:,}" for kind, n in r.errors.items())
                console.print(
                    f"[red]{run.backend} {r.phase}: {r.error_count:,} error(s)[/] ({counts})"
                )
                for sample in r.samples:
                    console.print(f"  {sample}", markup=False)
        if run.failure:
            console.print(f"[red]{run.backend}: the run failed:[/] {escape(run.failure)}")
        if run.tracebacks:
            console.print(f"[red]{run.backend}: {run.tracebacks} traceback(s) in the server log[/]")
        if (run.tracebacks or run.failure) and run.log_tail:
            console.print(run.log_tail, markup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured phase")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
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
