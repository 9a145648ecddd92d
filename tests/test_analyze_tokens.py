"""`dt-eval analyze tokens` on constructed run directories with known reasoning distributions:
planted / drifting n-grams, recorded log-probabilities with known entropies, step resolution,
and the top-K entropy estimate's bias. No model, no torch."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dt_eval.analyze import AnalyzeError, tokens
from dt_eval.analyze.reasoning_tokens import jsd_bits, logprobs_field, read_logprobs, topk_entropy
from dt_eval.storage.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, N_CKPT = 40, 6
PLANTED = "spectral centroid rises"  # in 90% of the chains from checkpoint 3 on
DRIFT = "harmonic ladder"  # 0%, 20%, ..., 100% of the chains: never stable
FILLER = [f"f{i}x" for i in range(500)]


def write_run(path: Path, records: list[dict], model: str | None = None) -> Path:
    with RunDir(path) as rd:
        rd.write_config({"identity": {"model": model or str(path), "prompt": {}}})
        rd.append(records)
    return path


def record(i: int, reasoning: str, answer: str = "(A) rising", **extra) -> dict:
    return {"key": f"mmar/{i}/0", "task": "mmar", "id": str(i), "repeat": 0,
            "output": f"<think>\n{reasoning}\n</think>\n\n{answer}", "reasoning": None,
            "reasoning_text": reasoning, "error": None, **extra}


def chain(rng: random.Random, planted: bool, drift: bool) -> str:
    ws = [rng.choice(FILLER) for _ in range(30)]
    if planted:
        ws[5:5] = PLANTED.split()
    if drift:
        ws[20:20] = DRIFT.split()
    return " ".join(ws)


@pytest.fixture
def planted_runs(tmp_path):
    rng = random.Random(3)
    runs = []
    for c in range(N_CKPT):
        n_drift = round(N_ITEMS * c / (N_CKPT - 1))
        recs = [record(i, chain(rng, planted=c >= 3 and i < 36, drift=i < n_drift)) for i in range(N_ITEMS)]
        runs.append(write_run(tmp_path / f"run{c}", recs))
    return runs


def test_planted_ngram_crystallizes_at_checkpoint_3_and_drifting_one_never(planted_runs, tmp_path):
    steps = [0, 100, 200, 300, 400, 500]
    res = tokens(planted_runs, steps, output=tmp_path / "out", orders=(2, 3), threshold=0.1, tolerance=0.1)
    by = {x["ngram"]: x for x in res["crystallized"]}
    assert by[PLANTED]["step"] == 300 and by[PLANTED]["index"] == 3
    assert by[PLANTED]["trajectory"] == [0.0, 0.0, 0.0, 0.9, 0.9, 0.9]
    assert by["spectral centroid"]["step"] == 300  # its bigrams too
    assert DRIFT not in by and not any("harmonic" in g for g in by)
    # filler n-grams stay far below the threshold: nothing else crystallizes
    assert set(by) == {PLANTED, "spectral centroid", "centroid rises"}
    assert res["emergence"] == {"steps": steps, "crystallized": [0, 0, 0, 3, 3, 3]}
    assert res["token_unit"] == "words" and res["items"] == N_ITEMS
    written = json.loads((tmp_path / "out/tokens.json").read_text())
    assert written["crystallized"] == res["crystallized"]
    assert (tmp_path / "out/tokens_emergence.png").stat().st_size > 5000
    assert PLANTED in (tmp_path / "out/tokens.md").read_text()


def test_tolerance_and_threshold_decide(tmp_path):
    """The drifting bigram (steps of 0.2) crystallizes once the tolerance admits such steps, at the
    first checkpoint where it passes the threshold; a higher threshold delays it."""
    rng = random.Random(5)
    runs = []
    for c in range(N_CKPT):
        n_drift = round(N_ITEMS * c / (N_CKPT - 1))
        runs.append(write_run(tmp_path / f"r{c}", [record(i, chain(rng, False, i < n_drift)) for i in range(N_ITEMS)]))
    loose = {x["ngram"]: x for x in tokens(runs, orders=(2,), threshold=0.1, tolerance=0.85, plots=False)["crystallized"]}
    assert loose[DRIFT]["index"] == 1  # 0.2 >= 0.1 and every later value within 0.8 of 0.2
    strict = {x["ngram"]: x for x in tokens(runs, orders=(2,), threshold=0.5, tolerance=0.45, plots=False)["crystallized"]}
    assert strict[DRIFT]["index"] == 3  # 0.6: later 0.8 and 1.0 within 0.4; 0.4 at index 2 is below 0.5


def test_divergences_to_final_and_previous(tmp_path):
    rng = random.Random(1)
    same = [record(i, chain(rng, False, False)) for i in range(N_ITEMS)]
    other = [record(i, chain(rng, True, True)) for i in range(N_ITEMS)]
    runs = [write_run(tmp_path / "a", same), write_run(tmp_path / "b", same), write_run(tmp_path / "c", other)]
    res = tokens(runs, [1, 2, 3], plots=False)
    a, b, c = res["checkpoints"]
    assert c["token_divergence"] == {"to_final": 0.0, "to_previous": c["token_divergence"]["to_previous"]}
    assert b["token_divergence"]["to_previous"] == 0.0 and a["token_divergence"]["to_previous"] is None
    assert 0 < a["token_divergence"]["to_final"] == b["token_divergence"]["to_final"] <= 1
    assert a["ngram_divergence"]["2"]["to_final"] > 0 and c["ngram_divergence"]["3"]["to_final"] == 0.0
    assert a["reasoning_words"]["mean"] == 30 and c["reasoning_words"]["mean"] == 35


def test_jsd_bits_known_values():
    from collections import Counter

    assert jsd_bits(Counter(a=1), Counter(b=5)) == 1.0  # disjoint supports: the maximum, 1 bit
    assert jsd_bits(Counter(a=2, b=2), Counter(a=1, b=1)) == 0.0  # same distribution, other counts
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jsd_bits(Counter(a=1), Counter(a=1, b=1)) == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------ log-probabilities


def _lp_record(i: int, reasoning_tokens: list[str], ents: list[float], answer: list[str], count: bool = True):
    toks = ["<think>"] + reasoning_tokens + ["</think>"] + answer
    ent = [0.5] + ents + [0.25] + [0.125] * len(answer)
    lp = logprobs_field(toks, [-0.1] * len(toks), ent, k=5, reasoning_tokens=len(reasoning_tokens) + 2 if count else None)
    return record(i, "".join(reasoning_tokens).strip(), "".join(answer), logprobs=lp)


def test_logprobs_entropy_length_and_token_distribution(tmp_path):
    """Entropies are exact 4-decimal values, so the expected means are plain arithmetic here."""
    runs, expected = [], []
    for c in range(3):
        recs, all_ents, lengths = [], [], []
        for i in range(10):
            n = 4 + (i + c) % 5
            ents = [round(0.1 * c + 0.0625 * ((i * 7 + j) % 9), 4) for j in range(n)]
            toks = [f" t{(i + j + c) % 6}" for j in range(n)]
            recs.append(_lp_record(i, toks, ents, [" (A)", " rising"], count=i % 2 == 0))
            all_ents += [0.5] + ents + [0.25]  # <think> ... </think> belong to the reasoning
            lengths.append(n + 2)
        runs.append(write_run(tmp_path / f"lp{c}", recs))
        expected.append((sum(all_ents) / len(all_ents), sum(lengths) / len(lengths)))
    res = tokens(runs, [10, 20, 30], plots=False)
    assert res["token_unit"] == "model tokens (logprobs)"
    for cp, (ent, length) in zip(res["checkpoints"], expected):
        assert cp["entropy"]["mean_per_token"] == pytest.approx(ent, abs=1e-12)
        assert cp["entropy"]["k"] == [5] and cp["entropy"]["samples"] == 10
        assert cp["reasoning_tokens"]["mean"] == pytest.approx(length)
    top = dict(res["checkpoints"][0]["top_tokens"])
    assert "<think>" in top and " (A)" not in top  # answer tokens are not reasoning tokens


def test_reasoning_boundary_without_a_count_comes_from_the_closing_tag():
    rec = _lp_record(0, [" a", " b", " c"], [1.0, 2.0, 3.0], [" x"], count=False)
    assert rec["logprobs"]["reasoning_tokens"] is None
    got = read_logprobs(rec)
    assert got.tokens == ["<think>", " a", " b", " c", "</think>"] and got.entropy == [0.5, 1.0, 2.0, 3.0, 0.25]
    with pytest.raises(ValueError, match="differ in length"):
        logprobs_field(["a"], [-1.0, -2.0], [0.1], 5, None)


def test_without_logprobs_no_entropy_and_words(planted_runs):
    res = tokens(planted_runs[:2], [0, 1], plots=False)
    assert all(c["entropy"] is None and c["reasoning_tokens"] is None for c in res["checkpoints"])


def test_topk_entropy_is_a_lower_bound_with_the_documented_gap():
    assert topk_entropy([math.log(0.25)] * 4) == pytest.approx(math.log(4))  # all the mass listed: exact
    v = 1000
    z = [1 / (r + 1) ** 1.1 for r in range(v)]
    p = [x / sum(z) for x in z]
    true_h = -sum(x * math.log(x) for x in p)
    prev = 0.0
    for k in (1, 5, 20, 100):
        est = topk_entropy([math.log(x) for x in p[:k]])
        rest = 1 - sum(p[:k])
        assert est <= true_h + 1e-12 and true_h - est <= rest * math.log(v - k) + 1e-12
        assert est >= prev  # more listed tokens, a tighter bound
        prev = est


# ------------------------------------------------------------------ steps and items


def test_steps_from_recipe_checkpoints_and_base_model(tmp_path):
    base = tmp_path / "base_model"
    base.mkdir()
    models = []
    for s in (2, 4):
        m = tmp_path / "checkpoints" / f"ckpt-a{s}"
        m.mkdir(parents=True)
        (m / "dt_recipe.json").write_text(json.dumps({"format": "dt-recipe-checkpoint", "step": s,
                                                       "base_model": str(base)}))
        models.append(m)
    recs = [record(i, "the pitch goes up") for i in range(3)]
    runs = [write_run(tmp_path / f"e{i}", recs, model=str(m)) for i, m in enumerate([base, *models])]
    res = tokens(runs, plots=False)
    assert res["steps"] == [0, 2, 4] and "dt_recipe.json" in res["step_source"]
    with pytest.raises(AnalyzeError, match="not increasing"):
        tokens(runs[::-1], plots=False)
    with pytest.raises(AnalyzeError, match="3 runs"):
        tokens(runs, [1, 2], plots=False)


def test_only_items_in_every_run_and_error_records_left_out(tmp_path):
    a = [record(i, "alpha beta gamma") for i in range(5)]
    b = [record(i, "alpha beta gamma") for i in range(4)] + [dict(record(4, ""), error="server error")]
    res = tokens([write_run(tmp_path / "a", a), write_run(tmp_path / "b", b)], plots=False)
    assert res["items"] == 4 and any("1 sample(s) not in every run" in n for n in res["notes"])
    with pytest.raises(AnalyzeError, match="not a run directory"):
        tokens([tmp_path / "a", tmp_path / "nope"], plots=False)


# ------------------------------------------------------------------ command line

_PROBE = """
import sys
from dt_eval.cli import main
print("EXIT:" + str(main(sys.argv[1:])), file=sys.stderr)
heavy = sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["analyze", "--help"], ["analyze", "gating", "--help"], ["analyze", "tokens", "--help"]])
def test_help_imports_no_torch(args):
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "HEAVY:\n" in proc.stderr and "EXIT:0" in proc.stderr, proc.stderr


def test_cli_tokens_end_to_end_without_torch(planted_runs, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-c", _PROBE, "analyze", "tokens", *map(str, planted_runs),
                           "--steps", "0,100,200,300,400,500", "--ngram", "3", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "EXIT:" not in proc.stderr.replace("EXIT:0", "") and "HEAVY:\n" in proc.stderr, proc.stderr
    assert re.search(rf"\| {PLANTED} +\| +300 \|", proc.stdout), proc.stdout
    res = json.loads((out / "tokens.json").read_text())
    assert [x["ngram"] for x in res["crystallized"]] == [PLANTED]
    bad = subprocess.run([sys.executable, "-c", _PROBE, "analyze", "tokens", *map(str, planted_runs[::-1]),
                          "--steps", "5,4,3,2,1,0"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "error: steps" in bad.stderr and "EXIT:2" in bad.stderr


def test_the_analyses_are_in_the_package_api_without_torch():
    probe = ("import sys, dt_eval; f = (dt_eval.analyze.tokens, dt_eval.analyze.gating); "
             "print(all(x.__doc__ for x in f), sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "True []", out.stderr
