"""`dt-eval leaderboard build|verify`: rows from run directories, published anchors, comparability
marks, Markdown/CSV/JSON/HTML outputs, verification against samples.jsonl.

Fast tests build run directories with the real record builder from synthetic generations (no
model). Slow tests make real runs with the tiny Qwen2-Audio (`dt-eval run --backend hf`), and the
browser test sorts the page in headless Chromium and keeps a screenshot in test-artifacts/.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dt_eval.backends.base import Generation
from dt_eval.backends.openai_compat import OpenAIBackend
from dt_eval.tasks.data import load_task_data
from dt_eval.reporting.leaderboard.build import build_leaderboard, file_sha256
from dt_eval.reporting.leaderboard.published import (
    PublishedError,
    entry_to_json,
    load_published,
    normalise_model_name,
)
from dt_eval.reporting.leaderboard.render import write_all
from dt_eval.reporting.leaderboard.verify import verify
from dt_eval.tasks.prompts import PromptSettings
from dt_eval.storage.rundir import RunDir
from dt_eval.pipeline.records import make_sample_record
from dt_eval.tasks.config import load_task

from .paths import REPO
from .synthetic_meta import mmar_records, mmau_records

PUBLISHED = REPO / "leaderboard" / "published.yaml"
ARTIFACTS = REPO / "test-artifacts"


# ---------------------------------------------------------------------------------------------
# helpers


def dt_eval(*args, check=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"dt-eval {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_bench(root: Path, task: str, records: list[dict]) -> Path:
    d = root / f"bench-{task}-{len(list(root.glob(f'bench-{task}-*')))}"
    d.mkdir(parents=True)
    name = load_task(task).data.local.metadata
    if name.endswith(".jsonl"):
        (d / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    else:
        (d / name).write_text(json.dumps(records, ensure_ascii=False))
    return d


def fake_run(run: Path, benches: dict[str, Path], p_right: float, repeats: int = 1, seed: int = 0,
             model: str = "Qwen/Qwen2-Audio-7B-Instruct", thinking: str = "on", backend: dict | None = None,
             limit: int | None = None) -> Path:
    """A run directory written by the real record builder from made-up generations (the first
    `limit` items, as --limit does). Its config's backend entry is what the real OpenAI-compatible
    backend's describe() records."""
    rng = random.Random(seed)
    loaded = {t: load_task_data(load_task(t), b) for t, b in benches.items()}
    if backend is None:
        backend = OpenAIBackend(model, "http://127.0.0.1:9/v1", api_key="sk-not-a-real-key").describe()
    with RunDir(run) as rd:
        rd.write_config({
            "dt_eval_version": "0.1.0",
            "identity": {"model": model, "seed": 0, "prompt": {"thinking": thinking},
                         "sampling": {"temperature": 0.0 if repeats == 1 else 0.7, "max_tokens": 4096}},
            "backend": backend,
            "tasks": {t: lt.to_json() | {"limit": limit, "repeats": repeats}
                      | ({"items": min(limit, len(lt.items))} if limit else {}) for t, lt in loaded.items()},
        })
        for t, lt in loaded.items():
            cfg = load_task(t)
            for r in range(repeats):
                for idx, item in enumerate(lt.items[:limit] if limit else lt.items):
                    k = item.choices.index(item.answer) if rng.random() < p_right else rng.randrange(len(item.choices))
                    text = f"<think>\nI listen.\n</think>\n\n({'ABCDEFGHIJ'[k]}) {item.choices[k]}"
                    gen = Generation(key=f"{t}/{item.id}/{r}", text=text, finish_reason="stop")
                    rd.append([make_sample_record(cfg, idx, item, r, gen, [], PromptSettings())])
    return run


def write_cot(run: Path, task: str, hybrid: float, rubric: float, judge: str = "fake-judge") -> None:
    """cot.jsonl lines in the shape `dt-eval rescore` appends (one per sample key and scorer)."""
    lines = []
    for rec in (json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()):
        if rec["task"] != task:
            continue
        base = {"key": rec["key"], "task": task, "id": rec["id"], "repeat": rec["repeat"], "raw": [], "error": None,
                "judge_calls": 1, "cached": False, "judge_model": judge, "time": 0.0}
        ok = bool(rec["correct"])
        lines.append(base | {"scorer": "hybrid", "version": "hybrid-test-1", "value": hybrid if ok else 0.0,
                             "scored": True, "components": {"emb": hybrid, "llm": hybrid, "gate": int(ok),
                                                            "correct": ok, "w": 0.5}})
        lines.append(base | {"scorer": "rubrics", "version": "rubrics-test-1", "value": rubric if ok else 0.0,
                             "scored": True, "components": {"correct": ok}})
    (run / "cot.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_yaml(tmp_path: Path, extra: list[dict]) -> Path:
    """The project's published.yaml plus extra anchor entries."""
    data = yaml.safe_load(PUBLISHED.read_text())
    data["entries"] += extra
    p = tmp_path / "published.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return p


test_yaml.__test__ = False  # a helper, not a test


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="module")
def fake_board(tmp_path_factory):
    """Two synthetic runs: same MMAU file; MMAR on two different files; run b with 3 repeats."""
    root = tmp_path_factory.mktemp("lb")
    mmau = write_bench(root, "mmau", mmau_records(45, 1))
    mmar_a = write_bench(root, "mmar", mmar_records(40, 2))
    mmar_b = write_bench(root, "mmar", mmar_records(30, 3))
    a = fake_run(root / "runs" / "run-a", {"mmau": mmau, "mmar": mmar_a}, 0.8, seed=1)
    b = fake_run(root / "runs" / "run-b", {"mmau": mmau, "mmar": mmar_b}, 0.5, repeats=3, seed=2,
                 model="/ckpt/my-rl-model", thinking="off")
    write_cot(a, "mmar", hybrid=0.6, rubric=0.8)
    pub = test_yaml(root, [{
        "model": "Qwen2-Audio (our earlier paper)", "alias": "Qwen/Qwen2-Audio-7B-Instruct",
        "citation": "Doe et al., A Test Anchor, 2026, Table 9", "source": "https://example.org/anchor",
        "checked": "verified", "scores": {"mmau": {"value": 50.0, "data_version": "test file"}, "mmar": 40.0},
    }])
    published, sha = load_published(pub)
    out = root / "site"
    lb = build_leaderboard([a, b], out, published=published, published_path=pub, published_sha256=sha,
                           names={str(b): "my-rl-model"})
    write_all(lb, out)
    return {"root": root, "runs": [a, b], "out": out, "lb": lb, "published": pub}


# ---------------------------------------------------------------------------------------------
# published numbers


# Audio-DeepThinker (Interspeech 2026) Table 1, MMAR avg / MMAU test-mini / MMAU test, as printed in
# the paper (None: "-" in the table)
TABLE1 = {
    "GPT-4o mini Audio": (50.60, 53.00, 51.03), "GPT-4o Audio": (63.50, 62.50, 60.82),
    "Gemini 2.0 Flash": (65.60, 70.50, 67.03), "Gemini 2.5 Flash": (67.00, 71.80, 67.39),
    "Qwen2-Audio-Instruct": (30.00, 59.60, 57.40), "Audio Flamingo 2": (21.90, 62.40, 61.06),
    "Audio Flamingo 3": (58.50, 73.30, 72.42), "Kimi-Audio": (57.60, 68.20, 64.40),
    "Qwen-2.5-Omni": (56.70, 71.50, 71.00), "Covo-Audio": (55.30, 75.30, 71.89),
    "Step-Audio 2": (None, 77.58, 73.86), "Qwen3-Omni-30B-A3B-Thinking": (67.80, 75.80, 74.99),
    "Qwen3-Omni-30B-A3B-Instruct": (70.10, 77.80, 74.57), "Audio-Reasoner": (36.80, 67.70, 63.78),
    "Omni-R1": (61.20, 77.00, 75.00), "Ke-Omni-R": (60.90, 74.60, 68.71), "CESAR": (62.70, 77.10, None),
    "Audio-Thinker": (65.30, 78.00, 75.39), "AudioMCQ": (67.10, 78.20, 75.60),
    "Audio-DeepThinker": (74.00, 78.50, 75.44),
}
N_REPORTED = len(TABLE1) + 3  # and the challenge's top 3


def test_published_yaml_has_every_anchor_with_a_source():
    pub, _ = load_published(PUBLISHED)
    by = {e.model: e for e in pub.entries}
    assert len(pub.entries) == N_REPORTED
    for model, expected in TABLE1.items():
        s = by[model].scores
        assert tuple(s[k].value if k in s else None for k in ("mmar", "mmau", "mmau-test")) == expected, model
        assert "2604.18187" in by[model].citation and by[model].source == "https://arxiv.org/abs/2604.18187"
        assert by[model].cite_key == "he2026audiodeepthinker"
    adt = entry_to_json(by["Audio-DeepThinker"])["scores"]
    assert adt["mmar:rubrics"]["value"] == 65.29 and adt["mmar:rubrics"]["checked"] == "verified"  # Table 3
    # not in the paper's text: said to be unverified, and nothing more
    assert adt["mmsu"] == {"value": 77.26, "data_version": "not stated", "data_sha256": None, "checked": "unverified",
                           "note": None}
    top3 = [e for e in pub.entries if "challenge" in e.citation.lower()]
    assert [(e.scores["mmar:rubrics"].value, e.scores["mmar"].value) for e in top3] == \
        [(65.29, 74.0), (62.55, 71.0), (62.22, 71.7)]
    assert all(e.checked == "verified" and "audio-reasoning-challenge" in e.source for e in top3)
    for e in pub.entries:  # every row says where it comes from and whether it was checked
        assert e.citation and e.source.startswith("https://") and e.checked in ("verified", "unverified")
        assert e.note is None and all(s.note is None for s in e.scores.values())
    # only what a reader should see: no notes on how a number was transcribed, no paths outside the project
    text = PUBLISHED.read_text()
    for word in ("transcribed", "method-notes", "not reachable", "search tool", "../", "/work/", "shared/",
                 "check_note", "partly", "inferred"):
        assert word not in text, word


@pytest.mark.parametrize("bad,msg", [
    ({"source": "arxiv 2604"}, "source must be an http"),
    ({"scores": {"mmar": 140}}, "outside"),
    ({"scores": {"MMAR acc": 1}}, "bad score key"),
    ({"citation": " "}, "must not be empty"),
    ({"typo_field": 1}, "Extra inputs"),
    ({"check_note": "copied by hand"}, "Extra inputs"),  # no notes on how a number was obtained
    ({"checked": "partly"}, "checked"),  # a status per number instead
    ({"cite_key": "a key"}, "cite_key must be a BibTeX key"),
])
def test_published_validation_names_the_entry(tmp_path, bad, msg):
    entry = {"model": "X-Audio", "citation": "c", "source": "https://x.org", "scores": {"mmar": 50}} | bad
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"schema": "dt-eval-published/1", "entries": [entry]}))
    with pytest.raises(PublishedError, match=msg) as e:
        load_published(p)
    assert "X-Audio" in str(e.value)


def test_model_names_normalise():
    assert normalise_model_name("Qwen/Qwen2-Audio-7B-Instruct") == normalise_model_name("qwen2_audio 7b instruct")
    assert normalise_model_name("/ckpt/Audio-DeepThinker/") == "audiodeepthinker"


# ---------------------------------------------------------------------------------------------
# build + outputs (synthetic runs)


def test_json_rows_recompute_the_runs(fake_board):
    lb = fake_board["lb"]
    a, b = fake_board["runs"]
    ma, mb = lb["measured"]
    assert ma["samples_sha256"] == file_sha256(a / "samples.jsonl") and ma["run_dir_rel"] == "../runs/run-a"
    assert mb["name"] == "my-rl-model" and mb["settings"]["thinking"] == "off"
    # the numbers are the ones `dt-eval report` recomputes
    from dt_eval.reporting.tables import load_run_results

    rep = load_run_results(a)["tasks"]
    assert ma["tasks"]["mmau"]["accuracy"]["mean"] == pytest.approx(rep["mmau"]["accuracy_mean"])
    assert ma["tasks"]["mmar"]["official_raw"]["mean"] == pytest.approx(rep["mmar"]["accuracy_official_raw_mean"])
    assert mb["tasks"]["mmar"]["repeats"] == 3 and mb["tasks"]["mmar"]["accuracy"]["std"] > 0
    assert set(ma["tasks"]["mmar"]["categories"]) == {"modality", "category"}
    assert set(ma["tasks"]["mmau"]["categories"]["task"]) == {"sound", "music", "speech"}
    assert [c["key"] for c in lb["columns"]] == ["mmar", "mmar:rubrics", "mmar:hybrid", "mmau", "mmau-test", "mmsu"]


def md_table(md: str, heading: str) -> list[list[str]]:
    """The rows of the Markdown table under `### heading` (cells stripped, header and rule left out)."""
    block = md.split(f"### {heading}\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines()[2:]]


def test_markdown_ranks_measured_and_reported_together(fake_board):
    md = (fake_board["out"] / "leaderboard.md").read_text()
    lb = fake_board["lb"]
    assert "### Measured with dt-eval" not in md and "### Reported (published" not in md  # one table per benchmark
    rows = md_table(md, "MMAR")
    assert len(rows) == 2 + sum("mmar" in c or "mmar:rubrics" in c for c in lb["reported_cells"])
    values = [float(r[3].split()[0].rstrip("‡§¶‖※♯♭◊¤♮*")) for r in rows]
    assert values == sorted(values, reverse=True)  # ranked by accuracy, both kinds together
    kinds = [r[2].split(":")[0] for r in rows]
    assert set(kinds) == {"measured", "reported"} and kinds != sorted(kinds)  # interleaved, not two blocks
    for r in rows:
        if r[2].startswith("reported"):  # marked, cited, with the check status of this number
            assert r[1].endswith(" †") and "[R" in r[2] and r[2].endswith(("verified", "unverified"))
            assert r[4:6] != [] and r[-2] == "–"  # no test against a reported row
        else:
            assert " [" in r[3] and r[2].startswith("measured: run-")  # the CI on every measured row
    # every reported row cites its source; the references list gives citation + URL + check status
    refs = md.split("### References")[1]
    for i, r in enumerate(lb["reported"]):
        assert f"R{i + 1} {r['model']}: {r['citation']}. <{r['source']}>" in refs
    adt = next(i for i, r in enumerate(lb["reported"]) if r["model"] == "Audio-DeepThinker")
    assert f"R{adt + 1} Audio-DeepThinker" in refs and "Checked against the source: verified; unverified: mmsu." in refs
    mmsu = md_table(md, "MMSU")
    assert mmsu[0][1] == "Audio-DeepThinker †" and mmsu[0][2].endswith(", unverified")
    # run b's MMAR is on another metadata file: its cell carries a mark, explained in the notes,
    # and it is not tested against run a
    mar_b = lb["measured_cells"][1]["mmar"]
    assert mar_b["marker"] and not lb["measured_cells"][0]["mmar"]["marker"]
    row_b = next(r for r in rows if r[1] == "my-rl-model")
    assert row_b[3].endswith(f"]{mar_b['marker']}") and row_b[-2] == "not tested: another data file than the best measured row"
    sha_b = lb["measured"][1]["tasks"]["mmar"]["data_sha256"]
    assert f"  - {mar_b['marker']}: measured: task mmar" in md and sha_b[:12] in md
    # same file for MMAU: no mark on either run
    assert not lb["measured_cells"][0]["mmau"]["marker"] and not lb["measured_cells"][1]["mmau"]["marker"]
    # reported numbers with another data version are marked too
    assert lb["reported_cells"][0]["mmar"]["marker"] not in ("", mar_b["marker"])
    assert "†" not in {g["marker"] for g in lb["groups"].values()}  # † means reported, nothing else


def test_difference_where_measured_and_reported_meet(fake_board):
    lb = fake_board["lb"]
    diffs = [d for d in lb["diffs"] if lb["reported"][d["reported"]]["model"] == "Qwen2-Audio (our earlier paper)"]
    acc = lb["measured_cells"][0]["mmau"]["value"]
    (d,) = [d for d in diffs if d["column"] == "mmau"]
    assert d["delta"] == pytest.approx(acc - 50.0) and d["measured"] == 0
    md = (fake_board["out"] / "leaderboard.md").read_text()
    assert "### Measured − reported (same model)" in md
    assert f"| {acc:.2f} | 50.00" in md and f"{acc - 50.0:+.2f}" in md
    # the table-1 Qwen2-Audio-Instruct row matches too (alias Qwen/Qwen2-Audio-7B-Instruct)
    assert any(lb["reported"][d["reported"]]["model"] == "Qwen2-Audio-Instruct" for d in lb["diffs"])
    # the other run's model is in no published row
    assert all(d["measured"] == 0 for d in lb["diffs"])


def test_csv_holds_every_number_with_its_provenance(fake_board):
    rows = read_csv(fake_board["out"] / "leaderboard.csv")
    lb = fake_board["lb"]
    meas = {(r["run"], r["column"]): r for r in rows if r["kind"] == "measured"}
    for m, cells in zip(lb["measured"], lb["measured_cells"]):
        for key, c in cells.items():
            assert float(meas[(m["run"], key)]["value"]) == pytest.approx(c["value"], abs=1e-4)
            assert meas[(m["run"], key)]["comparability"].startswith("measured:")
    assert meas[("run-b", "mmar")]["std"] and meas[("run-b", "mmar")]["repeats"] == "3"
    assert ("run-a", "mmau[task=sound]") in meas
    rep = [r for r in rows if r["kind"] == "reported"]
    assert len({r["model"] for r in rep}) == N_REPORTED + 1 and all(r["citation"] and r["source"] for r in rep)
    adt = {r["column"]: r for r in rep if r["model"] == "Audio-DeepThinker"}
    assert adt["mmsu"]["value"] == "77.26" and adt["mmar:rubrics"]["value"] == "65.29"
    assert adt["mmsu"]["checked"] == "unverified" and adt["mmar"]["checked"] == "verified"
    # measured accuracies with their interval and rank
    a_mmau = meas[("run-a", "mmau")]
    cell = lb["measured_cells"][0]["mmau"]
    assert float(a_mmau["ci_low"]) == pytest.approx(cell["ci_low"], abs=1e-4) and a_mmau["ci_method"] == "wilson"
    assert a_mmau["rank"] and adt["mmar"]["rank"] and not adt["mmar"]["p_vs_best"]
    assert any(r["kind"] == "delta" for r in rows)


def test_reasoning_quality_columns_from_cot(fake_board):
    lb = fake_board["lb"]
    t = lb["measured"][0]["tasks"]["mmar"]
    acc = t["accuracy"]["mean"]
    assert t["cot"]["hybrid"]["mean"] == pytest.approx(0.6 * acc / 100)
    assert t["cot"]["rubrics"]["score"] == pytest.approx(80 * acc / 100)
    assert lb["measured"][0]["cot_source"] == "cot.jsonl"
    cells = lb["measured_cells"][0]
    assert cells["mmar:hybrid"]["value"] == pytest.approx(0.6 * acc / 100)
    assert "mmar:hybrid" not in lb["measured_cells"][1]  # run b has no reasoning scores
    md = (fake_board["out"] / "leaderboard.md").read_text()
    header = md.split("### MMAR\n", 1)[1].lstrip("\n").splitlines()[0]
    assert "| MMAR (95% CI) | MMAR-Rubrics | MMAR hybrid | vs best measured |" in header  # accuracy beside reasoning
    # measured rubric scores (dt-eval's judge) are marked apart from the challenge's official ones
    tele = next(i for i, r in enumerate(lb["reported"]) if r["model"].startswith("TeleAI"))
    assert cells["mmar:rubrics"]["marker"] == "" and lb["reported_cells"][tele]["mmar:rubrics"]["marker"]


def test_html_is_self_contained_and_sortable(fake_board):
    page = (fake_board["out"] / "index.html").read_text()
    assert page.count('<table class="sortable') >= 4
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert 'src="http' not in page
    imgs = [x for x in page.split('<img ')[1:]]
    assert len(imgs) == len(list((fake_board["out"] / "plots").glob("*.png"))) >= 4
    assert all('src="data:image/png;base64,' in x for x in imgs)
    assert 'class="badge reported">reported</span>' in page and "Audio-DeepThinker" in page
    for png in (fake_board["out"] / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_verify_passes_then_fails_on_any_change(fake_board, tmp_path):
    # work on a copy: the module fixture stays intact
    root = tmp_path / "copy"
    shutil.copytree(fake_board["root"] / "runs", root / "runs")
    shutil.copytree(fake_board["out"], root / "site")
    assert verify(root / "site").ok
    samples = root / "runs" / "run-a" / "samples.jsonl"
    original = samples.read_bytes()
    recs = [json.loads(x) for x in original.decode().splitlines()]
    i = next(i for i, r in enumerate(recs) if r["task"] == "mmau" and r["correct"])
    # 1) a wrong answer written over a correct one, consistently (output, extraction, flag)
    r = recs[i]
    wrong = next(c for c in r["meta"]["choices"] if c != r["meta"]["answer"])
    k = r["meta"]["choices"].index(wrong)
    r["output"] = f"<think>\nI listen.\n</think>\n\n({'ABCDEFGHIJ'[k]}) {wrong}"
    r["extracted"] |= {"answer_text": wrong, "matched_choice": k}
    r["prediction"], r["correct"] = r["output"].split("\n\n")[-1], False
    samples.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recs))
    rep = verify(root / "site")
    assert not rep.ok
    text = "\n".join(rep.problems)
    assert "samples.jsonl changed since the leaderboard was built" in text
    assert "mmau accuracy.mean = " in text and "recomputed from samples.jsonl" in text
    # 2) only a `correct` flag flipped: the flags no longer sum to the rescored count
    samples.write_bytes(original)
    recs = [json.loads(x) for x in original.decode().splitlines()]
    recs[i]["correct"] = False
    samples.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recs))
    text = "\n".join(verify(root / "site").problems)
    assert "`correct` flags sum to" in text and "disagree with their own output" in text
    # 3) only the raw output changed: re-extraction disagrees with the recorded answer
    recs = [json.loads(x) for x in original.decode().splitlines()]
    recs[i]["output"] = "<think>\nI listen.\n</think>\n\nno idea"
    samples.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recs))
    text = "\n".join(verify(root / "site").problems)
    assert "when the answers are extracted again from the raw outputs" in text
    # 4) a hand edit of the Markdown table
    samples.write_bytes(original)
    assert verify(root / "site").ok
    md = root / "site" / "leaderboard.md"
    acc = fake_board["lb"]["measured_cells"][0]["mmau"]["value"]
    md.write_text(md.read_text().replace(f"{acc:.2f}", f"{acc + 1:.2f}", 1))
    assert any("leaderboard.md differs" in p for p in verify(root / "site").problems)
    # 5) a changed reasoning score
    shutil.copy(fake_board["out"] / "leaderboard.md", md)
    cot = root / "runs" / "run-a" / "cot.jsonl"
    cot.write_text(cot.read_text().replace('"value": 0.6', '"value": 0.9', 1))
    text = "\n".join(verify(root / "site").problems)
    assert "cot.jsonl changed" in text and "mmar cot.hybrid.mean" in text


def _copy_board(fake_board, root: Path) -> Path:
    """The built site, its runs and its published.yaml copied together (the fixture stays intact)."""
    shutil.copytree(fake_board["root"] / "runs", root / "runs")
    shutil.copytree(fake_board["out"], root / "site")
    shutil.copy(fake_board["published"], root / "published.yaml")
    return root / "site"


def test_verify_checks_reported_numbers_against_published_yaml(fake_board, tmp_path):
    site = _copy_board(fake_board, tmp_path)
    assert verify(site).ok
    lb = json.loads((site / "leaderboard.json").read_text())
    i = next(i for i, r in enumerate(lb["reported"]) if r["model"] == "GPT-4o Audio")
    assert lb["reported"][i]["scores"]["mmar"]["value"] == 63.5
    # 1) a forged reported number, written consistently into the JSON and re-rendered
    lb["reported"][i]["scores"]["mmar"]["value"] = 73.5
    lb["reported_cells"][i]["mmar"]["value"] = 73.5
    write_all(lb, site)
    assert "| GPT-4o Audio † | reported: " in (site / "leaderboard.md").read_text()
    assert next(r for r in md_table((site / "leaderboard.md").read_text(), "MMAR")
                if r[1] == "GPT-4o Audio †")[3].startswith("73.50")
    text = "\n".join(verify(site).problems)
    assert f"reported GPT-4o Audio (R{i + 1}): mmar = 73.5 in the leaderboard, 63.5 in" in text
    # 2) only the cell the tables show, not the entry it came from
    lb["reported"][i]["scores"]["mmar"]["value"] = 63.5
    write_all(lb, site)
    text = "\n".join(verify(site).problems)
    assert f"reported GPT-4o Audio (R{i + 1}): mmar value = 73.5 in leaderboard.json, 63.5 in a rebuild" in text
    # 3) the published file itself edited after the build
    shutil.copytree(fake_board["out"], site, dirs_exist_ok=True)
    assert verify(site).ok
    pub = tmp_path / "published.yaml"
    pub.write_text(pub.read_text().replace("value: 63.5", "value: 73.5", 1))
    text = "\n".join(verify(site).problems)
    assert "published.yaml changed since the leaderboard was built" in text
    assert f"reported GPT-4o Audio (R{i + 1}): mmar = 63.5 in the leaderboard, 73.5 in" in text
    # 4) no published file to check against: a failure, unless it is named explicitly
    shutil.copy(fake_board["published"], pub)
    moved = tmp_path / "elsewhere.yaml"
    pub.rename(moved)
    lb = json.loads((site / "leaderboard.json").read_text())
    lb["published_file"] = str(tmp_path / "gone.yaml")
    (site / "leaderboard.json").write_text(json.dumps(lb, indent=2, ensure_ascii=False) + "\n")
    text = "\n".join(verify(site).problems)
    assert f"cannot check the {N_REPORTED + 1} reported row(s)" in text and "--published" in text
    assert verify(site, published=moved).ok


def test_verify_checks_the_plots_against_a_fresh_render(fake_board, tmp_path):
    from PIL import Image

    site = _copy_board(fake_board, tmp_path)
    assert verify(site).ok
    # 1) a bar painted over in a plot file
    png = site / "plots" / "categories-mmau-task.png"
    original = png.read_bytes()
    img = Image.open(png).convert("RGBA")
    for x in range(40, 80):
        for y in range(100, 140):
            img.putpixel((x, y), (200, 30, 30, 255))
    img.save(png)
    text = "\n".join(verify(site).problems)
    assert "plot categories-mmau-task (plots/categories-mmau-task.png) differs from a fresh render" in text
    # the same pixels packed by another PNG encoder setting are the same plot
    Image.open(io.BytesIO(original)).save(png, compress_level=1)
    assert png.read_bytes() != original and verify(site).ok
    # 2) the page embeds another image in place of that plot
    png.write_bytes(original)
    page = (site / "index.html").read_text()
    other = base64.b64encode((site / "plots" / "categories-mmar-category.png").read_bytes()).decode()
    mine = base64.b64encode(original).decode()
    assert mine in page
    (site / "index.html").write_text(page.replace(mine, other))
    problems = verify(site).problems
    assert problems == [f"{site / 'index.html'}: embedded plot categories-mmau-task differs from a fresh render"]
    # 3) a plot file gone
    shutil.copy(fake_board["out"] / "index.html", site / "index.html")
    png.unlink()
    assert any("plot categories-mmau-task: plots/categories-mmau-task.png is missing" in p
               for p in verify(site).problems)
    # skipping the plots is explicit and said so
    rep = verify(site, plots=False)
    assert rep.ok and rep.plots_checked == 0 and any("plots not checked" in n for n in rep.notes)
    # an untouched build checks every plot, in a fresh process too (the plots render alike)
    png.write_bytes(original)
    rep = verify(site)
    assert rep.ok and rep.plots_checked == len(list((site / "plots").glob("*.png"))) >= 4
    ok = dt_eval("leaderboard", "verify", site)
    assert ok.stdout.startswith("OK: 2 run(s)") and f"{rep.plots_checked} plot(s) rendered again" in ok.stdout


def test_backend_name_shown_and_no_credentials_from_the_config(tmp_path):
    secret = "sk-live-0123456789abcdef"
    bench = write_bench(tmp_path, "mmau", mmau_records(12, 5))
    runs = {}
    for name, backend in (("openai", OpenAIBackend("m", "http://127.0.0.1:9/v1", api_key=secret).describe()),
                          ("hf", {"name": "hf", "model": "m", "device": "cpu", "dtype": "float32", "batch_size": 8})):
        runs[name] = fake_run(tmp_path / f"run-{name}", {"mmau": bench}, 0.6, backend=backend)
    # credentials a config might hold (a stored command line, a header, a key): none may reach the outputs
    cfg_path = runs["openai"] / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["command"] = ["dt-eval", "run", "--api-key", secret]
    cfg["backend"]["api_key"] = secret
    cfg["identity"]["extra_headers"] = {"Authorization": f"Bearer {secret}"}
    cfg_path.write_text(json.dumps(cfg))
    site = tmp_path / "site"
    lb = build_leaderboard([runs["openai"], runs["hf"]], site)
    write_all(lb, site, plots=False)
    for f in site.iterdir():
        assert secret not in f.read_text(), f
    # the backend's name, whichever key its describe() records it under
    assert [m["settings"]["backend"] for m in lb["measured"]] == ["openai", "hf"]
    md = (site / "leaderboard.md").read_text()
    assert "| measured: run-openai (thinking on · T=0 · max 4096 tok · openai) |" in md
    assert "| measured: run-hf (thinking on · T=0 · max 4096 tok · hf) |" in md
    assert verify(site).ok


def test_cli_build_and_verify_exit_codes(fake_board, tmp_path):
    a, b = fake_board["runs"]
    out = tmp_path / "site"
    proc = dt_eval("leaderboard", "build", a, b, "--published", PUBLISHED, "--out", out, "--no-plots",
                   "--name", f"{b}=my-rl-model")
    assert f"2 measured row(s), {N_REPORTED} reported row(s)" in proc.stdout
    assert not (out / "plots").exists() and (out / "index.html").exists()
    ok = dt_eval("leaderboard", "verify", out)
    assert ok.stdout.startswith("OK: 2 run(s)")
    (out / "leaderboard.csv").write_text("edited\n")
    bad = dt_eval("leaderboard", "verify", out, check=False)
    assert bad.returncode == 1 and "FAILED" in bad.stderr and "leaderboard.csv differs" in bad.stderr
    err = dt_eval("leaderboard", "build", tmp_path, "--out", tmp_path / "x", check=False)
    assert err.returncode == 2 and "no samples.jsonl" in err.stderr
    bad_pub = tmp_path / "bad.yaml"
    bad_pub.write_text("schema: dt-eval-published/1\nentries: [{model: M, citation: c, source: nope, scores: {}}]\n")
    err = dt_eval("leaderboard", "build", a, "--published", bad_pub, "--out", tmp_path / "y", check=False)
    assert err.returncode == 2 and "entries.0.source (M)" in err.stderr


def test_help_does_not_import_matplotlib():
    code = ("import sys, contextlib, io\nfrom dt_eval.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    assert main(['--help']) == 0 and main(['leaderboard', '--help']) == 0\n"
            "assert 'build' in out.getvalue()\n"
            "print(sorted(m for m in ('matplotlib', 'dt_eval.reporting.leaderboard.render', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# ranked tables: CIs, paired tests against the best measured row, subsets, LaTeX, plots

ODD_NAME = "a_b & 50% {x} #1 ~^\\"  # every LaTeX special character


@pytest.fixture(scope="module")
def ranked_board(tmp_path_factory):
    """Three runs on one MMAU file: a strong one, a weak one (a different model), and a --limit 10
    subset of a third; built with the project's published numbers."""
    root = tmp_path_factory.mktemp("ranked")
    mmau = write_bench(root, "mmau", mmau_records(60, 11))
    strong = fake_run(root / "runs" / "strong", {"mmau": mmau}, 0.9, seed=21, model="org/Strong-Audio-7B")
    weak = fake_run(root / "runs" / "weak", {"mmau": mmau}, 0.3, seed=22, model="org/Weak-Audio-7B")
    subset = fake_run(root / "runs" / "subset", {"mmau": mmau}, 0.6, seed=23, model=ODD_NAME, limit=10)
    published, sha = load_published(PUBLISHED)
    out = root / "site"
    lb = build_leaderboard([strong, weak, subset], out, published=published, published_path=PUBLISHED,
                           published_sha256=sha)
    write_all(lb, out)
    return {"root": root, "out": out, "lb": lb, "runs": [strong, weak, subset]}


def _verdicts(run: Path, task: str) -> dict[str, bool]:
    """item id -> correct, read straight from samples.jsonl (independent of the leaderboard code)."""
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    return {r["id"]: bool(r["correct"]) for r in recs if r["task"] == task}


def test_ranked_table_tests_each_run_against_the_best_measured_row(ranked_board):
    from dt_eval.scoring.stats import mcnemar_exact, wilson_interval

    lb = ranked_board["lb"]
    (table,) = [t for t in lb["main_tables"] if t["key"] == "mmau"]
    assert table["best_measured"] == 0
    by = {(r["kind"], r["row"]): r for r in table["rows"]}
    best = _verdicts(ranked_board["runs"][0], "mmau")
    for i in (1, 2):
        mine = _verdicts(ranked_board["runs"][i], "mmau")
        shared = [k for k in mine if k in best]
        up = sum(mine[k] and not best[k] for k in shared)
        down = sum(best[k] and not mine[k] for k in shared)
        vs = by[("measured", i)]["vs_best"]
        assert vs["status"] == "tested" and vs["method"] == "mcnemar-exact" and vs["n_shared"] == len(shared)
        assert (vs["flips_up"], vs["flips_down"]) == (up, down)
        assert vs["p"] == pytest.approx(mcnemar_exact(up, down))
        assert vs["diff"] == pytest.approx((sum(mine[k] for k in shared) - sum(best[k] for k in shared))
                                           / len(shared) * 100)
        assert vs["significant"] == (vs["p"] < 0.05)
    assert by[("measured", 1)]["vs_best"]["significant"]  # 0.9 vs 0.3 on 60 items
    # the CI on each measured cell is the Wilson interval of its verdicts
    weak = _verdicts(ranked_board["runs"][1], "mmau")
    low, high = wilson_interval(sum(weak.values()), len(weak))
    cell = lb["measured_cells"][1]["mmau"]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((low * 100, high * 100))
    # reported rows are ranked among them but never tested
    assert all(r["vs_best"] == {"status": "not tested", "why": "reported: no per-item outputs"}
               for r in table["rows"] if r["kind"] == "reported")
    ranks = [r["rank"] for r in table["rows"]]
    assert ranks == sorted(ranks) and ranks[0] == 1
    md = (ranked_board["out"] / "leaderboard.md").read_text()
    rows = md_table(md, "MMAU test-mini")
    weak_row = next(r for r in rows if r[1] == "Weak-Audio-7B")
    assert weak_row[3].endswith("\\*") and weak_row[4].endswith(" \\*") and "p < 0.0001" in weak_row[4]
    assert next(r for r in rows if r[1] == "Strong-Audio-7B")[4] == "best measured"
    assert "not corrected for multiple comparisons" in md and "McNemar's exact test" in md


def test_subset_runs_are_marked_in_the_table_and_warned_about(ranked_board, fake_board):
    lb = ranked_board["lb"]
    sub = lb["measured"][2]["tasks"]["mmau"]
    assert sub["subset"] == "subset: 10 of 1000 items (--limit 10), not a known release file"
    assert f"{ODD_NAME} (subset) mmau: subset: 10 of 1000 items (--limit 10)" in lb["warnings"][2]
    md = (ranked_board["out"] / "leaderboard.md").read_text()
    row = next(r for r in md_table(md, "MMAU test-mini") if r[2].startswith("measured: subset"))
    assert row[-1] == sub["subset"]
    assert md.count("**Not the whole benchmark:**") == 1
    # a run on a known release file, all of it, carries no mark
    full = dict(sub, items=1000, limit=None, data_version_label="test-mini 2025-08 release")
    from dt_eval.reporting.leaderboard.build import subset_text

    assert subset_text(full) is None


def _tex_tables(tex: str) -> list[str]:
    return re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, re.DOTALL)


def _braces_balance(text: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_latex_tables_are_booktabs_escaped_and_balanced(ranked_board):
    tex = (ranked_board["out"] / "leaderboard.tex").read_text()
    lb = ranked_board["lb"]
    tables = _tex_tables(tex)
    assert len(tables) == len(lb["main_tables"]) and _braces_balance(tex)
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == len(tables)
    for table, t in zip(tables, lb["main_tables"]):
        assert _braces_balance(table)
        spec = re.search(r"\\begin\{tabular\}\{([a-z]+)\}", table).group(1)
        body = table.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
        lines = [x for x in body.splitlines() if x.strip() and x.strip() != "\\midrule"]
        assert len(lines) == 1 + len(t["rows"])  # the header and one line per ranked row
        for line in lines:
            assert line.endswith(" \\\\") and len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, line
        assert table.count("\\toprule") == table.count("\\midrule") == table.count("\\bottomrule") == 1
    mmau = tables[[t["key"] for t in lb["main_tables"]].index("mmau")]
    # names escaped, the CI in small type, reported rows daggered and cited, the subset marked
    assert "a\\_b \\& 50\\% \\{x\\} \\#1 \\textasciitilde{}\\textasciicircum{}\\textbackslash{}" in mmau
    strong = lb["measured_cells"][0]["mmau"]
    assert f"{strong['value']:.2f} {{\\scriptsize [{strong['ci_low']:.2f}, {strong['ci_high']:.2f}]}}" in mmau
    assert "Audio-DeepThinker$^{\\dagger}$" in mmau and "\\cite{he2026audiodeepthinker}" in mmau
    assert "$^{\\mathrm{s}}$~Not the whole benchmark:" in mmau and "10$^{\\mathrm{s}}$" in mmau
    assert "$^{*}$" in mmau and "best" in mmau  # the weak run differs significantly from the best
    assert "†" not in tex and "‡" not in tex  # no raw Unicode marks: letters and \\dagger
    import shutil

    if shutil.which("pdflatex"):  # compile it where a TeX installation exists
        doc = ranked_board["root"] / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage{booktabs}"
                       "\\begin{document}\\input{" + str(ranked_board["out"] / "leaderboard") + "}\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                              cwd=doc.parent, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_verify_recomputes_intervals_tests_and_the_latex(ranked_board, tmp_path):
    shutil.copytree(ranked_board["root"] / "runs", tmp_path / "runs")
    shutil.copytree(ranked_board["out"], tmp_path / "site")
    site = tmp_path / "site"
    assert verify(site, plots=False).ok
    original = (site / "leaderboard.json").read_text()
    # 1) a narrower interval written into the JSON and every file rendered from it
    lb = json.loads(original)
    lb["measured"][1]["tasks"]["mmau"]["accuracy_ci"]["low"] += 5
    lb["measured_cells"][1]["mmau"]["ci_low"] += 5
    write_all(lb, site, plots=False)
    text = "\n".join(verify(site, plots=False).problems)
    assert "Weak-Audio-7B (weak): mmau accuracy_ci.low = " in text and "recomputed from samples.jsonl" in text
    # 2) a test against the best row that says "not significant"
    lb = json.loads(original)
    (table,) = [t for t in lb["main_tables"] if t["key"] == "mmau"]
    row = next(r for r in table["rows"] if r["kind"] == "measured" and r["row"] == 1)
    row["vs_best"]["p"], row["vs_best"]["significant"] = 0.5, False
    write_all(lb, site, plots=False)
    text = "\n".join(verify(site, plots=False).problems)
    assert "leaderboard.json main_tables differ from a rebuild" in text and "vs_best.p" in text
    # 3) a hand edit of the LaTeX
    (site / "leaderboard.json").write_text(original)
    write_all(json.loads(original), site, plots=False)
    assert verify(site, plots=False).ok
    tex = site / "leaderboard.tex"
    tex.write_text(tex.read_text().replace("Weak-Audio-7B", "Weak-Audio-8B", 1))
    assert any("leaderboard.tex differs from a fresh render" in p for p in verify(site, plots=False).problems)


def test_plots_have_no_overlapping_labels_and_no_empty_panels(fake_board, ranked_board, tmp_path):
    from dt_eval.reporting.leaderboard.render import plot_figures, text_overlaps

    # fake_board: run a has both reasoning scores, long MMAR category names, runs with repeats;
    # Audio-DeepThinker and the challenge winner share one point (65.29, 74.0)
    with plot_figures(fake_board["lb"]) as figs:
        assert len(figs["accuracy-vs-reasoning"].axes) == 2
        for name, fig in figs.items():
            assert text_overlaps(fig) == [], name
            for ax in fig.axes:
                assert ax.has_data(), f"{name}: an empty panel"
    # no reasoning scores measured; the published file has MMAR-Rubrics only: one panel, not two
    with plot_figures(ranked_board["lb"]) as figs:
        (ax,) = figs["accuracy-vs-reasoning"].axes
        assert "Rubrics" in ax.get_title() and all(text_overlaps(f) == [] for f in figs.values())
    # no reasoning score anywhere: no such plot at all
    bare = build_leaderboard(ranked_board["runs"][:2], tmp_path / "bare")
    with plot_figures(bare) as figs:
        assert "accuracy-vs-reasoning" not in figs and figs
        assert all(text_overlaps(f) == [] for f in figs.values())


def test_text_overlaps_catches_a_crowded_plot():
    """The layout check itself: labels written over each other, and a legend over the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dt_eval.reporting.leaderboard.render import text_overlaps

    fig, ax = plt.subplots(figsize=(3, 2))
    try:
        ax.bar(range(6), [50] * 6, label="a run")
        ax.set_xticks(range(6))
        ax.set_xticklabels(["mix-sound-music-speech"] * 6)
        ax.legend(loc="center")
        problems = text_overlaps(fig)
        assert any("overlaps" in p for p in problems) and any("legend covers" in p for p in problems)
    finally:
        plt.close(fig)


def test_html_source_column_wraps(ranked_board):
    page = (ranked_board["out"] / "index.html").read_text()
    assert "td.src, th.src { white-space: normal;" in page
    assert page.count('<td class="src"') == sum(len(t["rows"]) for t in ranked_board["lb"]["main_tables"])
    assert 'id="subset-warning"' in page


# ---------------------------------------------------------------------------------------------
# real runs with the tiny model (slow)


@pytest.fixture(scope="module")
def tiny_model(request):
    """The deterministic tiny Qwen2-Audio: $DT_EVAL_TEST_TINY_MODEL (a prebuilt copy) when set,
    else conftest's `det_model_dir`, else the cached build."""
    import os

    if os.environ.get("DT_EVAL_TEST_TINY_MODEL"):
        return Path(os.environ["DT_EVAL_TEST_TINY_MODEL"])
    try:
        return request.getfixturevalue("det_model_dir")
    except pytest.FixtureLookupError:
        from dt_eval.testing.tiny_qwen2audio import cached_tiny_model

        return cached_tiny_model(deterministic=True)


@pytest.fixture(scope="module")
def real_board(tiny_model, tmp_path_factory):
    """Two real runs with different settings, and the leaderboard built by the CLI."""
    from dt_eval.testing.synth_audio import make_fake_benchmark

    root = tmp_path_factory.mktemp("lbreal")
    mmau = make_fake_benchmark(root / "bench" / "mmau", "mmau", 6, seed=3)
    mmar = make_fake_benchmark(root / "bench" / "mmar", "mmar", 6, seed=5)
    mmar2 = make_fake_benchmark(root / "bench" / "mmar-other", "mmar", 6, seed=6)  # another metadata file
    runs = root / "runs"
    common = ["--model", tiny_model, "--backend", "hf", "--batch-size", "6", "--no-progress", "--tasks", "mmau,mmar"]
    dt_eval("run", *common, "--data-dir", f"mmau={mmau}", "--data-dir", f"mmar={mmar}",
            "--output", runs / "think-on")
    dt_eval("run", *common, "--data-dir", f"mmau={mmau}", "--data-dir", f"mmar={mmar2}",
            "--output", runs / "think-off-k2", "--thinking", "off", "--limit", "4", "--repeats", "2",
            "--gen-kwargs", "temperature=0.7,top_p=0.9,max_tokens=48")
    write_cot(runs / "think-on", "mmar", hybrid=0.72, rubric=0.8)  # reasoning scores on one run
    pub = test_yaml(root, [{
        "model": "tiny-qwen2audio (test anchor)", "alias": "tiny-qwen2audio",
        "citation": "dt-eval tests, made-up anchor for the diff column", "source": "https://example.org/tiny",
        "checked": "unverified", "scores": {"mmau": 90.0, "mmar": 95.0},
    }])
    site = root / "site"
    proc = dt_eval("leaderboard", "build", runs / "think-on", runs / "think-off-k2", "--published", pub,
                   "--out", site, "--name", f"{runs / 'think-on'}=tiny-qwen2audio",
                   "--name", f"{runs / 'think-off-k2'}=tiny-qwen2audio")
    return {"root": root, "site": site, "runs": runs, "build": proc,
            "lb": json.loads((site / "leaderboard.json").read_text())}


@pytest.mark.slow
def test_real_runs_build_and_verify(real_board):
    from dt_eval.reporting.tables import load_run_results

    lb, site = real_board["lb"], real_board["site"]
    on, off = lb["measured"]
    for m, run in ((on, "think-on"), (off, "think-off-k2")):  # the numbers `dt-eval report` prints
        rep = load_run_results(real_board["runs"] / run)["tasks"]
        for task in ("mmau", "mmar"):
            assert m["tasks"][task]["accuracy"]["mean"] == pytest.approx(rep[task]["accuracy_mean"])
            assert m["tasks"][task]["accuracy"]["std"] == pytest.approx(rep[task]["accuracy_std"])
    assert on["tasks"]["mmar"]["items"] == 6 and on["tasks"]["mmar"]["cot"]["hybrid"]["mean"] is not None
    assert off["settings"]["thinking"] == "off" and off["tasks"]["mmau"]["repeats"] == 2
    assert off["tasks"]["mmau"]["items"] == 4 and off["tasks"]["mmau"]["limit"] == 4
    # different metadata (MMAR) and a different item subset (MMAU --limit 4) are both marked
    assert lb["measured_cells"][1]["mmar"]["marker"] and lb["measured_cells"][1]["mmau"]["marker"]
    assert not lb["measured_cells"][0]["mmar"]["marker"]
    notes = (site / "leaderboard.md").read_text().split("Comparability notes")[1]
    assert "first 4 (--limit)" in notes and off["tasks"]["mmar"]["data_sha256"][:12] in notes
    # both runs meet the made-up anchor: measured minus reported
    mine = [d for d in lb["diffs"] if lb["reported"][d["reported"]]["model"] == "tiny-qwen2audio (test anchor)"]
    assert {(d["measured"], d["column"]) for d in mine} == {(0, "mmau"), (0, "mmar"), (1, "mmau"), (1, "mmar")}
    assert next(d for d in mine if d == mine[0])["delta"] == pytest.approx(
        lb["measured_cells"][0][mine[0]["column"]]["value"] - (90.0 if mine[0]["column"] == "mmau" else 95.0))
    ok = dt_eval("leaderboard", "verify", site)
    assert ok.stdout.startswith("OK: 2 run(s)")


@pytest.mark.slow
def test_real_run_corrupted_sample_fails_verify(real_board, tmp_path):
    shutil.copytree(real_board["runs"], tmp_path / "runs")
    shutil.copytree(real_board["site"], tmp_path / "site")
    from dt_eval.tasks.data import item_from_record

    samples = tmp_path / "runs" / "think-on" / "samples.jsonl"
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    i = next(i for i, r in enumerate(recs) if r["task"] == "mmau")
    # one sample's output replaced by the other answer; the record rebuilt consistently from it
    r, cfg = recs[i], load_task("mmau")
    flip = "falling" if r["correct"] == (r["meta"]["answer"] == "rising") else "rising"
    text = f"<think>\nThe pitch goes {'up' if flip == 'rising' else 'down'}.\n</think>\n\n" \
           f"({'AB'[r['meta']['choices'].index(flip)]}) {flip}"
    item = item_from_record(cfg, r["meta"], r["index"], None)
    recs[i] = make_sample_record(cfg, r["index"], item, r["repeat"],
                                 Generation(key=r["key"], text=text, finish_reason="stop"), [], None) | {"meta": r["meta"]}
    assert recs[i]["correct"] != r["correct"]
    samples.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recs))
    before = real_board["lb"]["measured"][0]["tasks"]["mmau"]["accuracy"]["mean"]
    after = before + (100 / 6 if recs[i]["correct"] else -100 / 6)
    bad = dt_eval("leaderboard", "verify", tmp_path / "site", check=False)
    assert bad.returncode == 1
    show = lambda v: f"{v:.4f}".rstrip("0").rstrip(".")  # noqa: E731
    assert (f"tiny-qwen2audio (think-on): mmau accuracy.mean = {show(before)} in the leaderboard, "
            f"{show(after)} recomputed from samples.jsonl") in bad.stderr
    assert "samples.jsonl changed since the leaderboard was built" in bad.stderr


def _chromium() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("Debian chromium not installed (make setup-browser: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    return exe


@pytest.mark.slow
@pytest.mark.browser
def test_browser_sorts_columns_and_screenshot(real_board):
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    lb = real_board["lb"]
    page_path = real_board["site"] / "index.html"
    args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            table = "table[data-key='mmar']"
            heads = page.locator(f"{table} thead th")
            headers = heads.all_inner_texts()
            col = next(i for i, h in enumerate(headers) if h.strip() == "MMAR (95% CI)")

            def column(idx: int) -> list[str]:
                return page.eval_on_selector_all(f"{table} tbody tr",
                                                 f"rows => rows.map(r => r.cells[{idx}].getAttribute('data-v'))")

            def kinds() -> list[str]:
                return page.eval_on_selector_all(f"{table} tbody tr", "rows => rows.map(r => r.className)")

            # as built: ranked by MMAR, measured and reported rows in one table
            (mmar,) = [t for t in lb["main_tables"] if t["key"] == "mmar"]
            vals = [float(v) for v in column(col) if v]
            assert vals == sorted(vals, reverse=True) and len(vals) == len(mmar["rows"])
            assert set(kinds()) == {"measured", "reported"}
            th = heads.nth(col)
            th.click()  # a number column sorts descending first
            assert [float(v) for v in column(col) if v] == vals and th.get_attribute("aria-sort") == "descending"
            th.click()
            asc = [float(v) for v in column(col) if v]
            assert asc == sorted(vals) and asc[0] == 21.90  # Audio Flamingo 2, the last row of Table 1 by MMAR
            # a text column sorts alphabetically
            heads.nth(1).click()
            names = column(1)
            assert names == sorted(names, key=str.lower)
            # reported rows are marked (badge, dagger, their own background) with their citation
            rep = page.locator(f"{table} tbody tr.reported").first
            assert "reported" in rep.locator(".badge").inner_text() and "†" in rep.locator("td").nth(1).inner_text()
            assert page.locator(f"{table} tbody tr.reported td.src").first.inner_text().startswith("reported: ")
            # long citations wrap inside the Source column instead of widening the table
            src = page.locator(f"{table} tbody tr.reported td.src").first
            style = src.evaluate("e => [getComputedStyle(e).whiteSpace, e.getBoundingClientRect().width, "
                                 "e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).lineHeight)]")
            assert style[0] == "normal" and style[1] <= 30 * 14 + 2 * 10 + 1 and style[2] > 1.5 * style[3]
            # the subset warning is on the page
            assert "Not the whole benchmark" in page.locator("#subset-warning").inner_text()
            heads.nth(col).click()  # leave the screenshot ranked by MMAR
            # the page loaded nothing from the network
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "leaderboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
    # keep the plots beside the screenshot for a look
    for png in (real_board["site"] / "plots").glob("*.png"):
        shutil.copy(png, ARTIFACTS / f"leaderboard-{png.name}")


def test_training_metadata_passes_through(tmp_path):
    ckpt = tmp_path / "ckpt" / "global_step300"
    ckpt.mkdir(parents=True)
    recipe = {"stage": 2, "step": 300, "reward": {"acc": 1.0, "sim_llm": 1.0, "kl_beta": 0.001},
              "base_model": "Qwen/Qwen3-Omni-30B-A3B-Instruct"}
    (ckpt / "dt_recipe.json").write_text(json.dumps(recipe))
    bench = write_bench(tmp_path, "mmau", mmau_records(12, 5))
    run = fake_run(tmp_path / "run", {"mmau": bench}, 0.6, model=str(ckpt))
    lb = build_leaderboard([run], tmp_path / "site")
    m = lb["measured"][0]
    assert m["training"] == recipe and m["name"] == "ckpt/global_step300"
    write_all(lb, tmp_path / "site", plots=False)
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "stage 2 · step 300" in md
    assert '&quot;kl_beta&quot;: 0.001' in (tmp_path / "site" / "index.html").read_text()
    assert verify(tmp_path / "site").ok
