"""Extension points, each exercised with the small plugins of tests/plugins.py: a backend, an
official scorer and a reasoning scorer, registered in-process and (in a subprocess) found through
the entry points of a separate distribution on sys.path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dt_eval.backends import (
    BackendSettings,
    UnknownBackendError,
    backend_names,
    create_backend,
    register_backend,
    unregister_backend,
)
from dt_eval.backends import registry as backend_registry
from dt_eval.reasoning.registry import (
    CotScorer,
    cot_help,
    get_cot_scorer,
    register_cot_scorer,
    unregister_cot_scorer,
)
from dt_eval.reasoning.rescore import (
    COT_FILE,
    RescoreError,
    check_options,
    parse_cot,
    rescore_run,
)
from dt_eval.scoring.registry import (
    UnknownScorerError,
    get_scorer,
    register_scorer,
    unregister_scorer,
)
from dt_eval.scoring.scorers import OfficialScorer
from dt_eval.scoring.submission import score_records
from dt_eval.tasks.config import TaskConfigError, load_task
from dt_eval.testing.synth_audio import make_fake_benchmark

from .cli import invoke
from .paths import REPO
from .plugins import LetterExactScorer, ReasoningLengthScorer, create_echo_backend

PLUGIN_MODULE = "dteval_echo_plugin"


@pytest.fixture
def echo_backend():
    register_backend("echo-test", create_echo_backend)
    yield "echo-test"
    unregister_backend("echo-test")


@pytest.fixture
def letter_scorer():
    register_scorer(LetterExactScorer())
    yield "letter_exact"
    unregister_scorer("letter_exact")


def letter_task(folder: Path, name: str = "pitch-letters", scorer: str = "letter_exact") -> Path:
    """A task YAML in the test's folder: MMAU's layout and breakdowns, scored by `scorer`."""
    cfg = yaml.safe_load((REPO / "tasks" / "mmau.yaml").read_text())
    cfg.update(name=name, title="Pitch letters", family={"name": "pitch-letters", "title": "Pitch letters"},
               scorer=scorer, description="synthetic pitch sweeps, scored on the option letter")
    cfg["data"].pop("known_sha256")
    cfg["data"].pop("hub")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_args(task: str, backend: str, bench: Path, run: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", task, "--model", "echo-model", "--backend", backend, "--data-dir", str(bench),
            "--output", str(run), "--no-progress", *extra]


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]


# --------------------------------------------------------------------------------------------
# Backends


def test_backend_registry_names_errors_and_no_scan_for_builtins(monkeypatch):
    backend_registry._REGISTRY.rescan()
    b = create_backend("openai", BackendSettings(model="m", base_urls=["http://127.0.0.1:9/v1"]))
    assert b.describe()["name"] == "openai"
    assert backend_registry._REGISTRY._entry_points is None  # a built-in name never scans the entry points
    with pytest.raises(ValueError, match="needs --base-url"):
        create_backend("openai", BackendSettings(model="m"))
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'nope'; known: hf, openai, vllm"):
        create_backend("nope", BackendSettings(model="m"))
    with pytest.raises(ValueError, match="already registered"):
        register_backend("openai", create_echo_backend)  # a plugin cannot take a built-in name by accident
    assert backend_names(plugins=False)[:3] == ["hf", "openai", "vllm"]


def test_choosing_openai_imports_no_torch():
    code = ("import sys; from dt_eval.backends import create_backend, BackendSettings; "
            "create_backend('openai', BackendSettings(model='m', base_urls=['http://127.0.0.1:9/v1'])); "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_vllm_factory_takes_the_engine_arguments_from_the_family_preset(monkeypatch):
    """The vLLM special case of the CLI lives in the vllm factory: preset flags -> LLM(...) args."""
    from dt_eval.backends import vllm_engine

    got = {}

    class FakeVLLM:
        def __init__(self, model, batch_size, dtype, engine_args):
            got.update(model=model, batch_size=batch_size, dtype=dtype, engine_args=engine_args)

    monkeypatch.setattr(vllm_engine, "VLLMBackend", FakeVLLM)
    create_backend("vllm", BackendSettings(model="Qwen/Qwen2-Audio-7B-Instruct", preset="qwen2-audio",
                                           options={"engine_args": {"gpu_memory_utilization": 0.5}}))
    from dt_eval.tasks.presets import load_preset

    expected = vllm_engine.engine_args_from_preset(load_preset("qwen2-audio"))
    assert expected and got["engine_args"] == {**expected, "gpu_memory_utilization": 0.5}
    assert got["batch_size"] == 256  # the vllm default when the caller gives none


def test_registered_backend_runs_end_to_end(tmp_path, echo_backend):
    bench = make_fake_benchmark(tmp_path / "bench", "mmau", 6, seed=1)
    run = tmp_path / "run"
    res = invoke(run_args("mmau", echo_backend, bench, run))
    assert res.exit_code == 0, res.output
    recs = records(run)
    assert len(recs) == 6 and all(r["backend_info"]["plugin"] == "echo" for r in recs)
    assert all(r["reasoning_text"] == "I hear 1 clip(s)." for r in recs)
    # "(A) rising" is right for the rising sweeps (even items) only
    assert [r["correct"] for r in sorted(recs, key=lambda r: r["index"])] == [True, False] * 3
    config = json.loads((run / "config.json").read_text())
    assert config["backend"] == {"name": "echo-test", "model": "echo-model", "reply": "(A) rising"}
    assert "Total Accuracy: 50.00% over 6 samples" in res.stdout


def test_registered_backend_from_the_python_api_gets_its_options(tmp_path, echo_backend):
    """dt_eval.evaluate chooses a plugin backend by name like `dt-eval run`; backend_options reach
    its factory as BackendSettings.options; the typed config keeps the name and the task config."""
    import dt_eval

    bench = make_fake_benchmark(tmp_path / "bench", "mmau", 4, seed=1)
    res = dt_eval.evaluate("mmau", "echo-model", backend=echo_backend, data_dirs=bench, output=tmp_path / "run",
                           progress=False, backend_options={"reply": "(B) falling"})
    assert [s.reasoning_text for s in res.samples] == ["I hear 1 clip(s)."] * 4
    # "(B) falling" is right for the falling sweeps (odd items) only
    assert [s.correct for s in sorted(res.samples, key=lambda s: s.index)] == [False, True] * 2
    assert res.tasks["mmau"].accuracy == 50.0
    assert res.config.backend_name == echo_backend and res.config.backend["reply"] == "(B) falling"
    assert res.config.tasks["mmau"].task_config["scorer"] == "mcq_official"
    loaded = dt_eval.load_run(tmp_path / "run")  # read back from config.json
    assert loaded.config.tasks["mmau"].task_config == res.config.tasks["mmau"].task_config
    with pytest.raises(dt_eval.UsageError, match="backend_options must be a mapping"):
        dt_eval.evaluate("mmau", "echo-model", backend=echo_backend, data_dirs=bench, output=tmp_path / "r2",
                         backend_options="reply=x")


def test_unknown_backend_is_a_usage_error_naming_the_known_ones(tmp_path):
    res = invoke(run_args("mmau", "nope", tmp_path, tmp_path / "run"))
    assert res.exit_code == 2 and "unknown backend 'nope'; known: hf, openai, vllm" in res.stderr


def plugin_distribution(site: Path) -> Path:
    """tests/plugins.py installed as a separate distribution: a module plus its dist-info."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("plugins.py"), site / f"{PLUGIN_MODULE}.py")
    info = site / "dteval_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dteval-echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [dt_eval.backends]
        echo = {PLUGIN_MODULE}:create_echo_backend

        [dt_eval.scorers]
        letter_exact = {PLUGIN_MODULE}:LetterExactScorer

        [dt_eval.cot_scorers]
        length = {PLUGIN_MODULE}:ReasoningLengthScorer
        """))
    return site


def test_entry_point_plugins_run_end_to_end_in_a_subprocess(tmp_path):
    """A third-party distribution adds a backend, an official scorer and a reasoning scorer
    through entry points only: `dt-eval run --backend echo` on a task YAML whose scorer is the
    plugin's, then `dt-eval rescore --cot length`, each in a fresh process."""
    site = plugin_distribution(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dt_eval.cli", *args], capture_output=True, text=True,
                              timeout=180, cwd=tmp_path, env=env)

    listed = cli("backends")
    assert listed.returncode == 0 and listed.stdout.split("\n")[:4] == ["hf", "openai", "vllm", "echo  (plugin)"]
    bench = make_fake_benchmark(tmp_path / "bench", "mmau", 4, seed=2)
    task = letter_task(tmp_path / "tasks")
    run = tmp_path / "run"
    p = cli(*run_args(str(task), "echo", bench, run))
    assert p.returncode == 0, p.stderr
    recs = records(run)
    assert {r["task"] for r in recs} == {"pitch-letters"} and all(r["backend_info"]["plugin"] == "echo" for r in recs)
    assert [r["correct"] for r in sorted(recs, key=lambda r: r["index"])] == [True, False, True, False]
    config = json.loads((run / "config.json").read_text())
    assert config["backend"]["name"] == "echo" and config["tasks"]["pitch-letters"]["task_config"]["scorer"] == \
        "letter_exact"
    # the plugin's official scorer scored it: the submission's prediction is the letter, not the option text
    out = tmp_path / "sub.json"
    exp = cli("export", str(run), "--task", "pitch-letters", "--out", str(out))
    assert exp.returncode == 0, exp.stderr
    assert [r["model_output"] for r in json.loads(out.read_text())] == ["A"] * 4
    rescored = cli("rescore", str(run), "--cot", "length,format", "--json")
    assert rescored.returncode == 0, rescored.stderr
    agg = json.loads(rescored.stdout)["pitch-letters"]
    assert agg["scorers"] == ["format", "length"]
    assert agg["length"]["mean"] == pytest.approx(4 / 50) and agg["length"]["words"] == 16
    # without the plugin on the path, its names are unknown (and the error says which exist)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    p = cli(*run_args(str(task), "echo", bench, tmp_path / "run2"))
    assert p.returncode == 2 and "unknown backend 'echo'; known: hf, openai, vllm" in p.stderr
    p = cli("report", str(run))  # the run's recorded task config names the plugin's scorer
    assert p.returncode == 2 and "unknown official scorer 'letter_exact'; known: mcq_official, mmsu_official" \
        in p.stderr


# --------------------------------------------------------------------------------------------
# Official scorers


def test_builtin_official_scorers_follow_the_protocol():
    for name in ("mcq_official", "mmsu_official"):
        assert isinstance(get_scorer(name), OfficialScorer)
    assert load_task("mmsu").submission_reader == "jsonl" and load_task("mmau").submission_reader == "json"


def test_unknown_scorer_in_a_task_yaml_lists_the_known_ones(tmp_path):
    path = letter_task(tmp_path, name="bad-scorer", scorer="no_such_rule")
    with pytest.raises(TaskConfigError, match=r"unknown official scorer 'no_such_rule'; known: mcq_official, "
                                              r"mmsu_official"):
        load_task(str(path))
    with pytest.raises(UnknownScorerError):
        get_scorer("no_such_rule")


def test_plugin_official_scorer_chosen_by_the_task_yaml(tmp_path, letter_scorer, echo_backend):
    task = letter_task(tmp_path / "tasks")
    cfg = load_task(str(task))
    assert isinstance(get_scorer(cfg.scorer), LetterExactScorer)
    meta = json.loads((make_fake_benchmark(tmp_path / "b0", "mmau", 4, seed=3) / "mmau-test-mini.json").read_text())
    # the rule itself: the letter of the answer, whatever else the prediction says
    preds = ["A", "(A) rising", "B", "falling"]  # item 0, 2 rising (A); 1, 3 falling (B)
    rep = score_records(cfg, [dict(r, model_output=p) for r, p in zip(meta, preds)])
    assert [i.correct for i in rep.items] == [True, False, False, False]  # only a bare letter is read
    rep = score_records(cfg, [dict(r, model_output=p) for r, p in zip(meta, preds)], extract_answers=True)
    assert [i.correct for i in rep.items] == [True, False, False, True]  # "falling" extracts to B
    assert rep.official_raw.overall.correct == 1
    # end to end, found by name in the test's own folder (--tasks-dir)
    bench = make_fake_benchmark(tmp_path / "bench", "mmau", 4, seed=3)
    run = tmp_path / "run"
    res = invoke(run_args("pitch-letters", echo_backend, bench, run, "--tasks-dir",
                                           str(tmp_path / "tasks")))
    assert res.exit_code == 0, res.output
    by_index = sorted(records(run), key=lambda r: r["index"])
    assert [r["correct"] for r in by_index] == [True, False, True, False]
    assert [r["correct_raw"] for r in by_index] == [False] * 4  # the raw output is not a bare letter
    out = tmp_path / "sub.json"
    res = invoke(["export", str(run), "--task", "pitch-letters", "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = invoke(["score", "--task", str(task), "-p", str(out)])
    assert res.exit_code == 0 and "Total Accuracy: 50.00% over 4 samples" in res.stdout


# --------------------------------------------------------------------------------------------
# Reasoning scorers


def test_plugin_reasoning_scorer_is_listed_run_and_aggregated(tmp_path):
    from .test_cot_support import make_run_dir

    assert "length" not in parse_cot("all")
    scorer = register_cot_scorer(ReasoningLengthScorer())
    try:
        assert isinstance(get_cot_scorer("length"), CotScorer)
        assert parse_cot("all")[-1] == "length" and "length (chain length in words / 50)" in cot_help()
        run = tmp_path / "run"
        samples = make_run_dir(run, n=4)
        agg = rescore_run(run, "length,format", judge_cache=False)["mmar"]
        lines = [json.loads(x) for x in (run / COT_FILE).read_text().splitlines()]
        assert [ln["scorer"] for ln in lines] == ["length"] * 4 + ["format"] * 4
        words = [len(s["reasoning_text"].split()) for s in samples]
        assert [ln["value"] for ln in lines[:4]] == [w / 50 for w in words]
        assert agg["scorers"] == ["format", "length"]
        assert agg["length"]["mean"] == pytest.approx(sum(words) / 50 / 4) and agg["length"]["words"] == sum(words)
        assert lines[0]["judge_model"] is None and agg["length"]["version"] == scorer.version()
        res = invoke(["report", str(run)])
        header = next(line for line in res.stdout.splitlines() if "accuracy" in line and "samples" in line)
        assert res.exit_code == 0 and header.split()[-4:] == ["format", "length", "cot", "unscored"]
    finally:
        unregister_cot_scorer("length")


def test_a_plugin_that_needs_a_judge_is_refused_without_one():
    class NeedsJudge(ReasoningLengthScorer):
        name = "judged-length"
        needs = frozenset({"judge"})

    register_cot_scorer(NeedsJudge())
    try:
        with pytest.raises(RescoreError, match="--cot judged-length needs a judge"):
            check_options("judged-length,format", None)
        assert check_options("judged-length", "http://127.0.0.1:9/v1") == ["judged-length"]
    finally:
        unregister_cot_scorer("judged-length")
    with pytest.raises(ValueError, match="known needs"):
        register_cot_scorer(type("Odd", (ReasoningLengthScorer,), {"name": "odd", "needs": frozenset({"gpu"})})())
