"""Background loops: a step under way is let finish when its loop stops (a step cancelled inside
a SQLite write transaction could leave the write lock held), and cancelled only past the grace."""

from __future__ import annotations

import asyncio
import logging

from promoguard.loops import Periodic

log = logging.getLogger(__name__)


def test_stopping_lets_a_step_under_way_finish_and_starts_no_other():
    async def main() -> list[str]:
        started, release = asyncio.Event(), asyncio.Event()
        events: list[str] = []

        async def step() -> None:
            events.append("started")
            started.set()
            await release.wait()
            events.append("finished")

        loop = Periodic(step, 0.001, log=log, what="test")
        await loop.start()
        await started.wait()
        stopping = asyncio.create_task(loop.stop(grace=600))
        while not loop._stopping:  # stop() has begun waiting for the step
            await asyncio.sleep(0)
        release.set()
        await stopping
        assert not loop.running
        return events

    assert asyncio.run(main()) == ["started", "finished"]


def test_a_step_that_outlasts_the_grace_is_cancelled():
    async def main() -> list[str]:
        started = asyncio.Event()
        events: list[str] = []

        async def step() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        loop = Periodic(step, 0.001, log=log, what="test")
        await loop.start()
        await started.wait()
        await loop.stop(grace=0.01)
        return events

    assert asyncio.run(main()) == ["cancelled"]


def test_a_stopped_loop_starts_again():
    async def main() -> str:
        runs = asyncio.Queue[str]()

        async def step() -> None:
            runs.put_nowait("ran")

        loop = Periodic(step, 0.001, log=log, what="test")
        await loop.start()
        await asyncio.wait_for(runs.get(), 60)
        await loop.stop()
        assert not loop.running
        while not runs.empty():
            runs.get_nowait()
        await loop.start()
        ran = await asyncio.wait_for(runs.get(), 60)  # TimeoutError if it never runs again
        await loop.stop()
        return ran

    assert asyncio.run(main()) == "ran"
