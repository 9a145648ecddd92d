"""Training curves of a run directory (metrics.jsonl) as one PNG (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run} a dt-recipe run directory?)")
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    by_step: dict[int, dict[str, Any]] = {}
    for r in rows:  # a resumed run may repeat steps: the last line wins
        by_step[int(r["step"])] = r
    return [by_step[k] for k in sorted(by_step)]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run)
    comps = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("reward/") and k.endswith("/mean")
                    and k.split("/")[1] not in ("total",)})
    panels = [
        ("reward components (mean)", [f"reward/{c}/mean" for c in comps]),
        ("total reward", ["reward/total/mean"]),
        ("KL to reference (k3, per token)", ["kl"]),
        ("zero-std groups (fraction)", ["zero_std_groups"]),
        ("completion length (tokens)", ["completion/len_mean", "completion/len_max"]),
        ("judge failures / judged", ["judge/failures", "judge/judged"]),
        ("loss", ["loss"]),
        ("grad norm", ["grad_norm"]),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    for ax, (title, keys) in zip(axes.flat, panels):
        for k in keys:
            xs, ys = _series(rows, k)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=k.replace("reward/", "").replace("/mean", ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    stage = rows[0].get("stage") if rows else "?"
    fig.suptitle(f"dt-recipe stage {stage}: {Path(run).resolve().name} ({len(rows)} steps)")
    fig.tight_layout()
    out_path = Path(out) if out else Path(run) / "curves.png"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path
