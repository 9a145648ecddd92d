"""`dt-recipe`: train (stage 1 / stage 2), select hard cases, plot curves, export to verl.

    dt-recipe train --config trained_recipe/configs/stage1.yaml [--set optim.lr=2e-6 ...] [--resume auto]
    dt-recipe select-hard --config trained_recipe/configs/stage2.yaml
    dt-recipe plot runs/stage1 [-o curves.png]
    dt-recipe export-verl --data train.jsonl --out verl/stage1.parquet --stage 1
    dt-recipe make-synth data/pitch --n 256          # rising/falling sweep MCQs (a smoke task)
    dt-recipe format-model models/tiny-format        # tiny audio LM with the format, not the skill

Exit codes: 0 done, 2 bad arguments/config/data, 3 stopped by the judge-failure threshold,
4 the audio did not reach the loss forward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data import DataError
    from .trainer import AudioNotInLossError, JudgeFailureRateExceeded, Trainer

    over = list(args.set or [])
    if args.resume:
        over.append(f"checkpoint.resume={args.resume}")
    if args.output:
        over.append(f"output_dir={args.output}")
    if args.steps:
        over.append(f"optim.steps={args.steps}")
    if args.threads:
        over.append(f"model_opts.cpu_threads={args.threads}")
    if args.no_progress:
        over.append("log.progress=false")
    try:
        cfg = load_config(args.config, over)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        res = trainer.train()
    except (DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except JudgeFailureRateExceeded as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except AudioNotInLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    finally:
        trainer.close()
    if trainer.dist.is_main:  # one summary line, not one per data-parallel process
        print(json.dumps({"steps": res["steps"], "final_checkpoint": res["final"], "output_dir": cfg.output_dir,
                          "data_parallel": trainer.dist.world}))
    return 0


def _select_hard(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data import load_items
    from .policy import Policy, load_audio_array
    from .trainer import select_hard_cases

    cfg = load_config(args.config, args.set or [])
    if cfg.model_opts.cpu_threads:
        import torch

        torch.set_num_threads(cfg.model_opts.cpu_threads)
    items = load_items(cfg.data.train, cfg.data.audio_root, cfg.data.references, cfg.data.limit)
    mo = cfg.model_opts
    pol = Policy(cfg.model, device=mo.device, dtype=mo.dtype, bf16=mo.bf16, trainable=False,
                 audio_window_mode=mo.audio_window)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "hard_cases.jsonl"
    rows = select_hard_cases(pol, items, cfg, out, lambda it: load_audio_array(it.audio, pol.rate,
                                                                                cfg.data.max_audio_seconds))
    kept = sum(r["kept"] for r in rows)
    print(json.dumps({"items": len(rows), "kept": kept, "band": list(cfg.hard_cases.band), "out": str(out)}))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    out = plot_run(args.run, args.out)
    print(out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .verl_adapter.export import export_parquet

    stats = export_parquet(args.data, args.out, stage=args.stage, references=args.references,
                           hard_cases=args.hard_cases, data_source=args.data_source, split=args.split,
                           audio_root=args.audio_root, config_path=args.config)
    print(json.dumps(stats))
    return 0


def _make_synth(args: argparse.Namespace) -> int:
    from .data import make_synthetic_task

    print(make_synthetic_task(args.out, args.n, seed=args.seed, name=args.name, silence=args.silence))
    return 0


def _format_model(args: argparse.Namespace) -> int:
    from .synth import build_format_model

    print(build_format_model(args.out, steps=args.steps, seed=args.seed, verbose=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dt-recipe", description="Two-stage GRPO-family RL for audio LMs with "
                                "dt-eval's hybrid reasoning reward.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train one stage from a YAML config")
    t.add_argument("--config", "-c", required=True)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    t.add_argument("--resume", help="a checkpoint directory, or 'auto' (newest in OUTPUT_DIR/checkpoints)")
    t.add_argument("--output", "-o", help="output directory (overrides output_dir)")
    t.add_argument("--steps", type=int, help="optimizer steps (overrides optim.steps)")
    t.add_argument("--threads", type=int, help="CPU threads for torch")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(fn=_train)

    h = sub.add_parser("select-hard", help="stage 2: pass rate per item from rollouts; keep the band")
    h.add_argument("--config", "-c", required=True)
    h.add_argument("--set", action="append", metavar="KEY=VALUE")
    h.add_argument("--out", help="JSONL to write (default OUTPUT_DIR/hard_cases.jsonl)")
    h.set_defaults(fn=_select_hard)

    pl = sub.add_parser("plot", help="draw the training curves of a run directory")
    pl.add_argument("run")
    pl.add_argument("--out", "-o", help="PNG path (default RUN/curves.png)")
    pl.set_defaults(fn=_plot)

    e = sub.add_parser("export-verl", help="write verl's RL parquet (prompt with <audio>, audios, ground truth)")
    e.add_argument("--data", required=True, help="audio MCQ JSONL")
    e.add_argument("--out", required=True, help="parquet path")
    e.add_argument("--stage", type=int, choices=(1, 2), default=1)
    e.add_argument("--references", help="dt-eval-refs file with reference chains")
    e.add_argument("--hard-cases", help="stage 2: JSONL/list of ids to keep (e.g. hard_cases.jsonl)")
    e.add_argument("--data-source", default="dt_recipe_audio_mcq")
    e.add_argument("--split", default="train")
    e.add_argument("--audio-root")
    e.add_argument("--config", help="a recipe YAML whose prompt settings to use")
    e.set_defaults(fn=_export)

    s = sub.add_parser("make-synth", help="write a rising/falling sweep MCQ set (JSONL + wavs)")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", default="train")
    s.add_argument("--silence", action="store_true", help="replace every clip by silence (control)")
    s.set_defaults(fn=_make_synth)

    f = sub.add_parser("format-model", help="build the tiny format-but-not-listening audio LM (CPU, ~1 min)")
    f.add_argument("out")
    f.add_argument("--steps", type=int, default=80)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(fn=_format_model)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
