"""Reasoning tokens across training: run directories of the same items from checkpoints in
training order -> length, token entropy, distribution drift, and the crystallized n-grams.

The `logprobs` field of a sample record
---------------------------------------
What `dt-eval run --logprobs K` stores per sample (dt_eval/pipeline/logprobs.py writes it; this
module only reads it). One short list per completion token, floats rounded to 4 decimals:

    "logprobs": {
      "k": 5,                    # top-K the backend asked for; null = entropy computed exactly
                                 #   over the full vocabulary (the hf backend can: it has the logits)
      "reasoning_tokens": 812,   # the first 812 tokens are the reasoning, through </think>;
                                 #   null = unknown (then found from the </think> token again)
      "tokens": ["<think>", "\\n", "The", ...],   # completion tokens, as text
      "logprob": [-0.0012, ...], # log-probability (nats) of each sampled token
      "entropy": [0.0153, ...]   # entropy (nats) of each position's next-token distribution:
                                 #   topk_entropy(top-K logprobs), or exact when k is null
    }

OpenAI-compatible servers: `logprobs: true, top_logprobs: K` gives, per token, the sampled
token's logprob and K listed alternatives (vLLM: every completion token, the reasoning included;
it lists the sampled token first, so off the top-K it is that token + the top K-1); the vLLM
engine: SamplingParams(logprobs=K), the top-K by rank; transformers (hf backend): each step's raw
logits, read by a forward hook (the distribution `output_logits` gives, as vLLM's default
`raw_logprobs`: before temperature, top-k/top-p and penalties), entropy exact over the vocabulary.

Top-K entropy, and its bias
---------------------------
:func:`topk_entropy` = -sum_i p_i ln p_i over the K listed tokens - R ln R, with R = 1 - sum_i p_i
the unlisted mass counted as one outcome. Merging outcomes never raises entropy, so this is a
lower bound on the true entropy H; the gap is R x (entropy inside the unlisted mass) <= R ln(V - K)
for a vocabulary of V. Tight where the top-K hold almost all the mass (most reasoning tokens),
low on flat positions, and lower the smaller K: compare checkpoints at the same K only.

Measures (per checkpoint, over the items present without error in every run)
-----------------------------------------------------------------------------
- reasoning length in words (always) and in tokens (`tokenizer`'s when given, else the logprobs
  tokens);
- reasoning-token entropy: mean over all reasoning tokens (pooled) and over chains;
- the distribution of reasoning tokens (the token unit: tokenizer tokens, logprobs tokens, or
  words) and of word n-grams, and its Jensen-Shannon divergence (bits) to the final and to the
  previous checkpoint;
- crystallized n-grams: the document frequency of a word n-gram (share of the items whose
  reasoning contains it) passes `threshold` at checkpoint c and, at every later checkpoint,
  stays >= threshold and within `tolerance` (absolute) of its value at c; it crystallized at
  the earliest such c. The final checkpoint has nothing after it to confirm, so nothing
  crystallizes there. The emergence curve counts the crystallized n-grams by each step.
Further per-checkpoint measures: `register_checkpoint_measure`.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.analyze.runs import AnalyzeError, RunData, load_run
from dt_eval.pipeline.logprobs import (  # noqa: F401
    DIGITS,
    logprobs_field,
    reasoning_span,
    topk_entropy,
)
from dt_eval.records import SampleRecord

FORMAT = "dt-eval-tokens/1"
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_STEP_IN_PATH = re.compile(r"(?:step|checkpoint|ckpt|global_step)[-_]?(\d+)", re.I)


# ------------------------------------------------------------------ the logprobs record


def _reasoning_span(lp: dict[str, Any], rec: SampleRecord | dict[str, Any]) -> int | None:
    """How many leading tokens are reasoning: the recorded count, else found from the tokens."""
    n = lp.get("reasoning_tokens")
    if n is not None:
        return int(n)
    return reasoning_span(lp["tokens"], rec.get("reasoning"), rec.get("output"))


@dataclass
class ReasoningLogprobs:
    k: int | None
    tokens: list[str]
    entropy: list[float]


def read_logprobs(rec: SampleRecord | dict[str, Any]) -> ReasoningLogprobs | None:
    """The reasoning part of a record's `logprobs` field; None when absent or unusable."""
    lp = rec.get("logprobs")
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens"), list):
        return None
    if not (len(lp["tokens"]) == len(lp.get("entropy") or []) == len(lp.get("logprob") or [])):
        return None
    n = _reasoning_span(lp, rec)
    if n is None:
        return None
    return ReasoningLogprobs(k=lp.get("k"), tokens=lp["tokens"][:n], entropy=[float(x) for x in lp["entropy"][:n]])


# ------------------------------------------------------------------ text units


def words(text: str | None) -> list[str]:
    return _WORD.findall((text or "").lower())


def ngrams(ws: list[str], n: int) -> list[str]:
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def jsd_bits(a: Counter, b: Counter) -> float:
    """Jensen-Shannon divergence (log base 2, 0..1) of two count distributions."""
    na, nb = sum(a.values()), sum(b.values())
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    total = 0.0
    for key in set(a) | set(b):
        p, q = a.get(key, 0) / na, b.get(key, 0) / nb
        m = 0.5 * (p + q)
        if p > 0:
            total += 0.5 * p * math.log2(p / m)
        if q > 0:
            total += 0.5 * q * math.log2(q / m)
    return max(0.0, min(1.0, total))


def _reasoning_text(rec: SampleRecord | dict[str, Any]) -> str:
    if "reasoning_text" in rec:
        return rec.get("reasoning_text") or ""
    from dt_eval.pipeline.extract import split_reasoning

    return split_reasoning(rec.get("output") or "", rec.get("reasoning"))[0] or ""


# ------------------------------------------------------------------ checkpoints and steps


@dataclass
class Checkpoint:
    run: RunData
    step: int
    texts: list[str] = field(default_factory=list)  # reasoning per common item, in key order
    units: list[list[str]] = field(default_factory=list)  # token units per item
    logprobs: list[ReasoningLogprobs | None] = field(default_factory=list)


def _model_of(run: RunData) -> str | None:
    return run.config.model


def _recipe_meta(model: str | None) -> dict[str, Any] | None:
    if not model:
        return None
    f = Path(model) / "dt_recipe.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    except (OSError, ValueError):
        return None


def resolve_steps(runs: list[RunData], steps: Sequence[int] | None) -> tuple[list[int], str]:
    """Training step of each run: given, else the checkpoint's dt_recipe.json, else a step-N in the
    model path; the recipe's base model (named in a checkpoint's metadata) is step 0."""
    if steps is not None:
        if len(steps) != len(runs):
            raise AnalyzeError(f"--steps has {len(steps)} values for {len(runs)} runs")
        found, source = [int(s) for s in steps], "given"
    else:
        metas = [_recipe_meta(_model_of(r)) for r in runs]
        bases = {str(Path(m["base_model"]).resolve()) for m in metas if m and m.get("base_model")}
        found, sources = [], set()
        for r, meta in zip(runs, metas):
            model = _model_of(r)
            if meta and meta.get("step") is not None:
                found.append(int(meta["step"]))
                sources.add("dt_recipe.json")
            elif model and str(Path(model).resolve()) in bases:
                found.append(0)
                sources.add("base model = step 0")
            elif model and _STEP_IN_PATH.search(model):
                found.append(int(_STEP_IN_PATH.findall(model)[-1]))
                sources.add("model path")
            else:
                found.append(None)  # type: ignore[arg-type]
        if all(s is None for s in found):
            return list(range(len(runs))), "run order (no step found: pass --steps)"
        missing = [str(r.path) for r, s in zip(runs, found) if s is None]
        if missing:
            raise AnalyzeError(f"no training step found for {', '.join(missing)}; pass --steps")
        source = ", ".join(sorted(sources))
    if any(b <= a for a, b in zip(found, found[1:])):
        raise AnalyzeError(f"steps {found} are not increasing: give the runs in training order, or --steps")
    return found, source


# ------------------------------------------------------------------ pluggable per-checkpoint measures

CHECKPOINT_MEASURES: dict[str, Callable[[Checkpoint], Any]] = {}


def register_checkpoint_measure(name: str, fn: Callable[[Checkpoint], Any]) -> None:
    """Add a measure computed from one checkpoint's reasoning (texts, units, logprobs)."""
    CHECKPOINT_MEASURES[name] = fn


def _summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"mean": 0.0, "median": 0.0}
    return {"mean": statistics.fmean(xs), "median": float(statistics.median(xs))}


def _entropy(cp: Checkpoint) -> dict[str, Any] | None:
    have = [lp for lp in cp.logprobs if lp is not None]
    if not have:
        return None
    toks = sum(len(lp.entropy) for lp in have)
    per_chain = [statistics.fmean(lp.entropy) for lp in have if lp.entropy]
    return {"mean_per_token": sum(sum(lp.entropy) for lp in have) / toks if toks else None,
            "mean_per_chain": statistics.fmean(per_chain) if per_chain else None,
            "tokens": toks, "samples": len(have), "k": sorted({lp.k for lp in have}, key=lambda x: (x is None, x))}


# ------------------------------------------------------------------ crystallization


def crystallization(freqs: list[dict[str, float]], steps: list[int], threshold: float,
                    tolerance: float) -> list[dict[str, Any]]:
    """N-grams that crystallized: see the module doc. `freqs[c]`: n-gram -> document frequency."""
    candidates = set().union(*freqs)
    out = []
    last = len(freqs) - 1
    for g in candidates:
        traj = [f.get(g, 0.0) for f in freqs]
        for c in range(last):  # the final checkpoint has no later one to confirm it
            ref = traj[c]
            if ref >= threshold and all(x >= threshold and abs(x - ref) <= tolerance + 1e-12 for x in traj[c + 1:]):
                out.append({"ngram": g, "n": len(g.split()), "step": steps[c], "index": c,
                            "frequency_at_crystallization": round(ref, DIGITS), "frequency_final": round(traj[-1], DIGITS),
                            "trajectory": [round(x, DIGITS) for x in traj]})
                break
    out.sort(key=lambda x: (x["index"], -x["frequency_final"], x["ngram"]))
    return out


# ------------------------------------------------------------------ entry point


def _unit_source(runs: list[RunData], keys: list[str], tokenizer: str | None) -> str:
    """The token unit: the tokenizer asked for, else the recorded tokens when every sample has
    them, else words."""
    if tokenizer:
        return "tokenizer tokens"
    if all(read_logprobs(r.samples[k]) is not None for r in runs for k in keys):
        return "model tokens (logprobs)"
    return "words"


def tokens(runs: Sequence[str | Path], steps: Sequence[int] | None = None, *, output: str | Path | None = None,
           tokenizer: str | None = None, orders: Sequence[int] = (2, 3), threshold: float = 0.1,
           tolerance: float = 0.1, top: int = 20, plots: bool = True,
           say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Analyse reasoning across checkpoints (run directories in training order); writes
    tokens.json, tokens.md and plots into `output` when given, and returns the tokens.json data."""
    say = say or (lambda m: print(m, file=sys.stderr))
    if len(runs) < 2:
        raise AnalyzeError("give at least two run directories, in training order")
    if not orders or any(n < 1 for n in orders):
        raise AnalyzeError("n-gram orders must be >= 1")
    if not 0 < threshold <= 1 or tolerance < 0:
        raise AnalyzeError("threshold must be in (0, 1] and tolerance >= 0")
    loaded = [load_run(r) for r in runs]
    step_list, step_source = resolve_steps(loaded, steps)
    ok = [{k for k, rec in r.samples.items() if not rec.error} for r in loaded]
    keys = sorted(set.intersection(*ok))
    if not keys:
        raise AnalyzeError("no item has an error-free sample in every run: are these runs of the same items?")
    notes = []
    for r, s in zip(loaded, ok):
        if len(s) > len(keys):
            notes.append(f"{r.path}: {len(s) - len(keys)} sample(s) not in every run left out")
        if r.dropped:
            notes.append(f"{r.path}: {r.dropped} torn line(s) skipped")
    unit = _unit_source(loaded, keys, tokenizer)
    tok = None
    if unit == "tokenizer tokens":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    cps = []
    for r, st in zip(loaded, step_list):
        cp = Checkpoint(run=r, step=st)
        for k in keys:
            rec = r.samples[k]
            text = _reasoning_text(rec)
            lp = read_logprobs(rec)
            cp.texts.append(text)
            cp.logprobs.append(lp)
            if unit == "model tokens (logprobs)":
                cp.units.append(lp.tokens)  # type: ignore[union-attr]
            elif tok is not None:
                cp.units.append(tok.tokenize(text) if text else [])
            else:
                cp.units.append(words(text))
        cps.append(cp)
    say(f"{len(cps)} checkpoints (steps {step_list}, from {step_source}), {len(keys)} items, unit: {unit}")

    unit_counts = [Counter(u for units in cp.units for u in units) for cp in cps]
    word_lists = [[words(t) for t in cp.texts] for cp in cps]
    gram_counts = {n: [Counter(g for ws in wl for g in ngrams(ws, n)) for wl in word_lists] for n in orders}
    doc_freqs: list[dict[str, float]] = []
    for wl in word_lists:
        df: Counter = Counter()
        for ws in wl:
            df.update({g for n in orders for g in ngrams(ws, n)})
        doc_freqs.append({g: c / len(keys) for g, c in df.items() if c / len(keys) >= threshold})
    # frequencies below the threshold matter too (they break a crystallization): fill them in
    every = set().union(*doc_freqs)
    for i, wl in enumerate(word_lists):
        missing = every - set(doc_freqs[i])
        if missing:
            df = Counter()
            for ws in wl:
                df.update({g for n in orders for g in ngrams(ws, n)} & missing)
            doc_freqs[i].update({g: df[g] / len(keys) for g in missing})
    crystal = crystallization(doc_freqs, step_list, threshold, tolerance)

    checkpoints = []
    for i, cp in enumerate(cps):
        lengths_tok = [len(lp.tokens) for lp in cp.logprobs] if unit == "model tokens (logprobs)" else (
            [len(u) for u in cp.units] if tok is not None else None)
        total = sum(unit_counts[i].values())
        entry = {
            "run": str(cp.run.path), "model": _model_of(cp.run), "step": cp.step, "items": len(keys),
            "chains_with_reasoning": sum(1 for t in cp.texts if t.strip()),
            "reasoning_words": _summary([len(w) for w in word_lists[i]]),
            "reasoning_tokens": _summary([float(x) for x in lengths_tok]) if lengths_tok is not None else None,
            "entropy": _entropy(cp),
            "token_divergence": {"to_final": jsd_bits(unit_counts[i], unit_counts[-1]),
                                 "to_previous": jsd_bits(unit_counts[i], unit_counts[i - 1]) if i else None},
            "ngram_divergence": {str(n): {"to_final": jsd_bits(gram_counts[n][i], gram_counts[n][-1]),
                                          "to_previous": jsd_bits(gram_counts[n][i], gram_counts[n][i - 1]) if i else None}
                                 for n in orders},
            "top_tokens": [[u, round(c / total, DIGITS)] for u, c in unit_counts[i].most_common(top)] if total else [],
            "crystallized_by_now": sum(1 for x in crystal if x["index"] <= i),
        }
        for name, fn in CHECKPOINT_MEASURES.items():
            entry[name] = fn(cp)
        checkpoints.append(entry)
    ks = {k for c in checkpoints if c["entropy"] for k in c["entropy"]["k"]}
    if len(ks) > 1:  # a top-K entropy is a lower bound that depends on K: not comparable across K
        shown = ", ".join("exact" if k is None else f"top-{k}" for k in sorted(ks, key=lambda x: (x is None, x)))
        notes.append(f"entropies were computed differently across the runs ({shown}): compare them at the same K")
    result = {
        "format": FORMAT, "runs": [str(r.path) for r in loaded], "steps": step_list, "step_source": step_source,
        "items": len(keys), "token_unit": unit, "tokenizer": tokenizer if tok is not None else None,
        "crystallization": {"orders": list(orders), "threshold": threshold, "tolerance": tolerance,
                            "frequency": "share of the items whose reasoning contains the n-gram"},
        "checkpoints": checkpoints,
        "emergence": {"steps": step_list, "crystallized": [c["crystallized_by_now"] for c in checkpoints]},
        "crystallized": crystal, "notes": notes,
    }
    if output is not None:
        _write(result, Path(output), plots)
    return result


def _write(result: dict[str, Any], out: Path, plots: bool) -> None:
    from dt_eval.analyze.outputs import write_outputs
    from dt_eval.analyze.plots import tokens_figures
    from dt_eval.analyze.tables import tokens_markdown

    write_outputs(result, out, "tokens", tokens_markdown, tokens_figures, plots)
