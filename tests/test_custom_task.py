"""A new benchmark is one YAML file: a task written in the test's own folder (its own family,
title and leaderboard breakdown, the existing MCQ rule, synthetic audio) runs end to end against
a real HTTP server, and `report`, `export`, `score` and the leaderboard pick it up in fresh
processes that no longer have the YAML (the run's config.json holds the task config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dt_eval.backends import register_backend, unregister_backend
from dt_eval.tasks import config as task_config
from dt_eval.testing.synth_audio import make_fake_benchmark

from .cli import invoke
from .fault_server import FaultServer
from .paths import REPO
from .plugins import create_echo_backend

N = 6
RIGHT = {0, 1, 2, 3}  # items whose hint (what the echoing server answers) is the right option


def pitch_task(folder: Path) -> Path:
    """The task YAML: MMAU's layout under another name, family and title; the prompt ends with the
    item's `hint`, which the fault server echoes back as the model's answer."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "name": "pitchbench",
        "description": "Synthetic pitch sweeps: rising or falling?",
        "version": "test-1",
        "title": "PitchBench (synthetic sweeps)",
        "family": {"name": "pitch", "title": "PitchBench"},
        "scorer": "mcq_official",
        "prediction_key": "model_output",
        "data": {"local": {"metadata": "pitch.json", "format": "json", "audio_field": "audio_id"},
                 "expected_items": N},
        "breakdowns": [
            {"field": "difficulty", "title": "Difficulty-wise Accuracy", "keys": ["easy", "medium", "hard"],
             "leaderboard": "difficulty"},
            {"field": "sub-category", "title": "Sub-category-wise Accuracy"},
        ],
        "prompt": {"template": "{question}\n\nOptions:\n{options}\n\nListen closely to how the pitch moves from the "
                               "start of the clip to its end.\nFinal answer: {hint}"},
    }
    path = folder / "pitchbench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def pitch_bench(folder: Path) -> Path:
    bench = make_fake_benchmark(folder, "mmau", N, seed=7)
    recs = json.loads((bench / "mmau-test-mini.json").read_text())
    for i, r in enumerate(recs):
        pick = r["answer"] if i in RIGHT else next(c for c in r["choices"] if c != r["answer"])
        r["hint"] = f"({'ABCD'[r['choices'].index(pick)]}) {pick}"
    (bench / "pitch.json").write_text(json.dumps(recs))
    (bench / "mmau-test-mini.json").unlink()
    return bench


@pytest.mark.slow  # a server on 127.0.0.1 and several dt-eval processes
def test_custom_task_yaml_runs_and_reaches_report_export_and_leaderboard(tmp_path):
    tasks_dir, bench, run, site = tmp_path / "tasks", pitch_bench(tmp_path / "bench"), tmp_path / "run", tmp_path / "site"
    pitch_task(tasks_dir)
    env = {k: v for k, v in os.environ.items() if k != task_config.TASKS_PATH_ENV}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dt_eval.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=REPO, env=env)

    with FaultServer() as srv:
        p = cli("run", "--tasks", "pitchbench", "--tasks-dir", str(tasks_dir), "--data-dir", str(bench),
                "--model", "fake-model", "--backend", "openai", "--base-url", srv.url, "--output", str(run),
                "--thinking", "off", "--no-progress")
    assert p.returncode == 0, p.stderr
    expected = len(RIGHT) / N * 100
    assert f"Total Accuracy: {expected:.2f}% over {N} samples" in p.stdout
    # from here on no process can find the YAML: the run's config.json must be enough
    hidden = tasks_dir.rename(tmp_path / "elsewhere")
    res = json.loads(cli("report", str(run), "--json").stdout)["tasks"]["pitchbench"]
    assert res["accuracy_mean"] == pytest.approx(expected) and res["complete"]
    assert set(res["repeats"][0]["breakdowns"]["difficulty"]) == {"easy", "medium", "hard"}
    sub = tmp_path / "submission.json"
    p = cli("export", str(run), "--task", "pitchbench", "--out", str(sub))
    assert p.returncode == 0, p.stderr
    rows = json.loads(sub.read_text())
    assert [r["model_output"] for r in rows] == [r["hint"].split(") ", 1)[1] for r in rows]
    p = cli("score", "--task", str(hidden / "pitchbench.yaml"), "-p", str(sub))
    assert p.returncode == 0 and f"Total Accuracy: {expected:.2f}% over {N} samples" in p.stdout
    p = cli("leaderboard", "build", str(run), "--out", str(site), "--no-plots")
    assert p.returncode == 0, p.stderr
    lb = json.loads((site / "leaderboard.json").read_text())
    assert [(c["key"], c["title"]) for c in lb["columns"]] == [("pitch", "PitchBench")]
    t = lb["measured"][0]["tasks"]["pitchbench"]
    assert (t["family"], t["title"], t["accuracy"]["mean"]) == ("pitch", "PitchBench (synthetic sweeps)",
                                                                pytest.approx(expected))
    assert [(tab["title"], tab["keys"]) for tab in lb["category_tables"]] == [
        ("PitchBench: difficulty", ["easy", "medium", "hard"])]
    assert "PitchBench" in (site / "leaderboard.md").read_text()
    p = cli("leaderboard", "verify", str(site), "--no-plots")
    assert p.returncode == 0, p.stdout + p.stderr


def test_task_search_path_env_and_listing(tmp_path, monkeypatch):
    pitch_task(tmp_path / "a")
    monkeypatch.setenv(task_config.TASKS_PATH_ENV, os.pathsep.join([str(tmp_path / "missing"), str(tmp_path / "a")]))
    assert "pitchbench" in task_config.task_names()
    cfg = task_config.load_task("pitchbench")
    assert (cfg.title, cfg.family.name, cfg.family.title, cfg.leaderboard_categories) == (
        "PitchBench (synthetic sweeps)", "pitch", "PitchBench", [("difficulty", "difficulty")])
    res = invoke(["tasks", "--json"])
    row = next(r for r in json.loads(res.stdout) if r["task"] == "pitchbench")
    assert row["file"] == str(tmp_path / "a" / "pitchbench.yaml") and row["family"] == "pitch"
    assert next(r for r in json.loads(res.stdout) if r["task"] == "mmau")["file"] is None
    monkeypatch.delenv(task_config.TASKS_PATH_ENV)
    with pytest.raises(task_config.UnknownTaskError, match="--tasks-dir DIR"):
        task_config.load_task("pitchbench")
    res = invoke(["tasks", "--tasks-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no such folder" in res.stderr


def test_defaults_a_task_without_family_or_title_is_its_own_column(tmp_path):
    path = pitch_task(tmp_path)
    raw = yaml.safe_load(path.read_text())
    del raw["family"], raw["title"]
    path.write_text(yaml.safe_dump(raw))
    cfg = task_config.load_task(str(path))
    assert (cfg.title, cfg.family.name, cfg.family.title, cfg.family.rank) == ("pitchbench", "pitchbench",
                                                                               "pitchbench", None)
    assert cfg.submission_reader == "json_or_jsonl"  # the mcq_official scorer's default


def test_resume_refuses_a_task_config_that_asks_or_scores_differently(tmp_path):
    register_backend("echo-resume", create_echo_backend)
    try:
        tasks_dir, bench, run = tmp_path / "tasks", pitch_bench(tmp_path / "bench"), tmp_path / "run"
        path = pitch_task(tasks_dir)
        args = ["run", "--tasks", "pitchbench", "--tasks-dir", str(tasks_dir), "--data-dir", str(bench), "--model",
                "m", "--backend", "echo-resume", "--output", str(run), "--no-progress", "--limit", "2"]
        assert invoke(args).exit_code == 0
        raw = yaml.safe_load(path.read_text())
        raw["title"] = "PitchBench, renamed"  # display only: resumes
        path.write_text(yaml.safe_dump(raw))
        task_config._parse.cache_clear()
        assert invoke([*args[:-1], "3"]).exit_code == 0
        config = json.loads((run / "config.json").read_text())
        assert config["tasks"]["pitchbench"]["task_config"]["title"] == "PitchBench, renamed"
        raw["prompt"]["template"] = "{question}\n{options}"
        path.write_text(yaml.safe_dump(raw))
        task_config._parse.cache_clear()
        res = invoke(args)
        assert res.exit_code == 2 and "the task config changed since this run started (prompt differ" in res.stderr
    finally:
        unregister_backend("echo-resume")
        task_config._parse.cache_clear()
