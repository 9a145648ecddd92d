"""Batching of non-streamed requests: those that arrive within `wait_s` of each other (and any that
queued while the model was busy) are grouped, up to `max_batch`, by identical sampling settings
(ParsedRequest.batch_key) into one `generate_batch` call in a worker thread. The model lock,
shared with streams, lets one generate call run at a time. If a batch fails, its requests are
retried one by one so one bad request cannot fail the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from dt_eval.backends.base import Generation, GenerationRequest
from dt_eval.serving.hfserver.parser import ParsedRequest

log = logging.getLogger("dt_eval.serving.hfserver")


@dataclass
class Pending:
    parsed: ParsedRequest
    future: asyncio.Future


class Batcher:
    """`await batcher.submit(parsed)` -> its Generation; `run()` is the loop (one task per app)."""

    def __init__(self, generate_batch: Callable[[list[GenerationRequest]], list[Generation]],
                 model_lock: asyncio.Lock, max_batch: int, wait_s: float,
                 on_batch: Callable[[int], None] = lambda size: None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.generate_batch = generate_batch
        self.model_lock = model_lock
        self.max_batch = max_batch
        self.wait_s = max(0.0, wait_s)
        self.on_batch = on_batch  # called with the size of each batch that generated
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()

    async def submit(self, parsed: ParsedRequest) -> Generation:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(parsed, fut))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(items) < self.max_batch:
                if not self.queue.empty():
                    items.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:  # TimeoutError's alias from Python 3.11 on
                    break
            groups: dict[tuple, list[Pending]] = {}
            for it in items:
                groups.setdefault(it.parsed.batch_key, []).append(it)
            for group in groups.values():
                group = [p for p in group if not p.future.done()]  # client went away meanwhile
                if not group:
                    continue
                try:
                    await self._run_batch(group)
                except Exception as e:  # never let the batcher die: fail these requests instead
                    log.exception("batch failed")
                    for p in group:
                        if not p.future.done():
                            p.future.set_exception(e)

    async def _run_batch(self, group: list[Pending]) -> None:
        reqs = [p.parsed.request for p in group]
        async with self.model_lock:
            try:
                results = await asyncio.to_thread(self.generate_batch, reqs)
                self.on_batch(len(reqs))
            except Exception as e:  # noqa: BLE001
                if len(group) == 1:
                    log.warning("generate failed: %s: %s", type(e).__name__, e)
                    if not group[0].future.done():
                        group[0].future.set_exception(e)
                    return
                results = None
        if results is None:  # one request may have sunk the batch: retry each alone
            for p in group:
                await self._run_batch([p])
            return
        for p, g in zip(group, results):
            if not p.future.done():
                p.future.set_result(g)
