"""Does the recipe teach an audio LM to listen? A short CPU run on a task whose answer is only in
the audio (a rising vs a falling pitch sweep), next to the same run with every training clip
replaced by silence.

    python benchmarks/recipe_learning.py [--steps 60] [--lr 1e-3] [--threads 1] [--out trained_recipe/figures]

Start model (trained_recipe.synth; defaults `--base listener --listen-prob 0.5 --freeze-audio`):
dt-eval's deterministic tiny Qwen2-Audio, whose audio encoder tells rising from falling,
fine-tuned on the recipe's prompts to write `<think>...</think> (A) rising` / `(B) falling` on
coin-flip targets with the audio encoder and projector frozen: the encoder still hears, the
language model no longer uses it -- held-out accuracy at chance. Both runs use the recipe's
trainer unchanged (GDPO, grpo loss, k3 KL, beta 0.01, G=8, 8 prompts/step) with the accuracy +
format reward only (no judge: CPU time; the judge-based terms are exercised by
tests/test_recipe.py). Held-out accuracy is measured on real audio, greedy and sampled (T=1,
4 samples per item), before and after.

Earlier starts where the warm-up fine-tune also changed the encoder (`--no-freeze-audio`) stayed
at chance within 100 steps with audio and with silence alike: RL has to find the audio signal
again before it can learn to use it, which takes far longer than this CPU budget.

Writes recipe_learning.png and recipe_learning.json into --out and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def held_out_accuracy(model_dir: str, items, samples: int = 4) -> dict[str, float]:
    import torch

    from trained_recipe.config import PromptConfig
    from trained_recipe.data import build_messages
    from trained_recipe.policy import Policy, load_audio_array
    from trained_recipe.rewards import correctness

    pol = Policy(model_dir, device="cpu", trainable=False)
    enc = pol.encode([build_messages(it, PromptConfig()) for it in items],
                     [load_audio_array(it.audio, pol.rate, 30.0) for it in items])
    out = {}
    for name, g, kw in (("greedy", 1, {"do_sample": False}), ("sampled", samples, {"temperature": 1.0})):
        torch.manual_seed(0)
        ro = pol.generate(enc, g, max_new_tokens=20, batch_size=64, **kw)
        hits = [correctness(t, items[i].choices, items[i].answer)[0] for t, i in zip(ro.texts, ro.prompt_index)]
        out[name] = 100.0 * sum(hits) / len(hits)
    return out


def train(model: str, data: Path, out: Path, steps: int, threads: int, seed: int, lr: float) -> tuple[str, list[dict]]:
    from trained_recipe.config import load_config
    from trained_recipe.trainer import Trainer

    cfg = load_config(None, {
        "model": model, "output_dir": str(out), "seed": seed, "data": {"train": str(data)},
        "reward": {"components": ["acc", "fmt"]},
        "rollout": {"group_size": 8, "prompts_per_step": 8, "max_completion_length": 20, "temperature": 1.0,
                    "generation_batch_size": 64},
        "optim": {"steps": steps, "lr": lr, "warmup_steps": 5, "micro_batch_size": 32, "max_grad_norm": 1.0},
        "algo": {"beta": 0.01, "adv_norm": "gdpo", "loss_agg": "grpo"},
        "checkpoint": {"every": steps, "keep_last": 1},
        "log": {"progress": True, "samples_every": 0}, "model_opts": {"cpu_threads": threads}})
    t = Trainer(cfg)
    t.setup()
    try:
        res = t.train()
    finally:
        t.close()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return res["final"], rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-items", type=int, default=64)
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--listen-prob", type=float, default=0.5, help="warm start: P(target follows the audio)")
    ap.add_argument("--freeze-audio", action=argparse.BooleanOptionalAction, default=True,
                    help="warm start: keep the audio encoder + projector fixed (only the LM stops using them)")
    ap.add_argument("--base", choices=("listener", "random"), default="listener", help="warm start from")
    ap.add_argument("--warm-steps", type=int, default=80, help="warm-start fine-tune steps")
    ap.add_argument("--warm-lr", type=float, default=3e-3, help="warm-start fine-tune learning rate")
    ap.add_argument("--out", default=str(ROOT / "trained_recipe" / "figures"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from trained_recipe.data import load_items, make_synthetic_task
    from trained_recipe.synth import cached_format_model

    t0 = time.monotonic()
    start = str(cached_format_model(listen_prob=args.listen_prob, base=args.base, steps=args.warm_steps,
                                    lr=args.warm_lr, freeze_audio=args.freeze_audio))
    print(f"start model (base {args.base}, listen prob {args.listen_prob}): {start} ({time.monotonic() - t0:.0f} s)", flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = make_synthetic_task(tmp / "audio", args.train_items, seed=args.seed + 1)
        silent = make_synthetic_task(tmp / "silence", args.train_items, seed=args.seed + 1, silence=True)
        held = load_items(make_synthetic_task(tmp / "held", args.held_out, seed=args.seed + 99, name="held"))
        before = held_out_accuracy(start, held)
        print(f"before: held-out accuracy greedy {before['greedy']:.1f}%  sampled {before['sampled']:.1f}%", flush=True)
        results = {"steps": args.steps, "lr": args.lr, "listen_prob": args.listen_prob, "base": args.base,
                   "freeze_audio_in_warm_start": args.freeze_audio,
                   "warm_steps": args.warm_steps, "warm_lr": args.warm_lr, "train_items": args.train_items, "held_out_items": args.held_out,
                   "reward": "acc + fmt (no judge terms)", "before": before, "runs": {}}
        for name, data in (("audio", real), ("silence", silent)):
            t1 = time.monotonic()
            final, rows = train(start, data, tmp / f"run-{name}", args.steps, args.threads, args.seed, args.lr)
            after = held_out_accuracy(final, held)
            secs = time.monotonic() - t1
            results["runs"][name] = {
                "after": after, "train_seconds": round(secs, 1),
                "acc_curve": [r["reward/acc/mean"] for r in rows], "fmt_curve": [r["reward/fmt/mean"] for r in rows],
                "kl_curve": [r["kl"] for r in rows], "zero_std_curve": [r["zero_std_groups"] for r in rows],
                "first5_acc": sum(r["reward/acc/mean"] for r in rows[:5]) / 5,
                "last5_acc": sum(r["reward/acc/mean"] for r in rows[-5:]) / 5}
            print(f"[{name}] after {args.steps} steps ({secs:.0f} s): held-out greedy {after['greedy']:.1f}%  "
                  f"sampled {after['sampled']:.1f}%  train acc reward {results['runs'][name]['first5_acc']:.2f} "
                  f"(first 5 steps) -> {results['runs'][name]['last5_acc']:.2f} (last 5)", flush=True)
    (out_dir / "recipe_learning.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out_dir / "recipe_learning.png")
    print("\n| run | held-out greedy before | after | held-out sampled before | after | train acc reward first 5 -> last 5 |")
    print("|---|---|---|---|---|---|")
    for name, r in results["runs"].items():
        print(f"| {name} | {before['greedy']:.1f}% | {r['after']['greedy']:.1f}% | {before['sampled']:.1f}% | "
              f"{r['after']['sampled']:.1f}% | {r['first5_acc']:.2f} -> {r['last5_acc']:.2f} |")
    print(f"\nwrote {out_dir / 'recipe_learning.png'} and {out_dir / 'recipe_learning.json'}")
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, color in (("audio", "tab:blue"), ("silence", "tab:gray")):
        r = results["runs"][name]
        xs = range(1, len(r["acc_curve"]) + 1)
        a.plot(xs, r["acc_curve"], color=color, alpha=0.35)
        k = 5
        sm = [sum(r["acc_curve"][max(0, i - k + 1):i + 1]) / len(r["acc_curve"][max(0, i - k + 1):i + 1])
              for i in range(len(r["acc_curve"]))]
        a.plot(xs, sm, color=color, label=f"{name} (5-step mean)")
    a.axhline(0.5, color="k", lw=0.5, ls=":")
    a.set(title="training accuracy reward (G=8, 8 prompts/step)", xlabel="step", ylabel="mean R_acc", ylim=(0, 1))
    a.legend(fontsize=8)
    labels = ["before", "audio run", "silence run"]
    greedy = [results["before"]["greedy"], results["runs"]["audio"]["after"]["greedy"],
              results["runs"]["silence"]["after"]["greedy"]]
    sampled = [results["before"]["sampled"], results["runs"]["audio"]["after"]["sampled"],
               results["runs"]["silence"]["after"]["sampled"]]
    x = range(3)
    b.bar([i - 0.2 for i in x], greedy, 0.4, label="greedy")
    b.bar([i + 0.2 for i in x], sampled, 0.4, label="sampled T=1")
    b.axhline(50, color="k", lw=0.5, ls=":")
    b.set_xticks(list(x), labels)
    b.set(title=f"held-out accuracy, real audio ({results['held_out_items']} items)", ylabel="%", ylim=(0, 100))
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
