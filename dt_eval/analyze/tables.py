"""Markdown tables of the analyses (tabulate; no heavy imports)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _f(v: Any, d: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def gating_markdown(result: dict[str, Any]) -> str:
    base = result["base"]
    lines = [f"# MoE gating shift vs {base['model']}", ""]
    if base.get("family"):
        lines.append(f"Family: {base.get('family')} ({base.get('family_note')}); {base.get('n_experts')} experts, "
                     f"top-{base.get('top_k')}; {len(base.get('layers', []))} MoE layers.")
    items = result.get("items")
    if items:
        lines.append(f"Items: {items['used']} (skipped: {items['skipped'] or 'none'}); tokens per segment: "
                     + ", ".join(f"{k} {v}" for k, v in items["tokens"].items()) + ".")
    for note in result.get("notes", []):
        lines.append(f"Note: {note}.")
    lines.append("")
    for t in result["tuned"]:
        lines += [f"## {t['model']}", ""]
        segs = t.get("segments")
        headers = ["layer", "router W change"]
        if segs:
            shown = [s for s in ("audio", "prompt", "reasoning", "answer", "all") if segs[s]["tokens"]]
            headers += [f"JSD {s}" for s in shown] + ["Jaccard all", "top-1 agree all", "load H all", "ΔH all"]
        rows = []
        for i, layer in enumerate(base["layers"]):
            row = [layer, _f(t["router_weight_change"][i])]
            if segs:
                row += [_f(segs[s]["jsd"][i]) for s in shown]
                a = segs["all"]
                row += [_f(a["jaccard"][i]), _f(a["top1_agreement"][i]), _f(a["load_entropy"][i], 3),
                        _f(a["load_entropy_change"][i], 3)]
            rows.append(row)
        lines += [tabulate(rows, headers=headers, tablefmt="github"), ""]
    return "\n".join(lines)


def tokens_markdown(result: dict[str, Any]) -> str:
    unit = result["token_unit"]
    lines = ["# Reasoning tokens across checkpoints", "",
             f"Token unit: {unit}. Items common to every run: {result['items']}. Crystallization: document "
             f"frequency >= {result['crystallization']['threshold']} and within ±{result['crystallization']['tolerance']} "
             f"at every later checkpoint (n-gram orders {result['crystallization']['orders']}).", ""]
    headers = ["step", "run", "chains", "words (mean)", f"{unit} (mean)", "entropy (nats)", "JSD tok→final",
               "JSD tok→prev"]
    orders = result["crystallization"]["orders"]
    headers += [f"JSD {n}-gram→final" for n in orders] + ["crystallized (total)"]
    rows = []
    for c in result["checkpoints"]:
        row = [c["step"], c["run"], c["chains_with_reasoning"], _f(c["reasoning_words"]["mean"], 1),
               _f(c["reasoning_tokens"]["mean"], 1) if c["reasoning_tokens"] else "–",
               _f(c["entropy"]["mean_per_token"]) if c["entropy"] else "–",
               _f(c["token_divergence"]["to_final"]), _f(c["token_divergence"]["to_previous"])]
        row += [_f(c["ngram_divergence"][str(n)]["to_final"]) for n in orders]
        row.append(c["crystallized_by_now"])
        rows.append(row)
    lines += [tabulate(rows, headers=headers, tablefmt="github"), ""]
    cr = result["crystallized"]
    lines += [f"## Crystallized n-grams ({len(cr)})", ""]
    if cr:
        top = sorted(cr, key=lambda x: (x["step"], -x["frequency_final"]))[:50]
        lines += [tabulate([[x["ngram"], x["step"], _f(x["frequency_at_crystallization"], 3),
                             _f(x["frequency_final"], 3)] for x in top],
                           headers=["n-gram", "crystallized at step", "doc. freq then", "doc. freq final"],
                           tablefmt="github"), ""]
        if len(cr) > 50:
            lines.append(f"... {len(cr) - 50} more in tokens.json")
    if result.get("notes"):  # e.g. entropies computed at different K, items left out
        lines += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)
