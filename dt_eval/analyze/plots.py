"""Figures of the analyses (matplotlib, Agg backend, imported only here). Each function returns
[{"file", "caption"}] so a page (e.g. a training run's leaderboard) can embed them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(path: str) -> str:
    p = Path(str(path).rstrip("/"))
    return p.name or str(path)


def gating_figures(result: dict[str, Any], out: Path) -> list[dict[str, str]]:
    plt = _plt()
    figs = []
    layers = result["base"]["layers"]
    tuned = result["tuned"]
    if tuned and tuned[0].get("segments"):
        segs = [s for s in ("all", "audio", "prompt", "reasoning", "answer") if tuned[0]["segments"][s]["tokens"]]
        fig, axes = plt.subplots(1, len(segs), figsize=(3.6 * len(segs), 3.4), sharey=True, squeeze=False)
        for ax, s in zip(axes[0], segs):
            for t in tuned:
                ys = [float("nan") if v is None else v for v in t["segments"][s]["jsd"]]
                ax.plot(layers, ys, marker="o", ms=3, label=_label(t["model"]))
            ax.set_title(f"{s} tokens")
            ax.set_xlabel("MoE layer (depth)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean JSD vs base (bits)")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle("Routing divergence from the base model, by layer")
        fig.tight_layout()
        fig.savefig(out / "gating_divergence.png", dpi=110)
        plt.close(fig)
        figs.append({"file": "gating_divergence.png",
                     "caption": "Mean Jensen-Shannon divergence of the router distributions (tuned vs base) per "
                                "MoE layer, by token segment; one curve per tuned checkpoint."})
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for t in tuned:
        ax.plot(layers, t["router_weight_change"], marker="o", ms=3, label=_label(t["model"]))
    ax.set_xlabel("MoE layer (depth)")
    ax.set_ylabel("||ΔW|| / ||W|| (router)")
    ax.set_title("Router weight change by layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "router_weight_change.png", dpi=110)
    plt.close(fig)
    figs.append({"file": "router_weight_change.png",
                 "caption": "Relative Frobenius change of each MoE layer's router weights (no data needed)."})
    return figs


def tokens_figures(result: dict[str, Any], out: Path) -> list[dict[str, str]]:
    plt = _plt()
    cps = result["checkpoints"]
    steps = [c["step"] for c in cps]
    figs = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figs.append({"file": name, "caption": caption})

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.step(result["emergence"]["steps"], result["emergence"]["crystallized"], where="post", marker="o", ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("crystallized n-grams")
    ax.set_title("Emergence curve")
    ax.grid(alpha=0.3)
    save(fig, "tokens_emergence.png", "How many reasoning n-grams have crystallized by each checkpoint.")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    unit = result["token_unit"]
    ax.plot(steps, [c["token_divergence"]["to_final"] for c in cps], marker="o", ms=3, label=f"{unit} → final")
    prev = [c["token_divergence"]["to_previous"] for c in cps]
    ax.plot(steps, [float("nan") if v is None else v for v in prev], marker="s", ms=3, label=f"{unit} → previous")
    for n in result["crystallization"]["orders"]:
        ax.plot(steps, [c["ngram_divergence"][str(n)]["to_final"] for c in cps], ls="--", marker=".",
                label=f"word {n}-grams → final")
    ax.set_xlabel("training step")
    ax.set_ylabel("JSD (bits)")
    ax.set_title("Reasoning distribution divergence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, "tokens_divergence.png", "Jensen-Shannon divergence of the reasoning token / n-gram distribution "
                                       "to the final and to the previous checkpoint.")

    has_tokens = all(c["reasoning_tokens"] for c in cps)
    has_entropy = any(c["entropy"] for c in cps)
    fig, axes = plt.subplots(1, 2 if has_entropy else 1, figsize=(9 if has_entropy else 5, 3.4), squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, [c["reasoning_words"]["mean"] for c in cps], marker="o", ms=3, label="words")
    if has_tokens:
        ax.plot(steps, [c["reasoning_tokens"]["mean"] for c in cps], marker="s", ms=3, label=unit)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean reasoning length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_entropy:
        ax = axes[0][1]
        ax.plot(steps, [c["entropy"]["mean_per_token"] if c["entropy"] else float("nan") for c in cps], marker="o",
                ms=3)
        ax.set_xlabel("training step")
        ax.set_ylabel("mean token entropy (nats)")
        ax.grid(alpha=0.3)
    save(fig, "tokens_length_entropy.png", "Reasoning length and mean reasoning-token entropy per checkpoint.")
    return figs
