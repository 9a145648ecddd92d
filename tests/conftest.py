"""Shared fixtures: tiny offline Qwen2-Audio models and fake benchmark directories."""

from __future__ import annotations

from pathlib import Path

import pytest


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        pytest.skip(f"tiny model needs torch + transformers: {type(exc).__name__}: {exc}")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Random tiny Qwen2-Audio (model + processor dir); built once, cached across sessions."""
    _require_torch()
    from dt_eval.testing.tiny_qwen2audio import cached_tiny_model

    return cached_tiny_model(deterministic=False)


@pytest.fixture(scope="session")
def det_model_dir() -> Path:
    """Deterministic tiny Qwen2-Audio: greedy output is TARGET_RISING / TARGET_FALLING
    (+ ``<|im_end|>``) for rising / falling pitch sweeps. Cached across sessions."""
    _require_torch()
    import os

    if os.environ.get("DT_EVAL_DET_MODEL"):  # a prebuilt one (e.g. a CI cache)
        return Path(os.environ["DT_EVAL_DET_MODEL"])
    from dt_eval.testing.tiny_qwen2audio import cached_tiny_model

    try:
        return cached_tiny_model(deterministic=True)
    except RuntimeError as exc:  # the short CPU fine-tune verifies itself and refuses to save
        pytest.skip(f"the deterministic tiny model did not pass its own check on this machine: {exc}")


@pytest.fixture
def fake_bench(tmp_path_factory):
    """Factory ``make(task, n=8, seed=0) -> Path`` of a fake MMAU/MMAR/MMSU directory."""
    from dt_eval.testing.synth_audio import make_fake_benchmark

    def make(task: str, n: int = 8, seed: int = 0) -> Path:
        return make_fake_benchmark(tmp_path_factory.mktemp(f"fake-{task}"), task, n, seed=seed)

    return make


@pytest.fixture(autouse=True)
def _fresh_task_search_path():
    """`--tasks-dir` adds folders to a process-wide search path: in-process CLI calls of one test
    must not leave them to the next."""
    from dt_eval.tasks import config

    before = list(config._extra_dirs)
    yield
    config._extra_dirs[:] = before
