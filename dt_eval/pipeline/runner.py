"""`dt-eval run`: items -> prompts -> backend -> extraction -> scored sample records, resumable.

Resume rule: a (task, item, repeat) key with a record in samples.jsonl is done; records with an
error are redone only with --retry-errors. Records are appended the moment a generation
finishes, so a crash loses only in-flight requests, which the next run generates once.
Extraction, scoring and the append run on worker threads, never on the event loop: a slow
record must not stall the HTTP client and turn other finished requests into timeouts.

Order of work, so that mistakes cost nothing and the first request goes out early: tasks, data
and the run directory are checked first; the backend (a model load, for hf and vllm) is made
only then, and only when some sample is pending; config.json is written just before the first
record (the typed records, pydantic, load while the first requests are in flight).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dt_eval import __version__
from dt_eval.config import RunOptions
from dt_eval.errors import DtEvalError
from dt_eval.pipeline.audio import AudioError, load_audio
from dt_eval.storage.rundir import (
    RunDir,
    RunDirError,
    SamplesError,
    json_text,
    latest_by_key,
)
from dt_eval.tasks.config import TaskConfig, load_task, task_config_record
from dt_eval.tasks.data import LoadedTask, load_task_data
from dt_eval.tasks.prompts import (
    PromptError,
    build_messages,
)
from dt_eval.types import Generation, GenerationRequest, Item, SamplingConfig

if TYPE_CHECKING:  # the typed records (pydantic) load once the first records are built
    from dt_eval.backends.base import Backend
    from dt_eval.records import RunConfig, RunResults, SampleRecord


class RunError(DtEvalError, RuntimeError):
    pass


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Task-config fields that change what the model is asked or how its answers are scored: a resumed
# run must have the same (display fields such as title or family may change).
_ASKED_AND_SCORED = ("scorer", "prediction_key", "answers_available", "fields", "prompt")


def _sample_key(task: str, item_id: str, repeat: int) -> str:
    return f"{task}/{item_id}/{repeat}"


class Runner:
    """One run. Give it a `backend`, or `make_backend` (called once the run is checked and some
    sample is pending: a finished run, or one with a bad task, data or run directory, never loads
    a model)."""

    def __init__(self, opts: RunOptions, backend: Backend | None = None, on_event: Callable[[str], None] | None = None,
                 command: list[str] | None = None, *, make_backend: Callable[[], Backend] | None = None):
        if backend is None and make_backend is None:
            raise ValueError("Runner needs a backend or make_backend")
        self.opts = opts
        self.backend = backend
        self._make_backend = make_backend
        self.command = command  # what config.json records as the command (default: this process's argv)
        self.say = on_event or (lambda msg: print(msg, file=sys.stderr))
        self.rundir = RunDir(opts.output)
        self._previous: RunConfig | None = None  # config.json as the run found it
        self._loaded: dict[str, LoadedTask] = {}
        self._config_written = False
        self._config_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2))
        self._audio_warned: set[str] = set()  # audio warning kinds already shown on stderr
        self._logprobs_warned = False
        # several workers, so one slow record does not hold up the others' appends
        self._record_workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dt-eval-record")

    # ------------------------------------------------------------ config and resume
    def _config(self, loaded: dict[str, LoadedTask], previous: RunConfig | None) -> RunConfig:
        import platform

        from dt_eval.records import RunConfig, TaskInfo
        from dt_eval.util.redact import redact_argv

        tasks = dict(previous.tasks) if previous else {}
        for name, lt in loaded.items():
            # the task config as loaded: report, export and leaderboard read it, not the YAML
            tasks[name] = TaskInfo(**lt.to_json(), limit=self.opts.limit, repeats=self.opts.repeats,
                                   task_config=task_config_record(lt.config))
        if self.backend is not None:
            described = dict(self.backend.describe())
        else:  # nothing was pending: the backend that made the samples is the one on record
            described = dict(previous.backend) if previous else {}
        described.setdefault("name", self.opts.backend)  # a plugin's describe() may leave it out
        return RunConfig(
            dt_eval_version=__version__,
            git_hash=git_hash(),
            created=previous.created if previous else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            identity=self.opts.identity(),
            backend=described,
            preset=self.opts.preset,
            concurrency=self.opts.concurrency,
            tasks=tasks,
            command=redact_argv(self.command or sys.argv),  # no --base-url user:password, no --api-key value
            python=platform.python_version(),
        )

    def _check_resume(self, previous: RunConfig, loaded: dict[str, LoadedTask]) -> None:
        before, now = previous.identity, self.opts.identity()
        diff = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if diff:
            raise RunError(
                f"{self.opts.output} holds a run with different settings ({', '.join(diff)} differ); "
                "use another --output, or rerun with the original settings to resume"
            )
        for name, lt in loaded.items():
            old = previous.tasks.get(name)
            if old and old.sha256 != lt.sha256:
                raise RunError(
                    f"{name}: the data changed since this run started (metadata sha256 {(old.sha256 or '')[:12]}… -> "
                    f"{lt.sha256[:12]}…); numbers on different files are not comparable: use another --output"
                )
            before_cfg = old.task_config if old else None
            if isinstance(before_cfg, dict):
                now_cfg = task_config_record(lt.config)
                changed = [k for k in _ASKED_AND_SCORED if before_cfg.get(k) != now_cfg.get(k)]
                if changed:
                    raise RunError(
                        f"{name}: the task config changed since this run started ({', '.join(changed)} differ); "
                        "samples asked or scored another way are not comparable: use another --output"
                    )

    # ------------------------------------------------------------ main entry
    async def run(self) -> dict[str, Any]:
        """Run (or resume) and return results.json's content."""
        return (await self.execute()).to_json_dict()

    async def execute(self) -> RunResults:
        """Run (or resume); the typed results, with the run's config and sample records."""
        from dt_eval.integrations.lmeval import is_lm_eval_task

        opts = self.opts
        lm_tasks = [name for name in opts.tasks if is_lm_eval_task(name)]
        configs: dict[str, TaskConfig] = {}
        for name in opts.tasks:
            if is_lm_eval_task(name):
                continue
            cfg = load_task(name)  # a YAML path runs as the task it names
            if cfg.name in configs and configs[cfg.name] != cfg:
                raise RunError(f"two different task configs are named {cfg.name!r}")
            configs[cfg.name] = cfg
        loaded: dict[str, LoadedTask] = {}
        for name, cfg in configs.items():
            data_dir = opts.data_dirs.get(name) or opts.data_dirs.get("*")
            lt = load_task_data(cfg, data_dir, limit=opts.limit)
            for w in lt.warnings:
                self.say(f"warning: {w}")
            loaded[name] = lt
        self._loaded = loaded
        fresh = not self.rundir.path.exists()
        try:
            self.rundir.open()
        except RunDirError as e:
            raise RunError(str(e)) from None
        try:
            try:
                previous = self._previous = self.rundir.read_config()
            except RunDirError as e:
                raise RunError(str(e)) from None
            if previous:
                self._check_resume(previous, loaded)
            try:
                records, bad_lines = self.rundir.load_samples()
            except SamplesError as e:
                raise RunError(str(e)) from None
            if bad_lines:
                self.say(f"note: discarded {len(bad_lines)} torn/corrupt line(s) in samples.jsonl "
                         f"(line {', '.join(map(str, bad_lines[:10]))}); those samples will be generated again")
            done = latest_by_key(records)
            todo = {name: self._pending(configs[name], lt, done) for name, lt in loaded.items()}
            if self.backend is None and (lm_tasks or any(todo.values())):
                try:
                    self.backend = self._make_backend()  # everything is checked: now load the model
                except BaseException:
                    if fresh:  # leave no empty run directory behind a backend that did not start
                        self.rundir.close()
                        self.rundir.remove_if_empty()
                    raise
            for name, lt in loaded.items():
                await self._run_task(configs[name], lt, todo[name])
            if lm_tasks:
                self._ensure_config()  # lm-eval's records are appended by its own recorder
                for name in lm_tasks:
                    from dt_eval.integrations.lmeval.textrun import run_lm_eval_task

                    await run_lm_eval_task(self, name, done)
            return self.finalize(configs, loaded)
        finally:
            # records still being built are finished generations: write them before the file closes
            # (on Ctrl-C the ones not started yet are dropped, and generated again on resume)
            self._record_workers.shutdown(wait=True)
            self.rundir.close()
            if self.backend is not None:
                await self.backend.aclose()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_config(self) -> None:
        """Write config.json (once) before the first record: a run directory's samples always come
        with the config they were made with. Called from the record workers and the loop."""
        with self._config_lock:
            if not self._config_written:
                self.rundir.write_config(self._config(self._loaded, self._previous))
                self._config_written = True

    def finalize(self, configs: dict[str, TaskConfig], loaded: dict[str, LoadedTask]) -> RunResults:
        from dt_eval.scoring.aggregate import compute_run_results

        self._ensure_config()  # a run with nothing pending still records this invocation's settings
        records, _ = self.rundir.load_samples()
        results = compute_run_results(self.rundir.read_config(), latest_by_key(records).values())
        self.rundir.write_results(results)
        results.run_dir = str(self.rundir.path)
        return results

    # ------------------------------------------------------------ one task
    def _pending(self, cfg: TaskConfig, lt: LoadedTask, done: dict[str, SampleRecord]) -> list[tuple[int, Item, int]]:
        todo = []
        for r in range(self.opts.repeats):
            for idx, item in enumerate(lt.items):
                rec = done.get(_sample_key(cfg.name, item.id, r))
                if rec is None or (rec.error and self.opts.retry_errors):
                    todo.append((idx, item, r))
        return todo

    async def _run_task(self, cfg: TaskConfig, lt: LoadedTask, todo: list[tuple[int, Item, int]]) -> None:
        total = len(lt.items) * self.opts.repeats
        if not todo:
            self.say(f"{cfg.name}: all {total} samples already done")
            return
        if len(todo) < total:
            self.say(f"{cfg.name}: resuming, {total - len(todo)} of {total} samples already done")
        progress = _Progress(cfg.name, total, total - len(todo), enabled=self.opts.progress)
        chunk = max(1, int(getattr(self.backend, "preferred_batch", 1)))
        in_flight = max(1, (2 * max(self.opts.concurrency, chunk)) // chunk)
        gate = asyncio.Semaphore(in_flight)

        async def one_chunk(part: list[tuple[int, Item, int]]) -> None:
            try:
                prepared = await asyncio.gather(*(self._prepare(cfg, idx, item, r) for idx, item, r in part))
                requests, by_key, writes = [], {}, []

                def finish(idx: int, item: Item, r: int, gen: Generation, warnings: list[str]) -> None:
                    # started now, awaited below: the backend's stream is drained while records are built
                    writes.append(asyncio.ensure_future(self._finish(cfg, idx, item, r, gen, warnings, progress)))

                for (idx, item, r), (req, warnings, error) in zip(part, prepared):
                    key = _sample_key(cfg.name, item.id, r)
                    if error is not None:
                        finish(idx, item, r, Generation(key=key, error=error), warnings)
                        continue
                    requests.append(req)
                    by_key[key] = (idx, item, r, warnings)
                if requests:
                    async for gen in self.backend.generate(requests):
                        idx, item, r, warnings = by_key.pop(gen.key)
                        finish(idx, item, r, gen, warnings)
                for key, (idx, item, r, warnings) in by_key.items():  # a backend that dropped one
                    finish(idx, item, r, Generation(key=key, error="backend returned no result"), warnings)
                await asyncio.gather(*writes)
            finally:
                gate.release()

        tasks = []
        reports = hasattr(self.backend, "on_generated")  # a batched local backend: per sample, mid-batch
        with progress:
            if reports:
                self.backend.on_generated = progress.generated
            try:
                for start in range(0, len(todo), chunk):
                    await gate.acquire()
                    tasks.append(asyncio.create_task(one_chunk(todo[start:start + chunk])))
                await asyncio.gather(*tasks)
            finally:
                if reports:
                    self.backend.on_generated = None

    async def _prepare(self, cfg: TaskConfig, idx: int, item: Item, repeat: int):
        """(request, warnings, None), or (None, warnings, error) when this item cannot be asked."""
        try:
            return await self._prepare_request(cfg, item, repeat)
        except Exception as e:  # whatever goes wrong with one item is that sample's error record
            return None, [], f"bad item: {type(e).__name__}: {e}"

    async def _prepare_request(self, cfg: TaskConfig, item: Item, repeat: int):
        key = _sample_key(cfg.name, item.id, repeat)
        if item.data_error:
            return None, [], f"data: {item.data_error}"
        try:
            messages, kwargs = build_messages(cfg, item, self.opts.prompt)
        except PromptError as e:
            return None, [], f"bad item: {e}"
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(
                self._executor, load_audio, item.audio, self.opts.audio_rate, self.opts.audio_window_s
            )
        except AudioError as e:
            return None, [], f"audio: {e}"
        except Exception as e:  # an unexpected decoder failure is still one item's problem
            return None, [], f"audio: {type(e).__name__}: {e}"
        for kind, text in zip(loaded.warning_kinds, loaded.warnings):  # every one is in the record
            if kind not in self._audio_warned:
                self._audio_warned.add(kind)
                self.say(f"warning: {key}: {text} (shown once; every such clip has it in the `warnings` "
                         "of its samples.jsonl record)")
        sampling = SamplingConfig(**{**self.opts.sampling.to_dict()})
        if sampling.seed is None:
            sampling.seed = self.opts.seed + repeat
        else:
            sampling.seed = sampling.seed + repeat
        req = GenerationRequest(key=key, messages=messages, audio=[loaded.audio], sampling=sampling,
                                chat_template_kwargs=kwargs, logprobs=self.opts.logprobs)
        return req, loaded.warnings, None

    async def _finish(self, cfg: TaskConfig, idx: int, item: Item, repeat: int, gen: Generation,
                      warnings: list[str], progress: _Progress) -> None:
        if self.opts.logprobs and gen.ok and gen.logprobs is None and not self._logprobs_warned:
            self._logprobs_warned = True  # said once: each such record lacks the field
            why = gen.backend_info.get("logprobs_missing") or f"the {self.opts.backend} backend does not record them"
            self.say(f"warning: {gen.key}: no log-probabilities recorded ({why})")
        loop = asyncio.get_running_loop()
        record = await loop.run_in_executor(self._record_workers, self._write_record,
                                            cfg, idx, item, repeat, gen, warnings)
        progress.advance(error=bool(record.error), correct=bool(record.correct), key=gen.key)

    def _write_record(self, cfg: TaskConfig, idx: int, item: Item, repeat: int, gen: Generation,
                      warnings: list[str]) -> SampleRecord:
        """Build and append one sample record (on a worker thread). A record that cannot be
        built or encoded becomes that sample's error record; a failing run directory stops the run."""
        from dt_eval.pipeline.records import sample_record
        from dt_eval.records import SampleRecord

        self._ensure_config()
        try:
            record = sample_record(cfg, idx, item, repeat, gen, warnings, self.opts.prompt)
            self.rundir.append([record])
        except (RunDirError, OSError):
            raise
        except Exception as e:
            error = f"record: {type(e).__name__}: {e}"
            record = sample_record(cfg, idx, item, repeat, dataclasses.replace(gen, error=error), warnings)
            # values JSON cannot hold (a parquet column's odd type) are kept as their repr
            record = SampleRecord.model_validate(json.loads(json_text(record.to_json_dict(), default=repr)))
            self.rundir.append([record])
        return record


class _Progress:
    """A rich progress bar: done / total, errors, accuracy so far, throughput and ETA.

    A sample counts as done when its generation is complete: a batched local backend reports each
    sample the moment it ends (`generated`, from its worker thread), not when the whole batch
    returns; others when the record is written (`advance`). The bar appears a moment after the
    task starts (rich loads while the first requests are on their way) or with the first done
    sample, whichever is first; a task that ends sooner shows it once, finished."""

    START_AFTER_S = 0.1

    def __init__(self, task: str, total: int, done: int, enabled: bool = True):
        self.task, self.total, self.before = task, total, done
        self.counted: set[str] = set()  # keys done in this invocation
        self.errors = self.correct = self.new = 0  # over the records written in this invocation
        self.enabled = enabled
        self._progress: Any = None
        self._id: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.RLock()  # updates come from the loop and from backend worker threads
        self._t0 = time.monotonic()

    @property
    def done(self) -> int:
        return self.before + len(self.counted)

    def __enter__(self) -> _Progress:
        self._t0 = time.monotonic()
        if self.enabled:
            self._timer = asyncio.get_running_loop().call_later(self.START_AFTER_S, self.start)
        return self

    def start(self) -> None:
        with self._lock:
            if not self.enabled or self._progress is not None:
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._id = self._progress.add_task(self.task, total=self.total, completed=self.before, stats="")
            self._show()

    def generated(self, key: str) -> None:
        """`key`'s generation is complete (its record follows)."""
        with self._lock:
            self.counted.add(key)
            self._show(start=True)

    def advance(self, error: bool, correct: bool, key: str | None = None) -> None:
        """A record was written."""
        with self._lock:
            self.counted.add(key if key is not None else f"#record-{self.new}")
            self.new += 1
            self.errors += int(error)
            self.correct += int(correct)
            self._show(start=True)

    def _show(self, start: bool = False) -> None:
        if self._progress is None:
            if start and self.enabled:
                self.start()  # calls _show again
            return
        rate = len(self.counted) / max(time.monotonic() - self._t0, 1e-9)
        acc = f"{self.correct / self.new * 100:.1f}%" if self.new else "-"
        self._progress.update(self._id, completed=self.done,
                              stats=f"errors {self.errors} · acc {acc} · {rate:.2f}/s")

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self.enabled and self._progress is None and exc[0] is None:
                self.start()  # a task shorter than START_AFTER_S: its final state, once
            if self._progress is not None:
                self._progress.stop()
