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
    assert "[dt-eval extraction] Total Accuracy: 100.00% over 50 samples" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["extracted"] and rep["accuracy"] == 100.0 and rep["official_raw"]["accuracy"] < 100.0


@pytest.mark.parametrize("task,kind,name", [("mmau", "mmau", "sub.json"), ("mmar", "mmar", "sub.jsonl")])
def test_extract_prints_the_official_block_first_and_marks_the_extraction(tmp_path, task, kind, name):
    """With --extract, stdout holds the official script's output, unchanged, under its own heading,
    then dt-eval's extraction block, every line of it marked: no line of ours passes for official."""
    recs = mmau_records(80, 4) if task == "mmau" else mmar_records(80, 4)
    preds = build_prediction_file(recs, kind, random.Random(4))
    f = tmp_path / name
    f.write_text(json.dumps(preds) if name.endswith(".json") else "\n".join(json.dumps(p) for p in preds) + "\n")
    proc = dt_eval("score", "--task", task, "-p", str(f), "--extract")
    official, _ = ref_mcq_report(preds, kind)
    heading, rest = proc.stdout.split("\n", 1)
    assert heading.startswith("=== official script's rule") and "no extraction" in heading
    assert rest.startswith(official)  # the official script's stdout, line for line
    blank, ours_heading, *ours = rest[len(official):].splitlines()
    assert blank == "" and ours_heading.startswith("=== dt-eval extraction") and "not the official" in ours_heading
    assert ours and all(line.startswith("[dt-eval extraction] ") for line in ours)
    # the first "Total Accuracy" in the output is the official number
    first_total = next(x for x in proc.stdout.splitlines() if "Total Accuracy" in x)
    assert first_total == next(x for x in official.splitlines() if x.startswith("Total Accuracy"))


def test_score_mmsu(tmp_path):
    preds = [p for p in build_prediction_file(mmsu_records(120, 1), "mmsu", random.Random(1))
             if isinstance(p.get("response", ""), str)]
    f = tmp_path / "mmsu.jsonl"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in preds) + "\n")
    proc = dt_eval("score", "--task", "mmsu", "-p", str(f))
    assert proc.stdout == ref_mmsu_report(preds)[0]


def test_score_mmsu_non_string_responses_like_the_official_script(tmp_path):
    """Null and other non-string responses: the official script prints 'Error prediction!' for
    each and leaves it out of the denominator. By default dt-eval prints the same lines and
    number and says on stderr how many were dropped and that this inflates the accuracy;
    --strict refuses the file."""
    recs = mmsu_records(40, 2)
    for i, r in enumerate(recs):
        r["response"] = "ABCD"[[r["choice_a"], r["choice_b"], r["choice_c"], r["choice_d"]].index(r["answer_gt"])]
    for i, bad in zip((3, 11, 12, 30), (None, 7, ["A"], None)):
        recs[i]["response"] = bad
    recs[20]["response"] = "maybe"  # wrong format: also dropped by the official rule
    f = tmp_path / "mmsu.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n")
    proc = dt_eval("score", "--task", "mmsu", "-p", str(f))
    text, outcomes = ref_mmsu_report(recs)
    assert proc.stdout == text
    assert proc.stdout.count("Error prediction!\n") == 4 and "Overall Accuracy: 1.0000\nTotal count: 35" in text
    assert "4 record(s) have a null or non-string 'response' (2 null, 1 number, 1 array" in proc.stderr
    assert "inflates the accuracy" in proc.stderr and "--strict" in proc.stderr
    strict = dt_eval("score", "--task", "mmsu", "-p", str(f), "--strict", check=False)
    assert strict.returncode == 2 and strict.stdout == ""
    assert "4 malformed record(s)" in strict.stderr and "record #3" in strict.stderr and "is null" in strict.stderr
    # with --extract the official block is the same; the extraction block counts them unparsed
    ext = dt_eval("score", "--task", "mmsu", "-p", str(f), "--extract")
    assert text in ext.stdout
    assert "[dt-eval extraction] Total count: 40" in ext.stdout and "4 record(s) have a null" in ext.stderr
    assert "[dt-eval extraction] 5 unparsed, 0 ambiguous" in ext.stdout


@pytest.mark.parametrize("task,name,content,needle", [
    # the official MMAR script picks its reader from the name: JSON lines in a .json file crash it
    ("mmar", "sub.json", "lines", "name it .jsonl"),
    ("mmar", "sub.txt", "array", "picks its reader from the file name"),
    ("mmar", "sub.jsonl", "lines+blank", "line 4 is blank"),
    # MMAU's reads one JSON document whatever the name
    ("mmau", "sub.jsonl", "lines", "write one JSON array"),
    # MMSU's reads JSON lines only
    ("mmsu", "sub.json", "indented array", "reads one JSON record per line"),
])
def test_score_reads_files_the_way_the_official_script_does(tmp_path, task, name, content, needle):
    make = {"mmau": mmau_records, "mmar": mmar_records, "mmsu": mmsu_records}[task]
    key = {"mmau": "model_output", "mmar": "answer_prediction", "mmsu": "response"}[task]
    recs = [dict(r, **{key: "x"}) for r in make(6)]
    lines = [json.dumps(r) for r in recs]
    text = {"lines": "\n".join(lines) + "\n", "array": json.dumps(recs), "indented array": json.dumps(recs, indent=2),
            "lines+blank": "\n".join(lines[:3] + [""] + lines[3:]) + "\n"}[content]
    f = tmp_path / name
    f.write_text(text)
    proc = dt_eval("score", "--task", task, "-p", str(f), check=False)
    assert proc.returncode == 2 and proc.stdout == "" and needle in proc.stderr, proc.stderr


def test_score_jsonl_lines_split_like_the_official_reader(tmp_path):
    """U+2028 and other line-separator characters may stand unescaped inside a JSON string:
    Python's file reader does not split there, so neither may dt-eval."""
    recs = [dict(r, answer_prediction=f"{r['answer']}\u2028\x85") for r in mmar_records(10, 1)]
    f = tmp_path / "sub.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    proc = dt_eval("score", "--task", "mmar", "-p", str(f))
    assert proc.stdout == ref_mcq_report(recs, "mmar")[0]


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
main(sys.argv[1:])
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
