"""Flash-sale reservations under contention: attempts/s and p99 per backend, beside the raw store.

Several processes (``--processes``, each with its own event loop and connections, and
``--concurrency`` asyncio tasks) fire reservation attempts at ONE flash sale, the way a checkout
does: each attempt is a distinct customer taking one unit of ``stock:<rule>`` (limit: the stock)
and one of ``units:<rule>:<customer>`` (limit: 1 per customer), all or nothing, through the real
counters:

* ``redis``: :meth:`RedisCounters.take` (one Lua script checks both keys, raises both and writes
  the journal entry), then :meth:`RedisCounters.committed` (drops the entry) when it was taken;
* ``pg``: :meth:`SqlCounters.take` (two conditional upserts) in its own ``db.write()``
  transaction, committed when taken, rolled back when refused. The ``counters`` table lives in a
  fresh schema of the database, built by the shipped migrations and dropped afterwards.

Only the counters are measured: the rest of a checkout (pricing, the order and reservation rows,
the ``undo`` a refused order runs) is not. The stock is half the attempts (``--stock-share``), so
every run has both phases of a flash sale: a selling phase, where attempts contend for the last
units, and a sold-out phase, where most traffic is refused. The table gives the latency of each
(``p99 taken``, ``p99 refused``) beside the overall p50 / p99.

Each backend is measured beside the raw speed of the same store, in the same run, with the same
processes, concurrency and number of attempts:

* redis raw: ``INCR`` of one key, in redis-py pipelines (no MULTI) of as many commands as the
  take script runs for a taken reservation (``GET`` and ``INCRBY`` per key, plus the journal's
  ``HSET``: 5), one pipeline per attempt;
* pg raw: ``UPDATE counters SET used = used + 1 WHERE key = %s AND used + 1 <= %s`` on a bare
  psycopg connection, in its own transaction per attempt, against a stock of the same size.

``ratio`` is raw attempts/s divided by ours (the target: at most 3 on Redis). Throughput is
attempts over wall time, from the moment every process is connected and warmed up (they and the
bench wait on a barrier) to the last attempt's end. Latency is per attempt, measured by the task
that made it. The machine is often shared, so the table also gives the CPU each attempt cost the
client processes (their own CPU time over the timed window) and the server (Redis: ``INFO cpu``;
PostgreSQL, when it runs on this machine: the postmaster and all its children; other clients of
either server count too); ``--rounds N`` measures N times, ours and raw in alternating order, and
the JSON gives the medians.

After each run the bench checks there is no oversell: the stock counter is at most the stock,
the takes that succeeded (each process counts its own) equal the stock counter, and equal the
sum of the per-customer counters (a refused attempt took nothing); on Redis the journal is empty
too (the raw PostgreSQL run is checked the same way). Any breach is shown in the ``oversold``
column and below the table, and the exit status is 1.

Usage::

    python bench/flash_sale.py                       # both backends, about a minute
    python bench/flash_sale.py --backend redis --attempts 100000 --rounds 3
    python bench/flash_sale.py --processes 2 --concurrency 16
    python bench/flash_sale.py --backend redis --profile /tmp/fs   # CPU profile of process 0

The last line printed is one JSON object, for scripts: ``redis_attempts_per_s``,
``redis_raw_ratio``, ``pg_attempts_per_s``, ``pg_raw_ratio``, the p50 / p99 of each
(``redis_p99_ms``, ...), CPU per attempt, the raw figures and the oversold counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import queue
import statistics
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, cast

import psycopg
import redis
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.store.counters import RedisCounters, SqlCounters, Take
from promoguard.store.db import Database
from promoguard.store.migrate import upgrade

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
SCRIPT_COMMANDS = 5  # GET and INCRBY per key (2 keys) and the journal's HSET
TARGET_RATIO = 3.0
WARMUP_PER_TASK = 20


@dataclass(frozen=True)
class Job:
    """What one process does."""

    backend: str  # "redis" | "pg"
    raw: bool
    attempts: int
    concurrency: int
    stock: int
    rule: str  # the flash sale's rule id (raw runs: the raw counter's key)
    redis_url: str
    pg_url: str  # with the bench schema on its search path
    prefix: str  # Redis key prefix of this run
    pipeline: int
    uvloop: bool
    index: int = 0
    profile: str | None = None


@dataclass
class Outcome:
    """What one process did."""

    start: float
    end: float
    cpu_s: float
    latencies_taken: bytes  # array("q") of ns
    latencies_refused: bytes
    errors: int
    first_error: str | None


@dataclass
class Measurement:
    backend: str
    raw: bool
    round: int
    attempts: int
    stock: int
    per_s: float
    p50_ms: float
    p99_ms: float
    p99_taken_ms: float | None
    p99_refused_ms: float | None
    taken: int
    refused: int
    errors: int
    client_cpu_us: float
    server_cpu_us: float | None
    oversold: int | None = None
    problems: list[str] = field(default_factory=list)


def customer(index: int, n: int) -> str:
    return f"c{index}-{n}"


def reservation(stock: int, rule: str, who: str) -> list[Take]:
    """What a checkout of one flash-sale unit takes (see ``orders/guards.py``)."""
    return [
        Take(f"stock:{rule}", 1, stock, "flash_sale_sold_out"),
        Take(f"units:{rule}:{who}", 1, 1, "flash_sale_limit_reached"),
    ]


class RefusedError(Exception):
    """A take did not fit: roll the transaction back."""


Attempt = Callable[[int], Awaitable[bool]]
Setup = tuple[Attempt, Attempt, Callable[[], Awaitable[None]]]
"""(the measured attempt, the warm-up attempt, close): an attempt tells whether it took."""


async def redis_ours(job: Job) -> Setup:
    client = Redis.from_url(job.redis_url, max_connections=job.concurrency + 2)
    counters = RedisCounters(client, prefix=job.prefix)
    await counters.load({})  # as a worker does when it starts: takes are refused until then
    session = cast(AsyncSession, None)  # Redis counters never touch the session

    def attempt_for(rule: str, stock: int) -> Attempt:
        async def attempt(n: int) -> bool:
            owner = f"{rule}-o{job.index}-{n}"
            takes = reservation(stock, rule, customer(job.index, n))
            if await counters.take(session, takes, owner) is not None:
                return False
            await counters.committed(owner)
            return True

        return attempt

    warm = attempt_for(f"warmup-{job.rule}", 10**9)
    return attempt_for(job.rule, job.stock), warm, client.aclose


async def redis_raw(job: Job) -> Setup:
    client = Redis.from_url(job.redis_url, max_connections=job.concurrency + 2)

    def attempt_for(key: str) -> Attempt:
        async def attempt(_n: int) -> bool:
            pipe = client.pipeline(transaction=False)
            for _ in range(job.pipeline):
                pipe.incr(key)
            await pipe.execute()
            return True

        return attempt

    raw, warm = job.prefix + job.rule, job.prefix + "raw-warmup"
    return attempt_for(raw), attempt_for(warm), client.aclose


async def pg_ours(job: Job) -> Setup:
    db = Database(job.pg_url)
    counters = SqlCounters()

    def attempt_for(rule: str, stock: int) -> Attempt:
        async def attempt(n: int) -> bool:
            owner = f"{rule}-o{job.index}-{n}"
            try:
                async with db.write() as session:
                    takes = reservation(stock, rule, customer(job.index, n))
                    if await counters.take(session, takes, owner) is not None:
                        raise RefusedError
            except RefusedError:
                return False
            await counters.committed(owner)
            return True

        return attempt

    warm = attempt_for(f"warmup-{job.rule}", 10**9)
    return attempt_for(job.rule, job.stock), warm, db.dispose


RAW_UPDATE = "UPDATE counters SET used = used + 1 WHERE key = %s AND used + 1 <= %s"


async def pg_raw(job: Job) -> Setup:
    url = job.pg_url.replace("postgresql+psycopg://", "postgresql://")
    connections = [await psycopg.AsyncConnection.connect(url) for _ in range(job.concurrency)]
    idle = asyncio.Queue[psycopg.AsyncConnection[Any]]()
    for connection in connections:
        idle.put_nowait(connection)

    def attempt_for(key: str, stock: int) -> Attempt:
        async def attempt(_n: int) -> bool:
            connection = idle.get_nowait()  # one per task: never empty
            try:
                cursor = await connection.execute(RAW_UPDATE, (key, stock))
                await connection.commit()
                return cursor.rowcount == 1
            finally:
                idle.put_nowait(connection)

        return attempt

    async def close() -> None:
        for connection in connections:
            await connection.close()

    return attempt_for(job.rule, job.stock), attempt_for("raw-warmup", 10**9), close


SETUPS = {
    ("redis", False): redis_ours,
    ("redis", True): redis_raw,
    ("pg", False): pg_ours,
    ("pg", True): pg_raw,
}


class Pumped(NamedTuple):
    taken: array[int]  # latencies in ns
    refused: array[int]
    errors: list[Exception]


async def pump(attempt: Attempt, numbers: Iterator[int], tasks: int) -> Pumped:
    """Run ``attempt`` for every number with ``tasks`` of them in flight."""
    clock = time.perf_counter_ns
    done = Pumped(array("q"), array("q"), [])

    async def task() -> None:
        for n in numbers:
            start = clock()
            try:
                ok = await attempt(n)
            except Exception as exc:
                done.errors.append(exc)
                continue
            (done.taken if ok else done.refused).append(clock() - start)

    await asyncio.gather(*(task() for _ in range(tasks)))
    return done


async def drive(job: Job, barrier: Any) -> Outcome:
    attempt, warmup, close = await SETUPS[job.backend, job.raw](job)
    try:
        # Warm every connection and cache up (script SHA, compiled statements, prepared
        # statements) on a counter of its own, then wait for the other processes.
        warm = iter(range(-1, -1 - job.concurrency * WARMUP_PER_TASK, -1))
        failed = (await pump(warmup, warm, job.concurrency)).errors
        if failed:
            raise failed[0]
        barrier.wait(120)
        profiler = cProfile.Profile(time.process_time) if job.profile else None
        start, cpu = time.monotonic(), time.process_time()
        if profiler:
            profiler.enable()
        done = await pump(attempt, iter(range(job.attempts)), job.concurrency)
        if profiler:
            profiler.disable()
        end, cpu = time.monotonic(), time.process_time() - cpu
        if profiler and job.profile:
            name = f"{job.profile}-{job.backend}{'-raw' if job.raw else ''}.prof"
            profiler.dump_stats(name)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
            print(f"--- CPU profile of process 0 ({name}) ---\n{text.getvalue()}", file=sys.stderr)
        return Outcome(
            start=start,
            end=end,
            cpu_s=cpu,
            latencies_taken=done.taken.tobytes(),
            latencies_refused=done.refused.tobytes(),
            errors=len(done.errors),
            first_error=repr(done.errors[0]) if done.errors else None,
        )
    finally:
        await close()


def worker(job: Job, barrier: Any, results: Any) -> None:
    """A process's life: its own event loop, its own connections."""
    try:
        if job.uvloop:
            import uvloop  # noqa: PLC0415 (optional)

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            results.put((job.index, runner.run(drive(job, barrier))))
    except BaseException as exc:
        barrier.abort()
        results.put((job.index, repr(exc)))
        raise


def percentile(ordered: array[int], share: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] / 1e6


def run(template: Job, processes: int, server_cpu: Callable[[], float | None]) -> Measurement:
    """Start ``processes`` workers, each with its share of the attempts; what they did."""
    context = mp.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    share, extra = divmod(template.attempts, processes)
    children = []
    for index in range(processes):
        job = replace(
            template,
            index=index,
            attempts=share + (index < extra),
            profile=template.profile if index == 0 else None,
        )
        child = context.Process(target=worker, args=(job, barrier, results), daemon=True)
        child.start()
        children.append(child)
    outcomes: dict[int, Outcome] = {}
    failures: list[str] = []
    server_before = server_after = None
    try:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(180)
            server_before = server_cpu()
        while len(outcomes) + len(failures) < processes:
            try:
                index, outcome = results.get(timeout=1.0)
            except queue.Empty:
                dead = [c for c in children if c.exitcode not in (None, 0)]
                if dead and results.empty():
                    failures.append(f"a process exited with status {dead[0].exitcode}")
                    break
                continue
            if isinstance(outcome, Outcome):
                outcomes[index] = outcome
            else:
                failures.append(f"process {index}: {outcome}")
        server_after = server_cpu()
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    if failures:
        raise RuntimeError("; ".join(failures))
    server = None
    if server_before is not None and server_after is not None:
        server = server_after - server_before
    return summarize(template, [outcomes[i] for i in range(processes)], server)


def summarize(template: Job, outcomes: list[Outcome], server_cpu_s: float | None) -> Measurement:
    """One measurement from what every process did."""
    wall = max(o.end for o in outcomes) - min(o.start for o in outcomes)
    taken = array("q")
    refused = array("q")
    for o in outcomes:
        taken.frombytes(o.latencies_taken)
        refused.frombytes(o.latencies_refused)
    every = array("q", sorted(taken + refused))
    taken = array("q", sorted(taken))
    refused = array("q", sorted(refused))
    errors = sum(o.errors for o in outcomes)
    first = next((o.first_error for o in outcomes if o.first_error), None)
    attempts = max(1, len(every))
    return Measurement(
        backend=template.backend,
        raw=template.raw,
        round=0,
        attempts=template.attempts,
        stock=template.stock,
        per_s=len(every) / wall,
        p50_ms=percentile(every, 0.50) or 0.0,
        p99_ms=percentile(every, 0.99) or 0.0,
        p99_taken_ms=percentile(taken, 0.99),
        p99_refused_ms=percentile(refused, 0.99),
        taken=len(taken),
        refused=len(refused),
        errors=errors,
        client_cpu_us=sum(o.cpu_s for o in outcomes) / attempts * 1e6,
        server_cpu_us=None if server_cpu_s is None else server_cpu_s / attempts * 1e6,
        problems=[f"{errors:,} attempts failed, the first with {first}"] if errors else [],
    )


def check(m: Measurement, used: int, per_customer: int | None = None, journal: int = 0) -> None:
    """Record any oversell, or any disagreement between what was counted and what was taken."""
    m.oversold = max(0, used - m.stock, m.taken - m.stock)
    if used != m.taken:
        m.problems.append(f"stock counter at {used:,} but {m.taken:,} takes succeeded")
    if per_customer is not None and per_customer != m.taken:
        m.problems.append(f"per-customer counters sum to {per_customer:,}, not {m.taken:,}")
    if journal:
        m.problems.append(f"{journal:,} journal entries left behind")
    if m.taken + m.refused + m.errors != m.attempts:
        m.problems.append(f"{m.attempts - m.taken - m.refused - m.errors:,} attempts unaccounted")


def _batches(items: Any, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def redis_keys(url: str) -> Iterator[str]:
    """A key prefix of its own in the Redis at ``url``; every key under it deleted afterwards."""
    prefix = f"promoguard-bench:{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        yield prefix
    finally:
        for batch in _batches(client.scan_iter(match=prefix + "*", count=1000), 1000):
            client.unlink(*batch)
        client.close()


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database at ``url``, migrated to head and dropped afterwards;
    yields the URL to use (the schema first on the search path)."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        scoped = f"{url}?options=-csearch_path%3D{schema}"
        upgrade(scoped)
        yield scoped
    finally:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _stat(pid: int) -> tuple[int, float, float]:
    """(parent pid, CPU seconds of the process, CPU seconds of the children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) / os.sysconf("SC_CLK_TCK") for f in fields[11:15])
    return int(fields[1]), utime + stime, cutime + cstime


def postmaster_cpu(postmaster: int) -> float | None:
    """CPU seconds of a PostgreSQL on this machine: the postmaster, the children it has reaped
    and every live child; None when /proc does not show it."""
    try:
        _, own, reaped = _stat(postmaster)
    except (OSError, IndexError, ValueError):
        return None
    total = own + reaped
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent, cpu, _ = _stat(int(entry.name))
                if parent == postmaster:
                    total += cpu
    return total


def bench_redis(args: argparse.Namespace, status: Any) -> list[Measurement]:
    results = []
    with redis_keys(args.redis_url) as prefix:
        client = redis.Redis.from_url(args.redis_url)

        def server_cpu() -> float:
            info = cast(dict[str, float], client.info("cpu"))
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        for rnd in range(args.rounds):
            order = (False, True) if rnd % 2 == 0 else (True, False)
            for raw in order:
                job = Job(
                    backend="redis",
                    raw=raw,
                    attempts=args.attempts,
                    concurrency=args.concurrency,
                    stock=0 if raw else max(1, int(args.attempts * args.stock_share)),
                    rule=f"{'raw' if raw else 'flash'}{rnd}",
                    redis_url=args.redis_url,
                    pg_url=args.pg_url,
                    prefix=prefix,
                    pipeline=args.pipeline,
                    uvloop=args.uvloop,
                    profile=args.profile if rnd == 0 else None,
                )
                what = f"pipelines of {job.pipeline} INCR" if raw else "reservation attempts"
                status.update(f"redis, round {rnd + 1}: {job.attempts:,} {what}")
                m = run(job, args.processes, server_cpu)
                m.round = rnd
                if raw:
                    used = int(cast(bytes | None, client.get(prefix + job.rule)) or 0)
                    if used != m.taken * job.pipeline:
                        m.problems.append(f"raw key at {used:,}, not {m.taken * job.pipeline:,}")
                else:
                    keys = [
                        f"{prefix}counter:units:{job.rule}:{customer(i, n)}"
                        for i in range(args.processes)
                        for n in range(job.attempts // args.processes + 1)
                    ]
                    per_customer = sum(
                        int(v or 0) for batch in _batches(keys, 1000) for v in client.mget(batch)
                    )
                    stock = client.get(f"{prefix}counter:stock:{job.rule}")
                    journal = cast(int, client.hlen(f"{prefix}journal"))
                    check(m, int(cast(bytes | None, stock) or 0), per_customer, journal)
                results.append(m)
        client.close()
    return results


def bench_pg(args: argparse.Namespace, status: Any) -> list[Measurement]:
    results = []
    status.update("pg: creating and migrating a schema")
    with postgres_schema(args.pg_url) as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            backend = cast(tuple[int], conn.execute("SELECT pg_backend_pid()").fetchone())[0]
            postmaster = None
            with contextlib.suppress(OSError, IndexError, ValueError):
                postmaster = _stat(backend)[0]

        def server_cpu() -> float | None:
            return None if postmaster is None else postmaster_cpu(postmaster)

        for rnd in range(args.rounds):
            order = (False, True) if rnd % 2 == 0 else (True, False)
            for raw in order:
                job = Job(
                    backend="pg",
                    raw=raw,
                    attempts=args.pg_attempts,
                    concurrency=args.concurrency,
                    stock=max(1, int(args.pg_attempts * args.stock_share)),
                    rule=f"{'raw' if raw else 'flash'}{rnd}",
                    redis_url=args.redis_url,
                    pg_url=url,
                    prefix="",
                    pipeline=args.pipeline,
                    uvloop=args.uvloop,
                    profile=args.profile if rnd == 0 else None,
                )
                if raw:
                    with psycopg.connect(plain, autocommit=True) as conn:
                        conn.execute(
                            "INSERT INTO counters (key, used) VALUES (%s, 0), ('raw-warmup', 0)"
                            " ON CONFLICT DO NOTHING",
                            (job.rule,),
                        )
                what = "bare conditional UPDATEs" if raw else "reservation attempts"
                status.update(f"pg, round {rnd + 1}: {job.attempts:,} {what}")
                m = run(job, args.processes, server_cpu)
                m.round = rnd
                with psycopg.connect(plain, autocommit=True) as conn:
                    key = job.rule if raw else f"stock:{job.rule}"
                    row = conn.execute("SELECT used FROM counters WHERE key = %s", (key,))
                    used = (row.fetchone() or (0,))[0]
                    per_customer = None
                    if not raw:
                        row = conn.execute(
                            "SELECT coalesce(sum(used), 0) FROM counters WHERE key LIKE %s",
                            (f"units:{job.rule}:%",),
                        )
                        per_customer = cast(tuple[int], row.fetchone())[0]
                check(m, used, per_customer)
                results.append(m)
    return results


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def show(results: list[Measurement], args: argparse.Namespace) -> None:
    """The table (on stdout) and any problem found."""
    table = Table(
        title=f"flash-sale reservations: {args.processes} processes × {args.concurrency} tasks "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {'uvloop' if args.uvloop else 'asyncio'}, "
        f"load average {args.load:.2f} before the run)"
    )
    columns = ["backend", "attempts", "stock", "taken", "attempts/s", "p50 ms", "p99 ms"]
    columns += ["p99 taken", "p99 refused", "client CPU µs", "server CPU µs", "ratio", "oversold"]
    if args.rounds > 1:
        columns.insert(1, "round")
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for m in results:
        ratio = raw_ratio(m, results)
        label = m.backend
        if m.raw:
            label += f" raw (INCR ×{args.pipeline})" if m.backend == "redis" else " raw (UPDATE)"
        row = [
            label,
            f"{m.attempts:,}",
            f"{m.stock:,}" if m.stock else "—",
            f"{m.taken:,}",
            f"{m.per_s:,.0f}",
            _ms(m.p50_ms),
            _ms(m.p99_ms),
            _ms(m.p99_taken_ms) if m.stock else "—",
            _ms(m.p99_refused_ms) if m.stock else "—",
            f"{m.client_cpu_us:,.0f}",
            "—" if m.server_cpu_us is None else f"{m.server_cpu_us:,.0f}",
            f"{ratio:.2f}×" if ratio else "",
            "—" if m.oversold is None else f"{m.oversold:,}",
        ]
        if args.rounds > 1:
            row.insert(1, str(m.round + 1))
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 180).print(table)
    for m in results:
        for problem in m.problems:
            print(f"{m.backend}{' raw' if m.raw else ''} round {m.round + 1}: {problem}")


def raw_ratio(m: Measurement, results: list[Measurement]) -> float | None:
    """Raw attempts/s over ours, in the same round (None for a raw measurement)."""
    if m.raw:
        return None
    raw = [r for r in results if r.raw and r.backend == m.backend and r.round == m.round]
    return raw[0].per_s / m.per_s if raw else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits or None)


def summarize_all(results: list[Measurement], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON figures: medians over the rounds."""
    summary: dict[str, Any] = {}
    for backend in ("redis", "pg"):
        for raw in (False, True):
            runs = [m for m in results if m.backend == backend and m.raw == raw]
            if not runs:
                continue
            key = backend + ("_raw" if raw else "")

            def median(name: str, runs: list[Measurement] = runs) -> float | None:
                return _median([getattr(m, name) for m in runs])

            summary[f"{key}_attempts_per_s"] = _rounded(median("per_s"), 0)
            if not raw:
                ratios = [raw_ratio(m, results) for m in runs]
                summary[f"{key}_raw_ratio"] = _rounded(_median(ratios), 2)
            for name in ("p50_ms", "p99_ms") + (() if raw else ("p99_taken_ms", "p99_refused_ms")):
                summary[f"{key}_{name}"] = _rounded(median(name), 2)
            for name in ("client_cpu_us", "server_cpu_us"):
                summary[f"{key}_{name}"] = _rounded(median(name), 0)
            if not (raw and backend == "redis"):
                summary[f"{key}_oversold"] = sum(m.oversold or 0 for m in runs)
    if summary.get("redis_raw_ratio") is not None:
        summary["redis_target_met"] = summary["redis_raw_ratio"] <= TARGET_RATIO
    summary["zero_oversell"] = all(not m.oversold and not m.problems for m in results)
    return summary | {
        "processes": args.processes,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "load_avg_before": round(args.load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "pg", "both"), default="both")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--concurrency", type=int, default=8, help="attempts in flight per process")
    parser.add_argument("--attempts", type=int, default=40_000, help="attempts per Redis run")
    parser.add_argument("--pg-attempts", type=int, default=4_000, help="per PostgreSQL run")
    parser.add_argument("--rounds", type=int, default=1, help="measure each this many times")
    parser.add_argument(
        "--stock-share",
        type=float,
        default=0.5,
        help="the stock as a share of the attempts (0.5: half are taken, then it is sold out)",
    )
    parser.add_argument(
        "--pipeline",
        type=int,
        default=SCRIPT_COMMANDS,
        help="INCRs per pipeline in the raw Redis run (default: the take script's commands)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("PROMOGUARD_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PROMOGUARD_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="PostgreSQL database; the bench works in a fresh schema it drops afterwards",
    )
    parser.add_argument(
        "--no-uvloop", dest="uvloop", action="store_false", help="plain asyncio event loops"
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="CPU-profile process 0 of the first round, write PREFIX-<backend>[-raw].prof",
    )
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop  # noqa: F401, PLC0415 (optional)
        except ImportError:
            args.uvloop = False

    args.load = os.getloadavg()[0]
    results: list[Measurement] = []
    with Console(stderr=True).status("flash sale...") as status:
        if args.backend in ("redis", "both"):
            results += bench_redis(args, status)
        if args.backend in ("pg", "both"):
            results += bench_pg(args, status)
    show(results, args)
    summary = summarize_all(results, args)
    print(json.dumps(summary))
    if not summary["zero_oversell"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
