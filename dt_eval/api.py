"""dt-eval as a library: the runs and scores of the command line, from Python (a script, a
training loop, a notebook cell). The `dt-eval` commands are thin layers over these functions.

    import dt_eval

    res = dt_eval.evaluate("mmau,mmar", "Qwen/Qwen2-Audio-7B-Instruct",
                           base_urls="http://127.0.0.1:8000/v1", data_dirs={"mmau": "/data/MMAU"})
    res.tasks["mmau"].accuracy          # percent, official match on the extracted answers
    res.tasks["mmau"].errors            # failed samples (counted as wrong answers)
    res.samples[0].extracted.answer_text

Everything heavy (torch, transformers, vllm, lm-eval; even asyncio) loads inside the call that
needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dt_eval.errors import BackendStartError, DtEvalError, UsageError

if TYPE_CHECKING:
    from dt_eval.config import RunOptions
    from dt_eval.records import RunResults
    from dt_eval.scoring.submission import ScoreReport

T = TypeVar("T")

# The options of evaluate() beyond its named arguments (the `dt-eval run` flags), with defaults.
RUN_OPTIONS: dict[str, Any] = {
    "concurrency": 32,  # requests in flight (openai backend)
    "batch_size": 8,  # hf, vllm backends
    "gen_kwargs": None,  # sampling overrides: "temperature=0.6,top_p=0.95" or a dict
    "thinking": "on",  # on: let the model reason first; off: answer directly
    "preset": None,  # model family preset (serve/presets); detected from the model name when None
    "system_prompt": None,
    "seed": 0,  # base seed; repeat r uses seed + r
    "retry_errors": False,  # redo samples that failed, on resume
    "audio_window": None,  # trim clips to this many seconds (default: the family's; 0 = never)
    "timeout": 600.0,  # seconds per request (openai)
    "max_retries": 4,  # per request on timeouts / 5xx / malformed replies (openai)
    "device": None,  # hf backend: cpu, cuda, cuda:1 ...
    "dtype": None,  # hf/vllm: float32, bfloat16, float16, auto
    "progress": True,  # a live progress bar
    "cot": None,  # reasoning scorers to run after inference: "hybrid,rubrics", "all", ...
    "judge_url": None,  # OpenAI-compatible judge endpoint(s) for cot
    "judge_model": None,  # default: gpt-4o-2024-11-20 (the MMAR-Rubrics challenge's judge)
    "embedder": None,  # sentence-transformers model for cot (default: offline all-MiniLM-L6-v2)
    "lm_eval_include_path": None,  # extra lm-eval task configs for lm-eval:NAME tasks
    "logprobs": None,  # K: record each token's log-probability and entropy (K top alternatives from servers)
    "backend_options": None,  # backend-specific extras (BackendSettings.options), e.g. {"engine_args": {...}}
    "on_event": None,  # a callable given the run's messages (warnings, resume notes) instead of stderr
}


# ---------------------------------------------------------------------------------- running


def run_blocking(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end from synchronous code. With no event loop running this is
    `asyncio.run`; inside a running loop (a Jupyter cell, an async framework) the coroutine runs
    on its own loop in a worker thread while this thread waits: a running loop cannot be
    re-entered. Ctrl-C while waiting cancels the coroutine (its clean-up runs) and re-raises."""
    import asyncio  # here, not at the top: `dt-eval score` never runs a loop
    import threading

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(make))
    box: dict[str, Any] = {}
    started, finished = threading.Event(), threading.Event()

    async def main() -> T:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await make()

    def target() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread as it is
            box["error"] = e
        finally:
            started.set()
            finished.set()

    worker = threading.Thread(target=target, name="dt-eval-run", daemon=True)
    worker.start()
    try:
        # an Event, not worker.join(): an interrupted join() marks the thread finished while it
        # still runs (CPython 3.11/3.12), and the second join below would return at once
        finished.wait()
    except KeyboardInterrupt:
        started.wait()
        if "task" in box:
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        finished.wait()  # the run's clean-up: finished records written, files closed
        raise
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


# ---------------------------------------------------------------------------------- evaluate


@dataclass
class RunPlan:
    """A validated run: the options the runner takes and what to do after it."""

    opts: RunOptions
    backend_options: dict[str, Any] = field(default_factory=dict)
    cot: list[str] = field(default_factory=list)
    judge_url: list[str] | None = None
    judge_model: str | None = None
    embedder: str | None = None
    on_event: Callable[[str], None] | None = None
    command: list[str] | None = None

    def say(self, msg: str) -> None:
        if self.on_event is not None:
            self.on_event(msg)
        else:
            import sys

            print(msg, file=sys.stderr)

    def make_backend(self):
        """The backend from the registry (built-in or plugin), given everything the run knows."""
        from dt_eval.backends import BackendSettings, create_backend

        o = self.opts
        settings = BackendSettings(model=o.model, base_urls=list(o.base_urls), concurrency=o.concurrency,
                                   batch_size=o.batch_size, timeout_s=o.timeout_s, max_retries=o.max_retries,
                                   device=o.device, dtype=o.dtype, preset=o.preset,
                                   options=dict(self.backend_options))
        try:
            return create_backend(o.backend, settings)
        except (ValueError, OSError, ImportError) as e:
            raise BackendStartError(f"cannot start the {o.backend} backend: {e}") from e


def _names(values: str | Sequence[str] | None) -> list[str]:
    """"a,b" / ["a", "b,c"] -> ["a", "b", "c"]."""
    if values is None:
        return []
    parts = [values] if isinstance(values, (str, Path)) else list(values)
    return [x.strip() for p in parts for x in str(p).split(",") if x.strip()]


def _data_dirs(data_dirs: str | Path | Mapping[str, str | Path] | None) -> dict[str, str]:
    if data_dirs is None:
        return {}
    if isinstance(data_dirs, (str, Path)):
        return {"*": str(data_dirs)}
    if isinstance(data_dirs, Mapping):
        return {str(k): str(v) for k, v in data_dirs.items()}
    raise UsageError(f"data_dirs must be a directory or a mapping task -> directory, not {type(data_dirs).__name__}")


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"the options are: {', '.join(RUN_OPTIONS)}")
    return {**RUN_OPTIONS, **options}


def _api_command(tasks: list[str], model: str, backend: str, arguments: Mapping[str, Any]) -> list[str]:
    """What config.json records as the command of a run started from Python: the call's arguments
    that differ from the defaults (the runner masks credentials in it)."""
    shown = [f"{k}={v}" for k, v in arguments.items()
             if k != "on_event" and v is not None and v != RUN_OPTIONS.get(k)]
    return ["dt_eval.evaluate", f"tasks={','.join(tasks)}", f"model={model}", f"backend={backend}", *shown]


def plan_run(tasks: str | Sequence[str], model: str, *, backend: str = "openai",
             base_urls: str | Sequence[str] | None = None,
             data_dirs: str | Path | Mapping[str, str | Path] | None = None, limit: int | None = None,
             repeats: int = 1, output: str | Path | None = None, command: list[str] | None = None,
             **options: Any) -> RunPlan:
    """Check every argument of a run before anything is started and turn them into RunOptions
    (see `evaluate`). Bad values raise UsageError; unknown tasks UnknownTaskError."""
    from dt_eval.backends import backend_factory, backend_names
    from dt_eval.config import apply_gen_kwargs, options_from_preset, parse_gen_kwargs
    from dt_eval.integrations.lmeval import is_lm_eval_task
    from dt_eval.tasks.config import load_task

    o = _check_options(options)
    task_list = _names(tasks)
    if not task_list:
        raise UsageError("no tasks given (e.g. tasks='mmau,mmar'; see `dt-eval tasks`)")
    if not model:
        raise UsageError("no model given")
    notes: list[str] = []  # said once the plan is made
    cot = []
    if o["cot"]:
        from dt_eval.reasoning.rescore import RescoreError, check_options

        try:
            cot = check_options(o["cot"], _names(o["judge_url"]) or None)
        except RescoreError as e:
            raise UsageError(str(e)) from None
    if backend not in backend_names(plugins=False):  # a built-in's module loads when the backend is made
        try:
            backend_factory(backend)  # UnknownBackendError names the known ones; plugins are scanned only here
        except ImportError as e:  # a plugin's entry point that does not load
            raise UsageError(f"backend {backend!r}: {e}") from None
    if o["backend_options"] is not None and not isinstance(o["backend_options"], Mapping):
        raise UsageError(f"backend_options must be a mapping, not {type(o['backend_options']).__name__}")
    if o["thinking"] not in ("on", "off"):
        raise UsageError("thinking must be on or off")
    for name in ("repeats", "concurrency", "batch_size"):
        value = repeats if name == "repeats" else o[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UsageError(f"limit must be an integer >= 1, got {limit!r}")
    k = o["logprobs"]
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise UsageError(f"logprobs must be an integer >= 1 (top alternatives per token: the entropy needs them), "
                         f"got {k!r}")
    lm_tasks = [t for t in task_list if is_lm_eval_task(t)]
    if lm_tasks:
        from dt_eval.integrations.lmeval.textrun import check_lm_eval_tasks

        check_lm_eval_tasks(lm_tasks, o["lm_eval_include_path"])
        if repeats > 1:
            notes.append("note: --repeats applies to dt-eval's tasks; lm-eval tasks use their own `repeats` setting")
    for t in task_list:
        if not is_lm_eval_task(t):
            load_task(t)  # UnknownTaskError names the known tasks
    try:
        opts = options_from_preset(tasks=task_list, model=model, backend=backend, preset=o["preset"],
                                   thinking=o["thinking"], system_prompt=o["system_prompt"],
                                   audio_window=o["audio_window"])
        gen = o["gen_kwargs"]
        overrides = dict(gen) if isinstance(gen, Mapping) else parse_gen_kwargs(gen)
        opts.sampling = apply_gen_kwargs(opts.sampling, overrides)
    except DtEvalError:  # an unknown preset
        raise
    except ValueError as e:  # a bad gen_kwargs
        raise UsageError(str(e)) from None
    opts.output = Path(output) if output is not None else Path("runs") / Path(model.rstrip("/")).name
    opts.base_urls = _names(base_urls)
    opts.limit, opts.repeats, opts.concurrency, opts.batch_size = limit, repeats, o["concurrency"], o["batch_size"]
    opts.data_dirs, opts.seed, opts.retry_errors = _data_dirs(data_dirs), o["seed"], bool(o["retry_errors"])
    opts.timeout_s, opts.max_retries, opts.device, opts.dtype = o["timeout"], o["max_retries"], o["device"], o["dtype"]
    opts.progress = bool(o["progress"])
    opts.lm_eval_include_path = o["lm_eval_include_path"]
    opts.logprobs = k
    if repeats > 1 and opts.sampling.temperature == 0:
        notes.append("warning: --repeats with temperature 0 gives identical samples; set --gen-kwargs temperature=...")
    if command is None:
        command = _api_command(task_list, model, backend, {
            "base_urls": ",".join(opts.base_urls) or None, "data_dirs": opts.data_dirs or None, "limit": limit,
            "repeats": repeats if repeats != 1 else None, "output": str(opts.output), **options})
    plan = RunPlan(opts=opts, backend_options=dict(o["backend_options"] or {}), cot=cot,
                   judge_url=_names(o["judge_url"]) or None, judge_model=o["judge_model"], embedder=o["embedder"],
                   on_event=o["on_event"], command=command)
    for note in notes:
        plan.say(note)
    return plan


async def run_plan(plan: RunPlan) -> RunResults:
    """Run a planned run (and its reasoning scorers); see `evaluate_async`. The backend is made
    (for hf and vllm: the model loaded) only after the tasks, their data and the run directory
    were checked, and only when some sample is still to be generated."""
    from dt_eval.pipeline.runner import Runner

    runner = Runner(plan.opts, on_event=plan.say, command=plan.command, make_backend=plan.make_backend)
    results = await runner.execute()
    if plan.cot:
        await _score_reasoning(plan, results)
    return results


async def _score_reasoning(plan: RunPlan, results: RunResults) -> None:
    """After inference: score the reasoning and put the aggregates in `results`. A scoring
    failure is reported, never raised: the (saved) inference stands."""
    from dt_eval.reasoning.judge import DEFAULT_JUDGE_MODEL
    from dt_eval.reasoning.rescore import RescoreError, arescore_run
    from dt_eval.util.redact import redact_text

    try:
        aggregates = await arescore_run(plan.opts.output, plan.cot, plan.judge_url,
                                        plan.judge_model or DEFAULT_JUDGE_MODEL, plan.embedder, say=plan.say)
    except (RescoreError, ValueError, OSError) as e:
        plan.say(f"error: reasoning scoring failed: {redact_text(str(e))}; inference results are saved. "
                 f"Retry with: dt-eval rescore {plan.opts.output} --cot {','.join(plan.cot)}")
        return
    for task, agg in aggregates.items():
        if task in results.tasks:
            results.tasks[task] = results.tasks[task].model_copy(update={"cot": agg})


async def evaluate_async(tasks: str | Sequence[str], model: str, *, backend: str = "openai",
                         base_urls: str | Sequence[str] | None = None,
                         data_dirs: str | Path | Mapping[str, str | Path] | None = None, limit: int | None = None,
                         repeats: int = 1, output: str | Path | None = None, **options: Any) -> RunResults:
    """`evaluate` for async code: `await dt_eval.evaluate_async(...)` (same arguments)."""
    plan = plan_run(tasks, model, backend=backend, base_urls=base_urls, data_dirs=data_dirs, limit=limit,
                    repeats=repeats, output=output, **options)
    return await run_plan(plan)


def evaluate(tasks: str | Sequence[str], model: str, *, backend: str = "openai",
             base_urls: str | Sequence[str] | None = None,
             data_dirs: str | Path | Mapping[str, str | Path] | None = None, limit: int | None = None,
             repeats: int = 1, output: str | Path | None = None, **options: Any) -> RunResults:
    """Run a model over tasks: the same run as `dt-eval run`, in the same run directory.

    tasks: "mmau,mmar", ["mmau", "mmsu"], or lm-eval's tasks as "lm-eval:NAME".
    model: a hub id or local path (openai backend: the served model name).
    backend: "openai" (any OpenAI-compatible server; give `base_urls`), "hf" (transformers,
        in process), "vllm" (in-process engine), or a registered plugin's name
        (dt_eval.backends.register_backend, or the `dt_eval.backends` entry-point group).
    base_urls: the server URL(s), "http://127.0.0.1:8000/v1" or a list (the load is shared).
    data_dirs: a benchmark directory for all tasks, or {"mmau": DIR, ...}; default: the task's
        environment variable, else the Hugging Face hub.
    limit: only the first N items of each task. repeats: samples per item (mean ± std, pass@k,
        majority vote; set a temperature with gen_kwargs).
    output: the run directory (default runs/<model name>). Calling again with the same
        arguments resumes: finished samples are read back, never generated twice.
    **options: concurrency, batch_size, gen_kwargs (str or dict), thinking ("on"/"off"), preset,
        system_prompt, seed, retry_errors, audio_window, timeout, max_retries, device, dtype,
        progress, cot, judge_url, judge_model, embedder, lm_eval_include_path, logprobs (K:
        each sample records its tokens' log-probabilities and entropies, for
        `dt_eval.analyze.tokens`; servers are asked for the K most likely alternatives, the hf
        backend computes exact entropies), backend_options (BackendSettings.options for the
        backend's factory), on_event (a callable given the run's messages instead of stderr);
        see RUN_OPTIONS.

    Returns RunResults: `.tasks["mmau"].accuracy` (percent), its breakdowns and counts, and
    `.samples` (typed SampleRecords). Failed samples do not raise: they are error records,
    counted in `.tasks[t].errors` (and as wrong answers). Bad arguments raise UsageError, bad
    data or run directories another DtEvalError, before anything is generated.

    Works from plain Python and inside a running event loop (a notebook cell): there the run
    goes to a worker thread with its own loop.
    """
    plan = plan_run(tasks, model, backend=backend, base_urls=base_urls, data_dirs=data_dirs, limit=limit,
                    repeats=repeats, output=output, **options)
    return run_blocking(lambda: run_plan(plan))


# ---------------------------------------------------------------------------------- reading, scoring


def load_run(run_dir: str | Path) -> RunResults:
    """A run directory's results, recomputed from its samples.jsonl (and cot.jsonl): the same
    numbers `dt-eval report` prints. Reads runs written by every dt-eval release; never writes."""
    from dt_eval.reporting.results import load_run as _load

    return _load(run_dir)


def score_file(task: str, predictions: str | Path, *, extract: bool = False, strict: bool = False) -> ScoreReport:
    """Score a submission file exactly as the benchmark's official script does (`dt-eval score`).

    task: a task name (see `dt-eval tasks`) or a task YAML path. extract: also read the final
    answer out of full model outputs first (the report then holds both numbers). strict: refuse
    records the official script silently drops instead of scoring them its way.
    Returns a ScoreReport: `.accuracy` (percent), `.breakdowns`, `.official_lines()`,
    `.stdout_lines()`, `.to_json()`."""
    from dt_eval.scoring.submission import read_prediction_file, score_records
    from dt_eval.tasks.config import load_task

    cfg = load_task(task)
    records = read_prediction_file(Path(predictions), reader=cfg.submission_reader)
    return score_records(cfg, records, extract_answers=extract, strict=strict)


async def rescore_async(run_dir: str | Path, cot: str | Sequence[str] = "hybrid", *,
                        judge_url: str | Sequence[str] | None = None, judge_model: str | None = None,
                        embedder: Any = None, on_event: Callable[[str], None] | None = None,
                        **kwargs: Any) -> dict[str, dict[str, Any]]:
    """`rescore` for async code (same arguments)."""
    from dt_eval.reasoning.judge import DEFAULT_JUDGE_MODEL
    from dt_eval.reasoning.rescore import arescore_run

    return await arescore_run(run_dir, cot, _names(judge_url) or None, judge_model or DEFAULT_JUDGE_MODEL,
                              embedder, say=on_event, **kwargs)


def rescore(run_dir: str | Path, cot: str | Sequence[str] = "hybrid", *,
            judge_url: str | Sequence[str] | None = None, judge_model: str | None = None, embedder: Any = None,
            on_event: Callable[[str], None] | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Score the reasoning of a finished run without re-running inference (`dt-eval rescore`).

    cot: scorers, "hybrid,rubrics" or a list: hybrid, stage2, embedding, evaluator, consistency,
    format, rubrics, or "all". The judge scorers need `judge_url` (an OpenAI-compatible /v1 URL;
    key from $DT_EVAL_JUDGE_API_KEY or $OPENAI_API_KEY); format needs nothing.
    Appends per-sample scores to RUN_DIR/cot.jsonl and merges aggregates into results.json;
    `load_run(run_dir).tasks[t].cot` then holds every scorer the run has. Further keyword
    arguments are those of dt_eval.reasoning.rescore.arescore_run (weight, references, tasks,
    judge_concurrency, ...).
    Returns {task: aggregates of the scorers this call ran}. Works inside a running event loop.
    """
    return run_blocking(lambda: rescore_async(run_dir, cot, judge_url=judge_url, judge_model=judge_model,
                                              embedder=embedder, on_event=on_event, **kwargs))
