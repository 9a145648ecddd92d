"""The `dt-eval` command line: score, tasks, help; light imports; clear errors."""

import json
import random
import subprocess
import sys

import pytest

from .adversarial import build_prediction_file
from .reference_scoring import ref_mcq_report, ref_mmsu_report
from .synthetic_meta import mmar_records, mmau_records, mmsu_records


def dt_eval(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"dt-eval {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_score_mmau_prints_official_lines_and_writes_report(tmp_path):
    preds = build_prediction_file(mmau_records(200, 5), "mmau", random.Random(5))
    f = tmp_path / "sub.json"
    f.write_text(json.dumps(preds))
    out = tmp_path / "report.json"
    proc = dt_eval("score", "--task", "mmau", "--predictions", str(f), "--output", str(out))
    text, verdicts = ref_mcq_report(preds, "mmau")
    assert proc.stdout == text
    rep = json.loads(out.read_text())
    assert rep["items"] == [{"id": i, "correct": c} for i, c in verdicts]
    assert rep["correct"] == sum(c for _, c in verdicts) and rep["total"] == len(verdicts)
    assert f"{rep['accuracy']:.2f}%" in text.splitlines()[-3]
    assert rep["missing"] == sum("model_output" not in p for p in preds)
    assert set(rep["breakdowns"]) == {"task", "difficulty", "sub-category"}
    assert len(rep["predictions_sha256"]) == 64


def test_score_mmar_jsonl_with_extract(tmp_path):
    recs = mmar_records(50, 2)
    for r in recs:
        r["answer_prediction"] = f"<think>\nreasoning about {r['question']}\n</think>\n\n" \
                                 f"({'ABCDEFGH'[r['choices'].index(r['answer'])]})"
    f = tmp_path / "sub.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs))
    out = tmp_path / "r.json"
    proc = dt_eval("score", "--task", "mmar", "-p", str(f), "--extract", "-o", str(out))
    assert "Total Accuracy: 100.00% over 50 samples" in proc.stdout
    assert "official number without extraction" in proc.stderr
    rep = json.loads(out.read_text())
    assert rep["extracted"] and rep["accuracy"] == 100.0 and rep["official_raw"]["accuracy"] < 100.0


def test_score_mmsu(tmp_path):
    preds = [p for p in build_prediction_file(mmsu_records(120, 1), "mmsu", random.Random(1))
             if isinstance(p.get("response", ""), str)]
    f = tmp_path / "mmsu.jsonl"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in preds) + "\n")
    proc = dt_eval("score", "--task", "mmsu", "-p", str(f))
    assert proc.stdout == ref_mmsu_report(preds)[0]


def test_malformed_file_gives_clear_error_not_traceback(tmp_path):
    recs = [dict(r, model_output=r["answer"]) for r in mmau_records(5)]
    recs[3]["model_output"] = None
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(recs))
    proc = dt_eval("score", "--task", "mmau", "-p", str(f), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "record #3" in proc.stderr and "null" in proc.stderr
    proc = dt_eval("score", "--task", "nope", "-p", str(f), check=False)
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr and "mmau" in proc.stderr


def test_tasks_lists_counts_sources_metrics():
    rows = json.loads(dt_eval("tasks", "--json").stdout)
    by = {r["task"]: r for r in rows}
    assert by["mmau"]["items"] == 1000 and by["mmau-test"]["items"] == 9000 and by["mmsu"]["items"] == 5000
    assert "hub gamma-lab-umd/MMAU-test-mini" in by["mmau"]["source"]
    assert by["mmau-test"]["metric"].startswith("export only")
    assert {"mmar", "mmar-2025"} <= set(by)
    assert "mmau" in dt_eval("tasks").stdout


_PROBE = """
import sys
from dt_eval.cli import main
sys.argv = ["dt-eval"] + sys.argv[1:]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "vllm", "transformers", "datasets", "gradio") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["tasks"], ["score", "--task", "mmau", "-p", "SUB"]])
def test_cli_does_not_import_heavy_modules(tmp_path, args):
    f = tmp_path / "s.json"
    f.write_text(json.dumps([dict(r, model_output=r["answer"]) for r in mmau_records(20)]))
    args = [str(f) if a == "SUB" else a for a in args]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60)
    assert "HEAVY:\n" in proc.stderr, proc.stderr
