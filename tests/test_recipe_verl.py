"""The verl boundary, on CPU (verl itself is not installed): the exported parquet has the schema
verl's RLHFDataset reads (data_source, prompt chat list with an "<audio>" placeholder, audios,
ability, reward_model {style, ground_truth}, extra_info), and the reward function returns verl's
documented dict for verl-shaped inputs (as NaiveRewardManager / BatchRewardManager call it)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trained_recipe.data import make_synthetic_task
from trained_recipe.verl_adapter import reward as verl_reward
from trained_recipe.verl_adapter.export import EXPECTED_COLUMNS, export_parquet

from .test_cot_support import FakeJudge

ROOT = Path(__file__).resolve().parents[1]
GOOD = "<think>\nThe pitch goes up.\n</think>\n\n(A) rising"
WRONG = "<think>\nThe pitch goes down.\n</think>\n\n(B) falling"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl")
    data = make_synthetic_task(root / "data", 6, seed=4)
    out1 = root / "stage1.parquet"
    stats = export_parquet(data, out1, stage=1)
    (root / "hard.jsonl").write_text("".join(json.dumps({"id": i, "pass_rate": 0.5, "kept": k}) + "\n"
                                             for i, k in (("train-00001", True), ("train-00002", False),
                                                          ("train-00003", True))))
    out2 = root / "stage2.parquet"
    proc = subprocess.run([sys.executable, "-m", "trained_recipe.cli", "export-verl", "--data", str(data), "--out",
                           str(out2), "--stage", "2", "--hard-cases", str(root / "hard.jsonl")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return data, out1, out2, stats


def verl_messages(row):
    """verl RLHFDataset._build_messages' placeholder contract: split the string content on the
    media placeholders; one `audios` entry per "<audio>", in order, all used."""
    audios = list(row["audios"])
    used = 0
    out = []
    for m in row["prompt"]:
        parts = []
        for seg in [s for s in re.split("(<image>|<video>|<audio>)", m["content"]) if s]:
            if seg == "<audio>":
                parts.append({"type": "audio", "audio": audios[used]})
                used += 1
            else:
                parts.append({"type": "text", "text": seg})
        out.append({"role": m["role"], "content": parts})
    assert used == len(audios)
    return out


def test_parquet_has_verls_schema(exported):
    data, out1, out2, stats = exported
    table = pq.read_table(out1)
    assert tuple(table.column_names) == EXPECTED_COLUMNS and table.num_rows == 6 == stats["rows"]
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["data_source"] == "string" and schema["ability"] == "string"
    assert schema["prompt"].startswith("list<element: struct<") and "role: string" in schema["prompt"]
    assert schema["audios"] == "list<element: string>"
    assert "ground_truth: string" in schema["reward_model"] and "style: string" in schema["reward_model"]
    assert "choices: list<element: string>" in schema["extra_info"] and "reference: string" in schema["extra_info"]
    for i, row in enumerate(table.to_pylist()):
        assert row["data_source"] == "dt_recipe_audio_mcq" and row["reward_model"]["style"] == "rule"
        user = row["prompt"][-1]
        assert user["role"] == "user" and user["content"].startswith("<audio>") and "Options:\n(A) rising" in user["content"]
        assert len(row["audios"]) == 1 and Path(row["audios"][0]).is_absolute() and Path(row["audios"][0]).exists()
        ei = row["extra_info"]
        assert ei["index"] == i and ei["stage"] == 1 and ei["reference"] and ei["choices"] == ["rising", "falling"]
        assert row["reward_model"]["ground_truth"] == ei["answer"] in ei["choices"]
        msgs = verl_messages(row)
        assert msgs[-1]["content"][0]["type"] == "audio"
    # the way verl loads it: HF datasets' parquet builder
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(out1))["train"]
    assert len(ds) == 6 and ds[0]["prompt"][-1]["content"].startswith("<audio>")


def test_stage2_export_keeps_only_hard_cases(exported):
    _, _, out2, _ = exported
    rows = pq.read_table(out2).to_pylist()
    assert {r["extra_info"]["id"] for r in rows} == {"train-00001", "train-00003"}
    assert all(r["extra_info"]["stage"] == 2 for r in rows)


def verl_inputs(row, text):
    """What verl's reward managers pass: extra_info gets num_turns and rollout_reward_scores."""
    ei = dict(row["extra_info"])
    ei["num_turns"] = None
    ei["rollout_reward_scores"] = {}
    return dict(data_source=row["data_source"], solution_str=text, ground_truth=row["reward_model"]["ground_truth"],
                extra_info=ei)


@pytest.mark.slow  # fake judge server + the real embedding model
def test_compute_score_returns_verls_dict_stage1_and_stage2(exported):
    _, out1, out2, _ = exported
    row = next(r for r in pq.read_table(out1).to_pylist() if r["reward_model"]["ground_truth"] == "rising")
    with FakeJudge() as srv:
        kw = {"judge_url": srv.url, "judge_model": "fake-judge"}
        good = verl_reward.compute_score(**verl_inputs(row, GOOD), **kw)
        bad = verl_reward.compute_score(**verl_inputs(row, WRONG), **kw)
        assert set(good) == {"score", "acc", "fmt", "con", "sim", "sim_llm", "sim_emb", "judge_failures"}
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in good.values())
        assert good["acc"] == 1.0 and good["fmt"] == 1.0 and good["con"] == 1.0
        assert good["sim_llm"] == pytest.approx(0.8) and 0 < good["sim_emb"] <= 1  # fake judge: 8,8,8,8 / 40
        assert good["sim"] == pytest.approx(0.5 * good["sim_llm"] + 0.5 * good["sim_emb"])
        assert good["score"] == pytest.approx(good["acc"] + good["fmt"] + good["con"] + good["sim"])
        assert bad["acc"] == 0.0 and bad["sim"] == 0.0 and bad["sim_llm"] == -1.0  # gated: no judge call
        assert good["judge_failures"] == 0
        # stage 2 from the stage-2 parquet (extra_info.stage == 2): acc + gated LLM sim only
        row2 = next(r for r in pq.read_table(out2).to_pylist())
        text = GOOD if row2["reward_model"]["ground_truth"] == "rising" else WRONG
        s2 = verl_reward.compute_score(**verl_inputs(row2, text), **kw)
        assert set(s2) == {"score", "acc", "sim", "sim_llm", "judge_failures"}
        assert s2["acc"] == 1.0 and s2["sim"] == pytest.approx(0.8) and s2["score"] == pytest.approx(1.8)
        # async flavour (verl's reward loop awaits coroutine functions)
        a = asyncio.run(verl_reward.compute_score_async(**verl_inputs(row, GOOD), **kw))
        assert a == good
    verl_reward.close_all()


@pytest.mark.slow
def test_compute_score_batch_groups_failures_and_stops(exported):
    _, out1, _, _ = exported
    rows = pq.read_table(out1).to_pylist()[:2]

    def script(n, body):  # every consistency request for the chain marked [[con-fail]] fails
        from tests.fault_server import request_text

        return "500" if "[[con-fail]]" in request_text(body) and '"supports"' in request_text(body) else "ok"

    def texts_for(row, marks):
        right = GOOD if row["reward_model"]["ground_truth"] == "rising" else WRONG
        return [right.replace("</think>", f" {m}</think>") for m in marks]

    with FakeJudge(script=script) as srv:
        kw = {"judge_url": srv.url, "judge_model": "fake-judge", "components": "acc,fmt,con", "judge_max_retries": 0}
        sols, gts, eis = [], [], []
        for row, marks in ((rows[0], ["[[con-fail]]", "a", "b", "c"]), (rows[1], ["d", "e", "f", "g"])):
            for t in texts_for(row, marks):  # G = 4 rollouts of each prompt, as verl repeats them
                inp = verl_inputs(row, t)
                sols.append(inp["solution_str"])
                gts.append(inp["ground_truth"])
                eis.append(inp["extra_info"])
        out = verl_reward.compute_score_batch(["dt_recipe_audio_mcq"] * 8, sols, gts, eis, **kw)
        assert len(out) == 8 and all(set(d) == {"score", "acc", "fmt", "con", "judge_failures"} for d in out)
        assert out[0]["judge_failures"] == 1 and sum(d["judge_failures"] for d in out) == 1
        assert out[0]["con"] == pytest.approx(1.0)  # the group's mean of the others (all supported): zero advantage
        with pytest.raises(verl_reward.JudgeFailureRateExceeded):
            bad = [s.replace("</think>", " [[con-fail]]</think>") for s in sols]
            verl_reward.compute_score_batch(["dt_recipe_audio_mcq"] * 8, bad, gts, eis, **kw)
    verl_reward.close_all()


def test_acc_fmt_only_needs_no_judge(exported):
    _, out1, _, _ = exported
    row = pq.read_table(out1).to_pylist()[0]
    text = GOOD if row["reward_model"]["ground_truth"] == "rising" else WRONG
    d = verl_reward.compute_score(**verl_inputs(row, text), components="acc,fmt")
    assert d == {"score": 2.0, "acc": 1.0, "fmt": 1.0, "judge_failures": 0}
    with pytest.raises(ValueError, match="judge_url"):
        verl_reward.compute_score(**verl_inputs(row, text), components="acc,con")
    verl_reward.close_all()


def test_launch_scripts_parse_and_point_at_the_adapter():
    for stage in (1, 2):
        path = ROOT / "trained_recipe" / "verl_adapter" / f"stage{stage}.sh"
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        text = path.read_text()
        assert "compute_score_batch" in text and f"reward_kwargs.stage={stage}" in text
        assert "kl_loss_type=low_var_kl" in text and "rollout.n=" in text
    assert "gdpo_reward_keys=[acc,sim]" in (ROOT / "trained_recipe/verl_adapter/stage2.sh").read_text()
