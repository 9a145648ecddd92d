"""The backend protocol: a batch of requests in, generations out (in completion order).

Backends never raise for a single failed request: they return a Generation with `error` set,
so the runner can record the failure and move on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

# The request/generation value types live in dt_eval/types.py; imported here for the backends.
from dt_eval.types import AudioInput, Generation, GenerationRequest, SamplingConfig

__all__ = ["AudioInput", "Backend", "Generation", "GenerationRequest", "LocalBatchedBackend", "SamplingConfig"]


class Backend(Protocol):
    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[Generation]:
        """Yield one Generation per request, as each completes (any order)."""
        ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What to record in the run's config.json (never secrets)."""
        ...


class LocalBatchedBackend:
    """Shared loop of the in-process backends (hf, vllm): fixed-size batches, one at a time on the
    device (a lock), run in a worker thread so the event loop keeps serving; a batch that raises
    (e.g. out of memory) fails its requests, never the run. Subclasses set `preferred_batch` and
    `failure_label` and implement `_generate_batch`."""

    preferred_batch: int = 8
    failure_label: str = "generate"
    # Set by the runner while it runs a task: called with a request's key, from the worker thread,
    # the moment that request's generation is complete, before its batch returns (the progress
    # bar counts it then). A backend that cannot tell leaves it uncalled: the record counts.
    on_generated: Callable[[str], None] | None = None

    def _batch_lock(self) -> asyncio.Lock:
        lock = getattr(self, "_lock", None)
        if lock is None:
            lock = self._lock = asyncio.Lock()
        return lock

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[Generation]:
        raise NotImplementedError

    async def generate(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[Generation]:
        for start in range(0, len(requests), self.preferred_batch):
            batch = list(requests[start:start + self.preferred_batch])
            async with self._batch_lock():
                try:
                    results = await asyncio.to_thread(self._generate_batch, batch)
                except Exception as e:
                    results = [Generation(key=r.key, error=f"{self.failure_label} failed: {type(e).__name__}: {e}")
                               for r in batch]
            for g in results:
                yield g

    async def aclose(self) -> None:
        pass
