"""dt-eval's MMAR-Rubrics scorer against the challenge's own script (ddlBoJack/MMAR
code/evaluation_rubrics.py): byte-identical judge prompts, the same accept/reject decisions and
rater scores on judge replies, the same correctness rule.

The official script is not shipped with dt-eval: these tests read it from
$DT_EVAL_MMAR_RUBRICS_SCRIPT (a path to evaluation_rubrics.py) or from a git mirror of
ddlBoJack/MMAR ($DT_EVAL_MMAR_REPO, default /work/.mirror/ddlBoJack+MMAR/repo), and skip when
neither is there. It imports `openai` and `tqdm` (dev dependencies)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from dt_eval.reasoning import rubrics
from dt_eval.reasoning.judge import JudgeParseError
from dt_eval.scoring.official import mcq_match

from .cli import invoke
from .paths import MMAR_META
from .synthetic_meta import mmar_records


def _official_source(tmp: Path) -> Path | None:
    script = os.environ.get("DT_EVAL_MMAR_RUBRICS_SCRIPT")
    if script and Path(script).is_file():
        return Path(script)
    repo = os.environ.get("DT_EVAL_MMAR_REPO", "/work/.mirror/ddlBoJack+MMAR/repo")
    if not Path(repo).exists():
        return None
    try:
        text = subprocess.run(["git", "-C", repo, "show", "HEAD:code/evaluation_rubrics.py"], capture_output=True,
                              text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    out = tmp / "evaluation_rubrics.py"
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def official_script(tmp_path_factory):
    src = _official_source(tmp_path_factory.mktemp("official"))
    if src is None:
        pytest.skip("the official MMAR-Rubrics script is not available (set DT_EVAL_MMAR_RUBRICS_SCRIPT)")
    pytest.importorskip("openai")
    pytest.importorskip("tqdm")
    return src


@pytest.fixture(scope="module")
def official(official_script):
    src = official_script
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = "dummy-for-import"  # the script refuses to import without one
    try:
        spec = importlib.util.spec_from_file_location("mmar_evaluation_rubrics", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old
    return mod


def _records():
    if MMAR_META.exists():
        return [json.loads(x) for x in MMAR_META.read_text(encoding="utf-8").splitlines() if x.strip()]
    return mmar_records(50)


PREDICTIONS = [
    ("The clip has a low drone.\n  Then a    flute.\n", None),
    ("  indented first line\r\nsecond line\u2028third\n\n\n", "x"),
    ("", ""),
    ("$dollar ${brace} {curly} %s \\n", "$1"),
    ("line\n" * 50, None),
]


def test_constants_match(official):
    assert official.NUM_RATERS == rubrics.NUM_RATERS
    assert official.LENGTH_LIMIT == rubrics.LENGTH_LIMIT
    assert official.DEFAULT_API_MAX_RETRIES == rubrics.OFFICIAL_ATTEMPTS == rubrics.RubricsConfig().attempts
    assert official.MODEL_NAME == "gpt-4o-2024-11-20"
    assert official.SEED == 42
    assert official.EVALUATE_SYS_PROMPT == rubrics.load_prompt("rubrics_mmar").system


def test_prompts_byte_identical(official):
    n = 0
    for rec in _records():
        for thinking, answer in PREDICTIONS:
            answer = rec["answer"] if answer is None else answer
            want = official.create_evaluation_user_prompt(rec["question"], rec["answer"], rec["thinking"], rec["cue"],
                                                          thinking, answer, rec["rubric"])
            got = rubrics.build_user_prompt(rec["question"], rec["answer"], rec["thinking"], thinking, answer,
                                            rec["rubric"])
            assert got == want, rec["id"]
            n += 1
    assert n >= 250


def _replies(rubric):
    names = [c["name"] for c in rubric]
    good = [{"name": nm, "score": k % 2, "justification": "j"} for k, nm in enumerate(names)]
    yield json.dumps(good)
    yield "Here you go:\n```json\n" + json.dumps(good, indent=2) + "\n```\nHope this helps."
    yield json.dumps([dict(g, score=True) for g in good])  # bool is an int in Python
    yield json.dumps([dict(g, score=1.0) for g in good])
    yield json.dumps([dict(g, name="renamed") for g in good])
    yield json.dumps(good[:-1])
    yield json.dumps([dict(g, score=2) for g in good])
    yield json.dumps([dict(g, score="1") for g in good])
    yield json.dumps([{"name": nm} for nm in names])
    yield json.dumps({"items": good})
    yield "[{}]"
    yield "I cannot evaluate this."
    yield json.dumps(good) + "\n[{\"extra\": 1}]"  # greedy regex spans both lists
    yield "[" + json.dumps(good)[1:-1] + ",]"


def test_parser_agrees_with_official_validator(official):
    checked = 0
    for rec in _records()[:100]:
        for raw in _replies(rec["rubric"]):
            try:
                want = official.validate_and_score("t", raw, rec["rubric"])
            except official.ResponseValidationError:
                want = "reject"
            try:
                got = rubrics.parse_reply(raw, rec["rubric"])
            except JudgeParseError:
                got = "reject"
            assert got == want, raw[:200]
            checked += 1
    assert checked >= 100


def test_correctness_rule_matches_official(official):
    for rec in _records()[:300]:
        preds = [rec["answer"], rec["answer"].upper() + ".", f"The answer is {rec['answer']}", "", "none of these"]
        preds += [c for c in rec["choices"]] + [" ".join(rec["choices"])]
        for p in preds:
            assert mcq_match(rec["answer"], p, rec["choices"]) == official.string_match(rec["answer"], p, rec["choices"])


def _sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The summary as (header, rows) per block between separator lines; rows sorted (the official
    script prints table rows in completion order)."""
    out: list[tuple[str, list[str]]] = []
    for line in lines:
        if line == rubrics.SEPARATOR:
            out.append(("", []))
        elif out and not out[-1][0]:
            out[-1] = (line, [])
        elif out:
            out[-1][1].append(line)
    return [(h, sorted(rows)) for h, rows in out]


@pytest.mark.slow  # fake judges on 127.0.0.1 and the official script in a subprocess
def test_rescore_prints_what_the_official_script_prints(official_script, tmp_path):
    """dt-eval rescore on a run vs the official script on dt-eval's rubrics export of that run, each
    against its own fake judge with the same scripted faults: the same tables, totals and count of
    unscored items. One item gets 19 unparseable replies before good ones (scored only with the
    official 20-request budget), one never gets a parseable reply, one has 12,000 characters of
    thinking (the export cuts it; so does dt-eval's judging)."""
    import sys

    from dt_eval.storage.export import export_run

    from .test_cot_support import FakeJudge, make_run_dir

    recs = _records()
    recs = recs[::max(1, len(recs) // 14)][:14]
    outputs = []
    for i, rec in enumerate(recs):
        wrong = next(c for c in rec["choices"] if c != rec["answer"])
        chain = f"Item {i}: the cues [[rubric={','.join(str((i >> k) & 1) for k in range(5))}]]"
        chain += {2: " [[id=slow faults=" + ",".join(["badjson"] * 19) + "]]",
                  3: " [[id=never faults=always:badjson]]", 6: " " + "y" * 12_000}.get(i, "")
        outputs.append((chain, wrong if i % 3 == 1 else rec["answer"]))
    run = tmp_path / "run"
    make_run_dir(run, records=recs, outputs=outputs)
    with FakeJudge() as srv:
        res = invoke(["rescore", str(run), "--cot", "rubrics", "--judge-url", srv.url])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    start = lines.index("mmar: MMAR-Rubrics, as the official scorer prints it") + 1
    ours = [x for x in lines[start:] if not x.startswith(("[dt-eval]", "per-sample", "cot "))]

    sub = tmp_path / "submission.jsonl"
    export_run(run, "mmar", sub, fmt="rubrics")
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    with FakeJudge() as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-fake", "OPENAI_BASE_URL": srv.url}
        p = subprocess.run([sys.executable, str(official_script), "--input", str(sub), "--meta", str(meta),
                            "--output", str(tmp_path / "evaluated.jsonl"), "--retry-interval", "0", "--qps", "1000"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    theirs = p.stdout.splitlines()
    theirs = theirs[theirs.index(rubrics.SEPARATOR):]
    assert _sections(ours) == _sections(theirs), "\n".join(theirs)
    assert "No prediction count: 1" in theirs  # the never-parseable item, and only it
    assert f"Total Accuracy: {100 * 8 / 13:.2f}% over 13 samples" in theirs  # 1, 4, 7, 10, 13 wrong
