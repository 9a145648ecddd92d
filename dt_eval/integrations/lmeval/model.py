"""The ``dt-audio`` lm-eval model: generation through dt-eval's backends, audio as ``input_audio``.

lm-eval's own API models carry images only; this one sends every ``doc_to_audio`` clip as an
``input_audio`` part to an OpenAI-compatible server (vLLM, ``dt_eval.serving.hfserver``), with the model
family's preset (thinking switch, sampling, audio rate and window) exactly as ``dt-eval run``.

Thinking-aware post-processing:
- lm-eval's text tasks (gsm8k, mmlu_pro, ...) get the answer only: the reasoning (the server's
  reasoning field or a ``<think>`` block) is split off first, then the task's ``until`` strings cut
  the answer. ``until`` is never sent to the server (it would cut the reasoning), and the token
  budget is the model's thinking budget or the task's, whichever is larger.
- Our ``dt_*`` tasks mark their requests with ``dt_eval_task`` in ``generation_kwargs``; they get
  the reasoning back with the answer (``<think>reasoning</think>answer``), so lm-eval's logs keep
  it and their metric re-runs dt-eval's extraction and official match on the same text.

Arguments (``--model_args``): ``model`` (served name), ``base_url`` (several joined with ``|``),
``preset``, ``thinking`` (on/off), ``max_tokens``, ``concurrency``, ``timeout``, ``max_retries``,
``audio_window``, ``task_sampling`` (true: the task's temperature/top_p win over the preset's),
``reasoning_log`` (a JSONL file that receives every request's reasoning). The API key comes from
``$DT_EVAL_API_KEY`` or ``$OPENAI_API_KEY``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from dt_eval.backends.base import Backend
from dt_eval.config import RunOptions
from dt_eval.integrations.lmeval import register, task_config
from dt_eval.pipeline.audio import AudioError, load_audio
from dt_eval.pipeline.extract import split_reasoning
from dt_eval.tasks.prompts import compose_messages
from dt_eval.types import AudioRef, Generation, GenerationRequest, SamplingConfig

log = logging.getLogger(__name__)

DT_TASK_KEY = "dt_eval_task"  # generation_kwargs marker set by our dt_* task configs
_IGNORED_ARGS = {"batch_size", "max_batch_size", "device", "data_dir", "dtype", "trust_remote_code"}


def pack_generation(text: str, reasoning: str | None) -> str:
    """One string that keeps the server's separate reasoning: ``<think>R</think>answer``."""
    return f"<think>{reasoning}</think>{text}" if reasoning else text


def unpack_generation(s: str) -> tuple[str, str | None]:
    """Inverse of :func:`pack_generation` (text the model wrote inline is split by extraction)."""
    if s.startswith("<think>"):
        end = s.find("</think>")
        if end > 0:
            return s[end + len("</think>"):], s[len("<think>"):end]
    return s, None


def answer_only(gen: Generation, until: list[str] | None) -> str:
    """What an lm-eval text task sees: the post-reasoning answer, cut at the first stop string."""
    _, region, truncated = split_reasoning(gen.text or "", gen.reasoning)
    if truncated:
        return ""
    region = region.lstrip()  # the template's blank line after </think> is not the answer's end
    for stop in until or []:
        if stop and stop in region:
            region = region[: region.index(stop)]
    return region.strip()


@dataclass
class PreparedRequest:
    request: GenerationRequest | None  # None: could not be built (bad audio): answered ""
    dt_task: str | None
    until: list[str]
    task_gen_kwargs: dict[str, Any]
    error: str | None = None
    warnings: list[str] | None = None


def _bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "on")


class DtAudioLM(LM):
    MULTIMODAL = True  # lm-eval routes doc_to_audio tasks only to models that say so

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        preset: str | None = None,
        thinking: str = "on",
        max_tokens: int | None = None,
        concurrency: int = 32,
        timeout: float = 600.0,
        max_retries: int = 4,
        audio_window: float | None = None,
        task_sampling: bool | str = False,
        reasoning_log: str | None = None,
        *,
        backend: Backend | None = None,
        options: RunOptions | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        recorder: Callable[..., Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(extra) - _IGNORED_ARGS)
        if unknown:
            raise ValueError(f"dt-audio: unknown model_args {', '.join(unknown)} (see `help(DtAudioLM)`)")
        if options is None:
            if not model:
                raise ValueError("dt-audio needs model=<served model name> in --model_args")
            from dt_eval.config import options_from_preset

            options = options_from_preset(tasks=[], model=model, backend="openai", preset=preset, thinking=thinking,
                                          audio_window=float(audio_window) if audio_window is not None else None)
            if max_tokens is not None:
                options.sampling.max_tokens = int(max_tokens)
        self.options = options
        self.task_sampling = _bool(task_sampling)
        self._own_loop: _LoopThread | None = None
        if backend is None:
            if not base_url:
                raise ValueError("dt-audio needs base_url=http://HOST:PORT/v1 in --model_args (several: join with |)")
            from dt_eval.backends import make_backend

            backend = make_backend("openai", options.model, base_urls=[u for u in str(base_url).split("|") if u],
                                   concurrency=int(concurrency), timeout_s=float(timeout),
                                   max_retries=int(max_retries))
        self.backend = backend
        if loop is None:
            self._own_loop = _LoopThread()
            loop = self._own_loop.loop
            atexit.register(self.close)
        self._loop = loop
        self._recorder = recorder
        self._reasoning_log = Path(reasoning_log) if reasoning_log else None

    # -- lm-eval's interface -----------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:  # fingerprints lm-eval's request cache
        return f"dt-audio:{self.options.model}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return ""

    def apply_chat_template(self, chat_history: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        # The server applies the real template; we pass the messages through as JSON.
        return json.dumps(chat_history, ensure_ascii=False)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "dt-audio talks to a chat-completions server, which cannot score given text: use generation tasks "
            "(output_type: generate_until), e.g. gsm8k, mmlu_pro, or dt_mmau / dt_mmar / dt_mmsu")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self.loglikelihood(requests)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        return self._call(self._generate_all(list(requests), disable_tqdm))

    # -- internals ---------------------------------------------------------------------------------

    def _call(self, coro):
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("DtAudioLM.generate_until must not be called from its own event loop's thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _prepare(self, inst: Any, key: str, repeat: int) -> PreparedRequest:
        context, gen_kwargs, *rest = inst.args
        gk = dict(gen_kwargs or {})
        dt_task = gk.pop(DT_TASK_KEY, None)
        until = gk.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        task_gk = dict(gk)
        mm = rest[0] if rest and isinstance(rest[0], dict) else {}
        clips = mm.get("audio")
        if clips is None:
            clips = []
        elif not isinstance(clips, list):
            clips = [clips]
        audio, warnings = [], []
        for clip in clips:
            try:
                loaded = load_audio(_audio_ref(clip), self.options.audio_rate, self.options.audio_window_s)
            except AudioError as e:
                return PreparedRequest(None, dt_task, until, task_gk, error=f"audio: {e}")
            audio.append(loaded.audio)
            warnings.extend(loaded.warnings)
        messages = _messages(context)
        settings = self.options.prompt
        if dt_task:  # exactly dt-eval run's prompt: the task text plus the family's thinking setup
            text = _last_user_text(messages)
            messages, kwargs = compose_messages(text, settings, task_config(dt_task).prompt.system, n_audio=len(audio))
        else:
            kwargs = dict(settings.chat_template_kwargs_on if settings.thinking == "on"
                          else settings.chat_template_kwargs_off)
            if audio:
                last = messages[-1]
                parts = [{"type": "audio"} for _ in audio] + [{"type": "text", "text": _last_user_text(messages)}]
                messages = messages[:-1] + [{**last, "content": parts}]
        sampling = self._sampling(gk, bool(dt_task), repeat)
        req = GenerationRequest(key=key, messages=messages, audio=audio, sampling=sampling,
                                chat_template_kwargs=kwargs)
        return PreparedRequest(req, dt_task, until, task_gk, warnings=warnings)

    def _sampling(self, gk: dict[str, Any], dt_task: bool, repeat: int) -> SamplingConfig:
        s = replace(self.options.sampling, extra=dict(self.options.sampling.extra))
        s.seed = (self.options.seed if s.seed is None else s.seed) + repeat
        if dt_task:
            return s  # identical to dt-eval run
        budget = gk.get("max_gen_toks") or gk.get("max_tokens")
        if budget:  # a thinking model needs its own budget on top of the task's answer budget
            s.max_tokens = max(s.max_tokens, int(budget))
        if self.task_sampling:
            if gk.get("do_sample") is False:
                s.temperature = 0.0
            if gk.get("temperature") is not None:
                s.temperature = float(gk["temperature"])
            if gk.get("top_p") is not None:
                s.top_p = float(gk["top_p"])
            if gk.get("top_k") is not None:
                s.top_k = int(gk["top_k"])
        return s

    async def _generate_all(self, requests: list[Any], disable_tqdm: bool) -> list[str]:
        from tqdm import tqdm

        out: list[str | None] = [None] * len(requests)
        seen: dict[tuple, int] = {}
        todo: list[GenerationRequest] = []
        meta: dict[str, tuple[int, Any, PreparedRequest, int]] = {}
        for i, inst in enumerate(requests):
            ident = (inst.task_name, inst.doc_id, inst.idx)
            repeat = seen.get(ident, 0)  # lm-eval repeats a request by listing it again
            seen[ident] = repeat + 1
            key = f"{inst.task_name}/{inst.doc_id}/{inst.idx}/{repeat}"
            prep = self._prepare(inst, key, repeat)
            if self._recorder is not None:
                cached = self._recorder.lookup(inst, repeat, prep)
                if cached is not None:
                    out[i] = self._returned(cached, prep)
                    continue
            if prep.request is None:
                gen = Generation(key=key, error=prep.error)
                out[i] = self._finish(i, inst, repeat, prep, gen)
                continue
            todo.append(prep.request)
            meta[key] = (i, inst, prep, repeat)
        bar = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=disable_tqdm,
                   desc="dt-audio requests")
        try:
            if todo:
                async for gen in self.backend.generate(todo):
                    i, inst, prep, repeat = meta.pop(gen.key)
                    out[i] = self._finish(i, inst, repeat, prep, gen)
                    bar.update(1)
            for key, (i, inst, prep, repeat) in meta.items():  # a backend that dropped one
                out[i] = self._finish(i, inst, repeat, prep, Generation(key=key, error="backend returned no result"))
        finally:
            bar.close()
        return [o if o is not None else "" for o in out]

    def _returned(self, gen: Generation, prep: PreparedRequest) -> str:
        if gen.error:
            return ""
        if prep.dt_task:
            return pack_generation(gen.text or "", gen.reasoning)
        return answer_only(gen, prep.until)

    def _finish(self, i: int, inst: Any, repeat: int, prep: PreparedRequest, gen: Generation) -> str:
        returned = self._returned(gen, prep)
        if gen.error:
            log.warning("dt-audio: %s doc %s failed: %s", inst.task_name, inst.doc_id, gen.error)
        if self._recorder is not None:
            self._recorder.store(inst, repeat, prep, gen, returned)
        if self._reasoning_log is not None:
            reasoning, _, truncated = split_reasoning(gen.text or "", gen.reasoning)
            line = {"task": inst.task_name, "doc_id": inst.doc_id, "repeat": repeat, "reasoning": reasoning,
                    "truncated": truncated, "output": gen.text, "returned": returned,
                    "finish_reason": gen.finish_reason, "error": gen.error}
            with self._reasoning_log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return returned

    def close(self) -> None:
        lt, self._own_loop = self._own_loop, None
        if lt is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.backend.aclose(), lt.loop).result(timeout=10)
        except Exception:
            pass
        lt.stop()


class _LoopThread:
    """An event loop of our own for the lm_eval command (its evaluator is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dt-audio-loop", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _audio_ref(clip: Any) -> AudioRef:
    """lm-eval hands audio as HF-style dicts ({array, sampling_rate} or {path, bytes}) or paths."""
    if isinstance(clip, (str, Path)):
        return AudioRef(path=str(clip))
    if isinstance(clip, dict):
        if clip.get("array") is not None:
            return AudioRef(array=clip["array"], sampling_rate=clip.get("sampling_rate"))
        if clip.get("bytes"):
            return AudioRef(path=clip.get("path"), data=clip["bytes"])
        if clip.get("path"):
            return AudioRef(path=str(clip["path"]))
    raise AudioError(f"unsupported audio value from doc_to_audio: {type(clip).__name__}")


def _messages(context: str) -> list[dict[str, Any]]:
    """lm-eval's context: plain text, or the JSON chat history from apply_chat_template."""
    if context.startswith("[{"):
        try:
            msgs = json.loads(context)
            if isinstance(msgs, list) and all(isinstance(m, dict) and "role" in m for m in msgs):
                return msgs
        except ValueError:
            pass
    return [{"role": "user", "content": context}]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


register()
