"""`rescore_run` on a run directory against the fake judge: cot.jsonl lines, exact aggregates and
unscored accounting, results.json merge, a rescore with zero judge calls, the CLI commands
(`dt-eval rescore`, `dt-eval refs build`, `dt-eval report`, `dt-eval run --cot`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dt_eval.reasoning.refs import load_references, read_references
from dt_eval.reasoning.rescore import COT_FILE, RescoreError, load_cot_aggregates, parse_cot, rescore_run

from .cli import invoke
from .test_cot_support import FakeJudge, StubEmbedder, make_run_dir

pytestmark = pytest.mark.slow  # servers on 127.0.0.1 (threads; no model)

KW = dict(judge_timeout_s=5, judge_max_retries=1, judge_parse_retries=1, judge_concurrency=8)


def cot_lines(run):
    return [json.loads(x) for x in (run / COT_FILE).read_text().splitlines() if x.strip()]


def outputs_with_faults(n):
    """Even items correct, odd wrong; item 2 never gets a parseable judge reply; item 4 chain
    carries evaluator dims and rubric scores."""
    out = []
    from .synthetic_meta import mmar_records

    for i, rec in enumerate(mmar_records(n)):
        wrong = next(c for c in rec["choices"] if c != rec["answer"])
        chain = f"Item {i}: I weigh the cues [[emb=0.{i}]]"
        if i == 2:
            chain += " [[id=bad faults=always:badjson]]"
        if i == 4:
            chain += " [[dims=10,10,10,10]] [[rubric=1,0,0,0,0]]"
        out.append((chain, rec["answer"] if i % 2 == 0 else wrong))
    return out


def test_rescore_all_scorers_exact_accounting(tmp_path):
    run = tmp_path / "run"
    make_run_dir(run, n=6, outputs=outputs_with_faults(6))
    with FakeJudge() as srv:
        agg = rescore_run(run, "all", srv.url, "fake-judge", StubEmbedder(), **KW)["mmar"]
        n_first = len(srv.chat_requests())
        kinds = srv.by_kind()
    lines = cot_lines(run)
    assert len(lines) == 6 * 7 and {ln["scorer"] for ln in lines} == set(parse_cot("all"))
    assert all(set(ln) >= {"key", "task", "id", "repeat", "scorer", "value", "scored", "raw", "error"}
               for ln in lines)
    # correct items: 0, 2, 4. Item 2: evaluator and rubrics never parse -> unscored.
    h = agg["hybrid"]
    llm = {0: 0.8, 4: 1.0}
    emb = {0: 0.0, 4: 0.4}
    assert h["scored"] == 5 and h["unscored"] == 1 and h["gated_zero"] == 3 and h["correct"] == 3
    assert h["mean"] == pytest.approx((0.5 * llm[0] + 0.5 * emb[0] + 0.5 * llm[4] + 0.5 * emb[4]) / 5)
    assert h["llm_mean"] == pytest.approx(0.9) and h["emb_mean"] == pytest.approx(sum(range(6)) / 60)
    [(reason, count)] = h["unscored_reasons"].items()
    assert count == 1 and reason.startswith("LLM evaluator: unparseable judge reply")
    assert agg["stage2"]["mean"] == pytest.approx((0.8 + 1.0) / 5) and agg["stage2"]["unscored"] == 1
    assert agg["evaluator"]["scored"] == 5 and agg["evaluator"]["unscored"] == 1  # ungated: all 6 asked
    # item 2's judge faults hit every prompt kind, the consistency check included
    assert agg["consistency"]["mean"] == 1.0 and agg["consistency"]["scored"] == 5
    assert agg["consistency"]["unscored_reasons"] == {"unparseable judge reply": 1}
    assert agg["format"]["mean"] == 1.0  # server-split reasoning + answer
    r = agg["rubrics"]
    assert r["scored"] == 5 and r["unscored"] == 1 and r["not_applicable"] == 0
    assert r["score"] == pytest.approx((1.0 + 0.2) / 5 * 100) and r["accuracy"] == pytest.approx(40.0)
    assert agg["unscored"] == 5  # item 2 in hybrid, stage2, evaluator, consistency, rubrics
    # exact judge traffic (parse_retries=1: an unparseable item costs 2 requests per call):
    # evaluator: hybrid asks the 3 correct items (item 2 twice); stage2 hits the cache but for
    # item 2; the ungated evaluator pass adds the 3 wrong items and item 2 again
    assert kinds["evaluator"] == (1 + 2 + 1) + 2 + (3 + 2)
    assert kinds["consistency"] == 5 + 2
    # rubrics: items 0 and 4: 5 raters; item 2: 5 raters x 20 tries (the official budget, not parse_retries)
    assert kinds["rubrics"] == 2 * 5 + 5 * 20
    assert agg["judge_calls"] == n_first == sum(kinds.values())
    # results.json: merged under each task, official numbers untouched
    res = json.loads((run / "results.json").read_text())
    assert res["tasks"]["mmar"]["cot"]["hybrid"]["mean"] == pytest.approx(h["mean"])
    assert "accuracy_mean" in res["tasks"]["mmar"]
    # aggregates recomputed from cot.jsonl equal the returned ones
    again = load_cot_aggregates(run)["mmar"]
    assert again["hybrid"] == {k: v for k, v in h.items()}


def test_rescore_again_costs_no_judge_calls(tmp_path):
    run = tmp_path / "run"
    make_run_dir(run, n=8)
    with FakeJudge() as srv:
        first = rescore_run(run, ["hybrid", "rubrics", "consistency"], srv.url, "fake-judge", StubEmbedder(), **KW)
        n1 = len(srv.chat_requests())
        assert n1 == 4 + 4 * 5 + 8  # evaluator for 4 correct, 5 raters x 4, consistency x 8
        second = rescore_run(run, ["hybrid", "rubrics", "consistency"], srv.url, "fake-judge", StubEmbedder(), **KW)
        assert len(srv.chat_requests()) == n1  # zero new judge calls
    a, b = first["mmar"], second["mmar"]
    for name in ("hybrid", "rubrics", "consistency"):
        assert a[name]["mean"] == b[name]["mean"] and b[name]["judge_calls"] == 0
    assert b["hybrid"]["cached"] == 4
    assert len(cot_lines(run)) == 2 * 3 * 8  # append-only; the latest line per key and scorer wins
    # a later rescore with another scorer keeps the earlier ones in results.json
    only = rescore_run(run, "format", None, "fake-judge", None, **KW)["mmar"]
    assert only["scorers"] == ["format"]
    merged = json.loads((run / "results.json").read_text())["tasks"]["mmar"]["cot"]
    assert merged["scorers"] == ["hybrid", "consistency", "format", "rubrics"]
    assert merged["hybrid"]["mean"] == a["hybrid"]["mean"]


def test_generation_errors_and_missing_references(tmp_path):
    run = tmp_path / "run"
    samples = make_run_dir(run, n=4, task="mmau")  # MMAU: no reference chains, no rubrics
    broken = dict(samples[0], error="HTTP 500", output="", reasoning=None, reasoning_text=None, correct=False,
                  extracted=None)
    with open(run / "samples.jsonl", "a") as f:  # a retried sample that failed: the last line wins
        f.write(json.dumps(broken) + "\n")
    with FakeJudge() as srv:
        agg = rescore_run(run, "hybrid,rubrics,format", srv.url, "fake-judge", StubEmbedder(), **KW)["mmau"]
        assert len(srv.chat_requests()) == 0
    assert agg["hybrid"]["unscored"] == 1 and agg["hybrid"]["unscored_reasons"] == {"no reference chain": 1}
    assert agg["hybrid"]["gated_zero"] == 3  # the failed generation counts as a wrong answer
    assert agg["rubrics"]["not_applicable"] == 4 and agg["rubrics"]["scored"] == 0 and agg["rubrics"]["unscored"] == 0
    assert agg["format"]["mean"] == pytest.approx(0.75)


def test_references_file_overrides_item_field(tmp_path):
    run = tmp_path / "run"
    samples = make_run_dir(run, n=2, task="mmau")
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"format": "dt-eval-refs", "format_version": 1, "prompt_version": "x",
                                "teacher_model": "t", "task": "mmau"}) + "\n" +
                    json.dumps({"id": samples[0]["id"], "reference": "teacher chain"}) + "\n")
    with FakeJudge() as srv:
        agg = rescore_run(run, "hybrid", srv.url, "fake-judge", StubEmbedder(), references=str(refs), **KW)["mmau"]
        prompts = [r.text for r in srv.chat_requests()]
    assert agg["hybrid"]["scored"] == 2 and agg["references"] == str(refs)
    assert len(prompts) == 1 and "teacher chain" in prompts[0]


def test_bad_options():
    with pytest.raises(RescoreError):
        parse_cot("hybrid,nonsense")
    with pytest.raises(RescoreError):
        rescore_run("/nonexistent", "rubrics", None)


def test_cli_rescore_report_and_refs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    make_run_dir(run, n=4)
    monkeypatch.setenv("DT_EVAL_JUDGE_API_KEY", "sk-never-in-records")
    with FakeJudge() as srv:
        res = invoke(["rescore", str(run), "--cot", "rubrics,consistency,format", "--judge-url", srv.url,
                      "--judge-model", "fake-judge", "--json"])
        assert res.exit_code == 0, res.output
        agg = json.loads(res.stdout)
        assert agg["mmar"]["rubrics"]["score"] == pytest.approx(50.0)
        assert agg["mmar"]["judge"]["api_key_source"] == "env:DT_EVAL_JUDGE_API_KEY"
        res = invoke(["report", str(run)])
        assert res.exit_code == 0, res.output
        assert "rubrics" in res.output and "consistency" in res.output and "cot unscored" in res.output
        # refs build from a benchmark directory, with the fake judge as the teacher
        bench = tmp_path / "bench"
        bench.mkdir()
        from .synthetic_meta import mmau_records

        (bench / "mmau-test-mini.json").write_text(json.dumps(mmau_records(3)))
        out = tmp_path / "refs" / "mmau.jsonl"
        args = ["refs", "build", "--task", "mmau", "--teacher-url", srv.url, "--teacher-model", "teacher",
                "--data-dir", str(bench), "--out", str(out)]
        res = invoke(args)
        assert res.exit_code == 0, res.output
        assert "3 written" in res.output
        header, lines = read_references(out)
        assert header["teacher_model"] == "teacher" and header["prompt_version"].startswith("dt-eval-reference-v1@")
        refs = load_references(out)
        assert len(refs) == 3 and all("point to" in v for v in refs.values())
        res = invoke(args)  # resumable: nothing left to do
        assert res.exit_code == 0 and "0 written, 3 already there" in res.output
    for f in (run / COT_FILE, run / "results.json", out):
        assert "sk-never-in-records" not in f.read_text()


def test_cli_rescore_prints_the_official_rubrics_tables(tmp_path):
    """`dt-eval rescore --cot rubrics` prints the official script's modality / category /
    sub-category tables and totals (score and accuracy over scored items), then our notes:
    reasoning over 10,000 characters is cut before judging, and says so."""
    from .synthetic_meta import mmar_records

    recs = mmar_records(8)
    marks = {0: "1,1,1,1,1", 2: "1,0,0,0,0", 4: "1,1,0,0,0", 6: "1,1,1,0,0"}  # item scores 1.0 .2 .4 .6
    outputs = []
    for i, rec in enumerate(recs):
        wrong = next(c for c in rec["choices"] if c != rec["answer"])
        chain = f"Item {i} [[rubric={marks.get(i, '1,1,1,1,1')}]] " + ("x" * 12_000 + "TAIL" if i == 4 else "")
        outputs.append((chain, rec["answer"] if i % 2 == 0 else wrong))
    run = tmp_path / "run"
    make_run_dir(run, records=recs, outputs=outputs)
    with FakeJudge() as srv:
        res = invoke(["rescore", str(run), "--cot", "rubrics", "--judge-url", srv.url])
        assert res.exit_code == 0, res.output
        sent = [r.text for r in srv.chat_requests()]
        assert len(sent) == 4 * 5 and not any("TAIL" in t for t in sent)
    lines = res.output.splitlines()
    start = lines.index("mmar: MMAR-Rubrics, as the official scorer prints it")
    block = lines[start + 1:]
    # modality = MMAR_MODALITIES[i % 7]: sound holds items 0 (1.0) and 7 (wrong)
    assert block[:3] == ["*" * 30, "Modality-wise Score & Accuracy:",
                         f"{'sound':<25}  score=50.00, acc=50.00% over   2 samples"]
    cat = block.index("Category-wise Score & Accuracy:")
    assert block[cat + 1:cat + 5] == [  # category = MMAR_CATEGORIES[i % 4]
        f"{'Signal Layer':<18}  score=70.00, acc=100.00% over   2 samples",
        f"{'Perception Layer':<18}  score=0.00, acc=0.00% over   2 samples",
        f"{'Semantic Layer':<18}  score=40.00, acc=100.00% over   2 samples",
        f"{'Cultural Layer':<18}  score=0.00, acc=0.00% over   2 samples"]
    sub = block.index("Sub-category-wise Score & Accuracy:")
    rows = block[sub + 1:block.index("Total Accuracy: 50.00% over 8 samples") - 1]
    assert sum(int(r.split(" over ")[1].split()[0]) for r in rows) == 8
    assert "Total Score: 27.50 over 8 samples" in block and "No prediction count: 0" in block
    note = next(x for x in block if x.startswith("[dt-eval] 1 sample(s) had thinking over 10,000"))
    assert "cut to 10,000" in note
    # the official script's behaviour on a file with the full text, on request
    with FakeJudge() as srv:
        res = invoke(["rescore", str(run), "--cot", "rubrics", "--judge-url", srv.url,
                      "--rubrics-full-thinking"])
        assert res.exit_code == 0, res.output
        sent = [r.text for r in srv.chat_requests()]
        assert len(sent) == 5 and all("TAIL" in t for t in sent)  # only item 4's prompt changed
    assert any(x.startswith("[dt-eval] 1 sample(s) had thinking of 10,000 characters or more: judged in full")
               for x in res.output.splitlines())


def test_help_does_not_import_torch():
    code = ("import sys; from dt_eval import cli; import dt_eval.cli.rescore, dt_eval.cli.refs, dt_eval.reasoning.rescore, dt_eval.reasoning.hybrid, "
            "dt_eval.reasoning.rubrics; assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_with_cot_end_to_end(tmp_path):
    """`dt-eval run --cot ...`: inference against the fake model server, then the reasoning scores."""
    from dt_eval.testing.synth_audio import make_fake_benchmark

    bench = make_fake_benchmark(tmp_path / "b", "mmar", 4, seed=1)
    run = tmp_path / "run"
    with FakeJudge() as srv:
        args = [sys.executable, "-m", "dt_eval.cli", "run", "--tasks", "mmar", "--model", "fake-model",
                "--backend", "openai", "--base-url", srv.url, "--data-dir", f"mmar={bench}", "--output", str(run),
                "--no-progress", "--cot", "format,rubrics,consistency", "--judge-url", srv.url,
                "--judge-model", "fake-judge"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=300, env=os.environ | {"NO_COLOR": "1"})
        assert p.returncode == 0, p.stderr
    assert "rubrics" in p.stdout and "consistency" in p.stdout
    res = json.loads((run / "results.json").read_text())["tasks"]["mmar"]
    cot = res["cot"]
    assert cot["samples"] == 4 and set(cot["scorers"]) == {"format", "rubrics", "consistency"}
    assert len(cot_lines(run)) == 4 * 3
    # the fake model's echo answers are wrong: rubric 0 without judge calls
    assert cot["rubrics"]["score"] == 0.0 and cot["rubrics"]["judge_calls"] == 0
