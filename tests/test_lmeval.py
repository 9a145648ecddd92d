"""lm-eval interop: lm-eval text tasks inside `dt-eval run`, and our audio tasks inside `lm_eval`.

Everything runs real lm-eval (simple_evaluate / the `lm_eval` command) against a real local
server (`dt_eval.serving.hfserver` on the deterministic tiny Qwen2-Audio).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'dt-eval[lm-eval]')")

from dt_eval.backends.base import Generation  # noqa: E402
from dt_eval.integrations.lmeval import tasks_path  # noqa: E402
from dt_eval.integrations.lmeval.model import DtAudioLM, answer_only, pack_generation, unpack_generation  # noqa: E402

from .servers import hfserver  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DT_EVAL = [sys.executable, "-m", "dt_eval.cli"]
NAME = "tiny-audio"
WORD = re.compile(r"(up|down|rising|falling)")


def _script(name: str) -> str:
    for cand in (BIN / name, BIN / name.replace("_", "-")):
        if cand.exists():
            return str(cand)
    pytest.skip(f"the {name} command is not installed next to {sys.executable}")


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false")


# --------------------------------------------------------------------------------------------
# Post-processing units


@pytest.mark.parametrize("text,reasoning", [
    ("(A) rising", "The pitch goes up."),
    ("\n\n(B) falling", "\nThe pitch goes down.\n"),
    ("<think>inline</think>(A) rising", None),
    ("The answer is (A)", None),
    ("", "cut off before any answer"),
])
def test_packed_generation_extracts_like_the_original(text, reasoning):
    from dt_eval.pipeline.extract import extract

    packed = pack_generation(text, reasoning)
    t2, r2 = unpack_generation(packed)
    choices = ["rising", "falling"]
    assert extract(t2, choices, reasoning=r2) == extract(text, choices, reasoning=reasoning)
    if reasoning:
        assert reasoning in packed  # lm-eval's logged responses keep the reasoning


def test_answer_only_strips_reasoning_before_stop_strings():
    sep = Generation(key="k", text="\n\n(B) falling\n\nQuestion: next", reasoning="down down")
    assert answer_only(sep, ["\n\n", "Question:"]) == "(B) falling"
    inline = Generation(key="k", text="<think>Question: is it 42?</think>\nThe answer is 7.\n\nQuestion:")
    assert answer_only(inline, ["Question:"]) == "The answer is 7."  # the stop inside reasoning is ignored
    cut = Generation(key="k", text="<think>still thinking about 42", finish_reason="length")
    assert answer_only(cut, []) == ""  # never a number taken from unfinished reasoning


def test_dt_audio_arguments_fail_clearly():
    with pytest.raises(ValueError, match="base_url"):
        DtAudioLM(model="m")
    with pytest.raises(ValueError, match="model="):
        DtAudioLM(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="unknown model_args colour"):
        DtAudioLM(model="m", base_url="http://127.0.0.1:9/v1", colour="red")
    lm = DtAudioLM(model="m", base_url="http://127.0.0.1:9/v1", batch_size=4)  # lm-eval's own args pass
    try:
        with pytest.raises(NotImplementedError, match="generate_until"):
            lm.loglikelihood([object()])
        assert lm.MULTIMODAL and lm.tokenizer_name == "dt-audio:m"
    finally:
        lm.close()


# --------------------------------------------------------------------------------------------
# Task configs


@pytest.mark.parametrize("task", ["mmau", "mmar", "mmsu"])
def test_task_configs_load_render_and_request_audio(task, fake_bench):
    from lm_eval.tasks import TaskManager

    from dt_eval.tasks.data import load_task_data
    from dt_eval.tasks.prompts import task_text
    from dt_eval.tasks.config import load_task

    bench = fake_bench(task, n=4)
    tm = TaskManager(include_path=str(tasks_path()), metadata={"data_dir": str(bench)})
    assert {"dt_mmau", "dt_mmar", "dt_mmsu"} <= set(tm.all_tasks)
    t = tm.load([f"dt_{task}"])["tasks"][f"dt_{task}"] if hasattr(tm, "load") else None
    if t is None:  # older lm-eval
        from lm_eval.tasks import get_task_dict

        t = get_task_dict([f"dt_{task}"], tm)[f"dt_{task}"]
    docs = list(t.test_docs())
    items = load_task_data(load_task(task), bench).items
    assert [d["id"] for d in docs] == [i.id for i in items]
    for doc, item in zip(docs, items):
        assert t.doc_to_text(doc) == task_text(load_task(task), item)
        assert t.doc_to_audio(doc)[0]["path"] == item.audio.path and Path(item.audio.path).is_file()
    t.build_all_requests(limit=2)
    ctx, gen_kwargs, mm = t.instances[0].args
    assert gen_kwargs["dt_eval_task"] == task and mm["audio"][0]["path"]


def test_lm_eval_validate_accepts_our_task_configs():
    out = subprocess.run([_script("lm-eval"), "validate", "--tasks", "dt_mmau,dt_mmar,dt_mmsu",
                          "--include_path", str(tasks_path())], capture_output=True, text=True, timeout=300,
                         env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All tasks found and valid" in out.stdout
    bad = subprocess.run([_script("lm-eval"), "validate", "--tasks", "dt_nope", "--include_path", str(tasks_path())],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert bad.returncode != 0


def test_dt_eval_tasks_prints_the_include_path():
    out = subprocess.run(DT_EVAL + ["tasks", "--lm-eval-path"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and Path(out.stdout.strip()) == tasks_path()
    assert (tasks_path() / "dt_mmau.yaml").is_file()


def test_run_rejects_an_unknown_lm_eval_task_before_inference(tmp_path):
    out = subprocess.run(DT_EVAL + ["run", "--tasks", "lm-eval:no_such_task_xyz", "--model", "m", "--backend", "openai",
                                    "--base-url", "http://127.0.0.1:9/v1", "-o", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert out.returncode == 2, out.stderr
    assert "no task named no_such_task_xyz" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "samples.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Real server: the tiny audio model behind dt_eval.serving.hfserver

TEXT_TASK = """task: pitch_words
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: target
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  do_sample: false
  max_gen_toks: 16
filter_list:
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "(up|down|rising|falling)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


GROUP = """group: pitch_group
task: [pitch_words, pitch_words_b]
aggregate_metric_list:
  - metric: exact_match
    aggregation: mean
    weight_by_size: true
    filter_list: first-word
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def server(det_model_dir, tmp_path_factory):
    with hfserver(det_model_dir, NAME, tmp_path_factory.mktemp("lmeval-server")) as url:
        yield url


def _text_task(tmp: Path) -> Path:
    rows = [{"question": "Is the tone rising or falling?", "target": "falling"},
            {"question": "Which way does the pitch move?", "target": "falling"},
            {"question": "Describe the pitch.", "target": "rising"},
            {"question": "Pitch direction?", "target": "down"}]
    folder = tmp / "lm_tasks"
    folder.mkdir()
    data = folder / "pitch.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A group of two subtasks (as mmlu_pro is): per-subtask records, lm-eval's group aggregate.
    for name in ("pitch_words", "pitch_words_b"):
        (folder / f"{name}.yaml").write_text(TEXT_TASK.format(data=data).replace("task: pitch_words", f"task: {name}"))
    (folder / "pitch_group.yaml").write_text(GROUP)
    return folder


def _first_word(s: str) -> str:
    m = WORD.search(s)
    return m.group(1) if m else "[invalid]"


@pytest.mark.slow
def test_lm_eval_text_task_runs_in_dt_eval_run(server, fake_bench, tmp_path):
    include = _text_task(tmp_path)
    bench = fake_bench("mmau", n=4)
    run = tmp_path / "run"
    cmd = DT_EVAL + ["run", "--tasks", "mmau,lm-eval:pitch_group", "--lm-eval-include-path", str(include),
                     "--model", NAME, "--preset", "tiny-qwen2audio", "--backend", "openai", "--base-url", server,
                     "--data-dir", str(bench), "-o", str(run), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "== lm-eval:pitch_group" in first.stdout and "exact_match,first-word" in first.stdout

    records = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    lm = [r for r in records if r["task"] == "lm-eval:pitch_group"]
    gens = [r for r in lm if r["metrics"] is None]
    scored = {r["key"]: r for r in lm if r["metrics"] is not None}
    assert len(gens) == 8 and len(scored) == 8
    assert {r["subtask"] for r in scored.values()} == {"pitch_words", "pitch_words_b"}
    targets = [json.loads(x)["target"] for x in (include / "pitch.jsonl").read_text().splitlines()]
    for r in scored.values():
        assert r["reasoning_text"]  # the reasoning is kept in our log ...
        assert r["reasoning_text"] not in r["returned"] and "</think>" not in r["returned"]  # ... not in lm-eval's
        want = float(_first_word(r["returned"]) == targets[r["index"]])
        assert r["metrics"]["exact_match,first-word"] == want
    # Stripping matters: the same filter on the unstripped text (reasoning first) scores differently.
    stripped = sum(r["metrics"]["exact_match,first-word"] for r in scored.values()) / 8
    unstripped = sum(_first_word(pack_generation(r["output"], r["reasoning"])) == targets[r["index"]]
                     for r in scored.values()) / 8
    assert stripped != unstripped

    results = json.loads((run / "results.json").read_text())
    t = results["tasks"]["lm-eval:pitch_group"]
    m = t["metrics"]["exact_match,first-word"]
    assert m["value"] == pytest.approx(stripped) and m["recomputed"] == pytest.approx(stripped) and m["agrees"]
    assert t["accuracy_mean"] == pytest.approx(stripped * 100) and t["complete"]
    assert results["tasks"]["mmau"]["accuracy_mean"] is not None  # the audio task in the same run

    # Resume: nothing is generated again.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "8 generation(s) reused" in again.stderr
    records2 = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert sum(1 for r in records2 if r["task"] == "lm-eval:pitch_group" and r["metrics"] is None) == 8

    rep = subprocess.run(DT_EVAL + ["report", str(run)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert rep.returncode == 0 and "lm-eval:pitch_group" in rep.stdout
    lb = tmp_path / "lb"
    built = subprocess.run(DT_EVAL + ["leaderboard", "build", str(run), "-o", str(lb)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "lm-eval/pitch_group" in (lb / "leaderboard.md").read_text()
    ok = subprocess.run(DT_EVAL + ["leaderboard", "verify", str(lb)], capture_output=True, text=True, timeout=300,
                        cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_lm_eval_command_runs_dt_mmau_and_matches_dt_eval_run(server, fake_bench, tmp_path):
    bench = fake_bench("mmau", n=6, seed=3)
    meta_path = bench / "mmau-test-mini.json"
    meta = json.loads(meta_path.read_text())
    flipped = meta[1]["id"]  # make one item's key disagree with the audio: the model gets it wrong
    meta[1]["answer"] = next(c for c in meta[1]["choices"] if c != meta[1]["answer"])
    meta_path.write_text(json.dumps(meta, indent=2))

    run = tmp_path / "run"
    dt = subprocess.run(DT_EVAL + ["run", "--tasks", "mmau", "--model", NAME, "--preset", "tiny-qwen2audio",
                                   "--backend", "openai", "--base-url", server, "--data-dir", str(bench),
                                   "-o", str(run), "--no-progress"],
                        capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert dt.returncode == 0, dt.stderr[-4000:]
    ours = json.loads((run / "results.json").read_text())["tasks"]["mmau"]
    by_id = {r["id"]: r for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines())}
    assert by_id[flipped]["correct"] is False and ours["accuracy_mean"] < 100

    out = tmp_path / "lm_out"
    lm = subprocess.run(
        [_script("lm_eval"), "--include_path", str(tasks_path()), "--model", "dt-audio",  # the form
         "--model_args", f"model={NAME},preset=tiny-qwen2audio,base_url={server}", "--tasks", "dt_mmau",
         "--metadata", json.dumps({"data_dir": str(bench)}), "--log_samples", "--output_path", str(out)],
        capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert lm.returncode == 0, lm.stdout[-2000:] + lm.stderr[-4000:]
    res = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["dt_mmau"]
    assert res["acc,none"] * 100 == pytest.approx(ours["accuracy_mean"], abs=1e-9)
    assert res["acc_official_raw,none"] * 100 == pytest.approx(ours["accuracy_official_raw_mean"], abs=1e-9)
    samples = [json.loads(x) for x in next(out.rglob("samples_dt_mmau_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 6
    for s in samples:
        rec = by_id[s["doc"]["id"]]
        text, reasoning = unpack_generation(s["resps"][0][0])
        assert (text, reasoning) == (rec["output"], rec["reasoning"])  # the same generations, reasoning kept
        assert s["acc"] == float(rec["correct"])
