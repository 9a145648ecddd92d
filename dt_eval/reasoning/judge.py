"""The async judge client every LLM-judged scorer uses (evaluator, consistency, rubrics, refs).

- Transport: dt-eval's OpenAI-compatible backend (raw aiohttp): one global concurrency limit,
  a per-request timeout, bounded retries with backoff on connection errors, timeouts, 408/409/
  429/5xx and malformed HTTP answers. A request that still fails is a judge failure.
- Strict parsing: each call carries a `parse` function that raises on anything but the expected
  JSON. An unparseable reply is retried (`parse_retries` more requests, or the call's own
  `attempts` budget: MMAR-Rubrics uses the official script's 20), then the call is a judge
  failure. Failures are reported (`ok=False`, `error`), never turned into a score.
- Cache: SQLite, keyed by (judge model, prompt version, item id, chain hash, rater index). The
  chain hash covers the full request (messages, hence the chain and everything else the prompt
  holds, plus sampling settings), so a changed chain, reference or rubric misses. Only replies
  that parsed are cached; a cached reply is parsed again on use (a stricter parser re-asks).
- Raw replies are returned with every outcome (all attempts, the accepted one last).
- Secrets: the API key goes only into the Authorization header; it is redacted from every error
  and raw reply this module returns, and `describe()` names only where the key came from.
  Key order: `api_key` argument, $DT_EVAL_JUDGE_API_KEY, $OPENAI_API_KEY (never
  $DT_EVAL_API_KEY: that is the model server's key and must not travel to a judge).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.util.hashing import stable_hash
from dt_eval.util.sqlite_cache import SqliteCache

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4o-2024-11-20"  # the MMAR-Rubrics challenge's judge
DEFAULT_SEED = 42


class JudgeParseError(ValueError):
    """The judge's reply is not what the prompt asked for."""


@dataclass
class JudgeConfig:
    base_url: str | list[str]
    model: str = DEFAULT_JUDGE_MODEL
    temperature: float = 0.0
    seed: int | None = DEFAULT_SEED
    max_tokens: int = 2048
    concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 3  # HTTP-level retries per request (timeouts, 5xx, 429, dropped connections)
    parse_retries: int = 2  # further requests when a reply cannot be parsed
    backoff_s: float = 1.0
    extra_body: dict[str, Any] = field(default_factory=dict)  # e.g. {"chat_template_kwargs": {...}}
    api_key: str | None = field(default=None, repr=False)
    cache_path: str | Path | None = None  # SQLite file; None = no cache

    def resolved_key(self) -> tuple[str | None, str]:
        if self.api_key:
            return self.api_key, "argument"
        for env in ("DT_EVAL_JUDGE_API_KEY", "OPENAI_API_KEY"):
            if os.environ.get(env):
                return os.environ[env], f"env:{env}"
        return None, "none"

    def describe(self) -> dict[str, Any]:
        from dt_eval.util.redact import redact_url

        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        return {
            "model": self.model, "base_urls": [redact_url(u) for u in urls], "temperature": self.temperature,
            "seed": self.seed, "max_tokens": self.max_tokens, "concurrency": self.concurrency,
            "timeout_s": self.timeout_s, "max_retries": self.max_retries, "parse_retries": self.parse_retries,
            "extra_body": self.extra_body, "api_key_source": self.resolved_key()[1],
            "cache": str(self.cache_path) if self.cache_path else None,
        }


@dataclass
class JudgeCall:
    item_id: str
    prompt_version: str
    messages: list[dict[str, Any]]
    parse: Callable[[str], Any]  # raises (JudgeParseError or ValueError) on a reply it cannot use
    rater: int = 0
    attempts: int | None = None  # requests for a usable reply; None: 1 + JudgeConfig.parse_retries


@dataclass
class JudgeOutcome:
    ok: bool
    value: Any = None
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    calls: int = 0  # HTTP requests sent for this call (0 = cache hit)
    cached: bool = False


class JudgeCache:
    """SQLite store of accepted judge replies, keyed by (judge model, prompt version, item id,
    chain hash, rater). Safe across processes and threads."""

    def __init__(self, path: str | Path):
        self._store = SqliteCache(
            path, "judge_cache",
            keys=[("judge_model", "TEXT"), ("prompt_version", "TEXT"), ("item_id", "TEXT"), ("chain_hash", "TEXT"),
                  ("rater", "INTEGER")],
            values=[("raw", "TEXT"), ("created", "REAL")])
        self.path = self._store.path

    def get(self, key: tuple[str, str, str, str, int]) -> str | None:
        row = self._store.get(key)
        return row[0] if row else None

    def put(self, key: tuple[str, str, str, str, int], raw: str) -> None:
        self._store.put(key, (raw, time.time()))

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()


class JudgeClient:
    """`await client.judge_many(calls)`; use as `async with JudgeClient(cfg) as client:`."""

    def __init__(self, config: JudgeConfig, cache: JudgeCache | None = None):
        from dt_eval.backends.openai_compat import OpenAIBackend

        self.config = config
        key, self._key_source = config.resolved_key()
        self._secret = key
        urls = [config.base_url] if isinstance(config.base_url, str) else list(config.base_url)
        # api_key "EMPTY" keeps the backend from falling back to $DT_EVAL_API_KEY.
        self._backend = OpenAIBackend(config.model, urls, concurrency=config.concurrency, timeout_s=config.timeout_s,
                                      max_retries=config.max_retries, backoff_s=config.backoff_s,
                                      api_key=key or "EMPTY")
        self.cache = cache if cache is not None else (JudgeCache(config.cache_path) if config.cache_path else None)
        self._own_cache = cache is None and self.cache is not None
        self.requests_sent = 0  # HTTP requests, all calls together
        self.cache_hits = 0
        self.failures = 0

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._backend.aclose()
        if self._own_cache and self.cache is not None:
            self.cache.close()
            self.cache = None

    def describe(self) -> dict[str, Any]:
        return self.config.describe()

    def redact(self, text: str | None) -> str | None:
        """Replies and errors as stored: the key and the judge URLs' passwords masked (literal
        matches only: a reply's own words are kept; transport errors come redacted already)."""
        for secret in self._backend._secrets:
            if text and secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def _sampling(self):
        from dt_eval.backends.base import SamplingConfig

        c = self.config
        return SamplingConfig(max_tokens=c.max_tokens, temperature=c.temperature, top_p=1.0, seed=c.seed,
                              extra=dict(c.extra_body))

    def chain_hash(self, call: JudgeCall) -> str:
        c = self.config
        return stable_hash({"messages": call.messages, "temperature": c.temperature, "seed": c.seed,
                            "max_tokens": c.max_tokens, "extra_body": c.extra_body})

    def cache_key(self, call: JudgeCall) -> tuple[str, str, str, str, int]:
        return (self.config.model, call.prompt_version, call.item_id, self.chain_hash(call), int(call.rater))

    async def judge(self, call: JudgeCall) -> JudgeOutcome:
        from dt_eval.backends.base import GenerationRequest

        key = self.cache_key(call) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                try:
                    value = call.parse(hit)
                except Exception:  # noqa: BLE001 - the parser got stricter: ask again
                    pass
                else:
                    self.cache_hits += 1
                    return JudgeOutcome(ok=True, value=value, raw=[hit], calls=0, cached=True)
        out = JudgeOutcome(ok=False)
        last_error = "no reply"
        budget = call.attempts if call.attempts is not None else 1 + self.config.parse_retries
        for attempt in range(max(1, budget)):
            req = GenerationRequest(key=f"judge:{call.item_id}:{call.rater}:{attempt}", messages=call.messages,
                                    audio=[], sampling=self._sampling())
            gen = None
            async for g in self._backend.generate([req]):
                gen = g
            n = int((gen.backend_info or {}).get("attempts", 1)) if gen is not None else 0
            out.calls += n
            self.requests_sent += n
            if gen is None or gen.error:
                # The transport already retried (max_retries): the judge is unavailable for this call.
                last_error = f"judge request failed: {gen.error if gen is not None else 'no result'}"
                break
            text = gen.text or ""
            out.raw.append(self.redact(text) or "")
            if not text.strip():
                last_error = f"empty judge reply (finish_reason={gen.finish_reason})"
                continue
            try:
                value = call.parse(text)
            except Exception as e:  # noqa: BLE001 - any parser failure is an unusable reply
                last_error = f"unparseable judge reply: {type(e).__name__}: {e}"
                continue
            out.ok, out.value = True, value
            if key is not None:
                self.cache.put(key, text)
            return out
        out.error = self.redact(f"{last_error} (after {len(out.raw)} repl{'y' if len(out.raw) == 1 else 'ies'}, "
                                f"{out.calls} request(s))")
        self.failures += 1
        return out

    async def judge_many(self, calls: Sequence[JudgeCall]) -> list[JudgeOutcome]:
        """All calls concurrently (the backend's semaphore bounds requests in flight)."""
        return list(await asyncio.gather(*(self.judge(c) for c in calls)))


async def score_each(items: Sequence[Any], judge: JudgeClient, *, scorer: str, version: str,
                     messages: Callable[[Any], list[dict[str, Any]]], parse: Callable[[str], Any],
                     settled: Callable[[Any], Any], components: Callable[[dict[str, Any]], dict[str, Any]]
                     ) -> list[Any]:
    """One judge call per CotInput that `settled(item)` leaves open (it returns a CotScore for an
    item decided without the judge, else None); a parsed reply {"value", ...} becomes a CotScore
    with `components(reply)`, a failed one an unscored CotScore with the judge's error."""
    from dt_eval.reasoning.types import CotScore

    out: list[Any] = [settled(item) for item in items]
    open_ = [i for i, s in enumerate(out) if s is None]
    calls = [JudgeCall(item_id=items[i].id, prompt_version=version, messages=messages(items[i]), parse=parse)
             for i in open_]
    for i, res in zip(open_, await judge.judge_many(calls)):
        if res.ok:
            out[i] = CotScore(id=items[i].id, scorer=scorer, version=version, value=res.value["value"],
                              components=components(res.value), raw=res.raw, judge_calls=res.calls,
                              cached=res.cached)
        else:
            out[i] = CotScore(id=items[i].id, scorer=scorer, version=version, value=None, raw=res.raw,
                              error=res.error, judge_calls=res.calls)
    return out


# --------------------------------------------------------------------------------------------
# Shared parsing helpers


def extract_json_object(text: str) -> Any:
    """The single JSON object a reply holds: the whole reply, or the one ```json fenced block,
    or the span from the first '{' to the last '}'. Anything else raises JudgeParseError."""
    import json

    s = text.strip()
    if s.startswith("```"):
        body = s.split("\n", 1)[1] if "\n" in s else ""
        if body.rstrip().endswith("```"):
            s = body.rstrip()[:-3].strip()
    for candidate in (s, s[s.find("{"): s.rfind("}") + 1] if "{" in s and "}" in s else None):
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise JudgeParseError(f"no JSON object in the reply (starts {text.strip()[:60]!r})")


def strict_int(value: Any, lo: int, hi: int, name: str) -> int:
    """An integer in [lo, hi]; floats equal to an integer are accepted, booleans and strings not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeParseError(f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise JudgeParseError(f"{name} must be an integer, got {value}")
    v = int(value)
    if not lo <= v <= hi:
        raise JudgeParseError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v
