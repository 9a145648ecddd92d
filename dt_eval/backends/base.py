"""The backend protocol: a batch of requests in, generations out (in completion order).

Backends never raise for a single failed request: they return a Generation with `error` set,
so the runner can record the failure and move on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class SamplingConfig:
    """Generation settings. `max_tokens` is sized for thinking models (thousands, not 128)."""

    max_tokens: int = 4096
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    # Extra fields passed through to the server / engine as they are (e.g. min_p).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AudioInput:
    """Decoded mono float32 audio at the model's sampling rate."""

    array: np.ndarray
    sampling_rate: int

    @property
    def seconds(self) -> float:
        return len(self.array) / self.sampling_rate


@dataclass
class GenerationRequest:
    key: str  # unique per (task, item, repeat): the run directory's resume key
    messages: list[dict[str, Any]]  # chat messages; audio parts are {"type": "audio"} placeholders
    audio: list[AudioInput]  # one entry per audio placeholder, in order
    sampling: SamplingConfig
    # Chat-template switches such as {"enable_thinking": True} (Qwen3 family).
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    key: str
    text: str = ""  # the answer content (without reasoning when the server split it)
    reasoning: str | None = None  # reasoning returned separately (vLLM reasoning parsers)
    finish_reason: str | None = None  # "stop", "length" (cut off), ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None  # set when the request failed after retries
    backend_info: dict[str, Any] = field(default_factory=dict)  # e.g. which server answered

    @property
    def ok(self) -> bool:
        return self.error is None


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
