"""dt-eval: evaluation harness for audio reasoning language models.

Official-faithful MMAU / MMAR / MMSU scores, thinking-aware inference, resumable runs, and
reasoning-quality scores, from the `dt-eval` command or from Python:

    import dt_eval

    res = dt_eval.evaluate("mmau", "Qwen/Qwen3-Omni-30B-A3B-Thinking", base_urls="http://127.0.0.1:8000/v1",
                           data_dirs={"mmau": "/data/MMAU"}, output="runs/q3o-thinking")
    res.tasks["mmau"].accuracy           # percent; .official_raw, .breakdowns, .errors, .unparsed ...
    res.samples                          # typed SampleRecords

    dt_eval.load_run("runs/q3o-thinking")                  # recomputed from samples.jsonl
    dt_eval.score_file("mmau", "predictions.json")        # as the official script scores it
    dt_eval.rescore("runs/q3o-thinking", cot="format")     # reasoning scores, no re-inference
    res.tasks["mmau"].accuracy_ci        # 95% CI (Wilson) and .stderr, percent
    dt_eval.compare_runs(["runs/a", "runs/b"])            # paired: diff with CI, p, flips

What training changed, across checkpoints (runs made with `logprobs=K` also give token entropies):

    dt_eval.analyze.tokens(["runs/step-0", "runs/step-100"], output="analysis/tokens")
    dt_eval.analyze.gating("Qwen/Qwen3-Omni-30B-A3B-Thinking", ["ckpt/step-200"], tasks="mmar",
                           output="analysis/gating")          # MoE routing shift by layer

`await dt_eval.evaluate_async(...)` takes the same arguments; `evaluate` also works inside a
running event loop (a notebook cell). Errors dt-eval raises for bad input derive from
`DtEvalError` (bad arguments: `UsageError`).

Attributes load on first use, so `import dt_eval` stays cheap.
"""

__version__ = "0.2.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "evaluate": "dt_eval.api",
    "evaluate_async": "dt_eval.api",
    "load_run": "dt_eval.api",
    "score_file": "dt_eval.api",
    "rescore": "dt_eval.api",
    "rescore_async": "dt_eval.api",
    "compare_runs": "dt_eval.reporting.compare",
    "RunComparison": "dt_eval.reporting.compare",
    "RunResults": "dt_eval.records",
    "TaskResults": "dt_eval.records",
    "RepeatResults": "dt_eval.records",
    "AccuracyInterval": "dt_eval.records",
    "SampleRecord": "dt_eval.records",
    "ExtractedAnswer": "dt_eval.records",
    "RunConfig": "dt_eval.records",
    "ScoreReport": "dt_eval.scoring.submission",
    "DtEvalError": "dt_eval.errors",
    "UsageError": "dt_eval.errors",
}

_SUBMODULES = ("analyze",)  # `dt_eval.analyze.tokens(...)` after a plain `import dt_eval`

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"dt_eval.{name}")  # importing it sets the attribute
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dt_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
