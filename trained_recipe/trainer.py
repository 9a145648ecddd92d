"""The GRPO-family trainer: rollouts with audio, rewards, group advantages, clipped policy loss
with a k3 KL to a reference, checkpoints that `dt-eval run --backend hf` loads, exact resume.

One optimizer step:
  1. take `prompts_per_step` items; encode prompt + audio once; sample G completions each;
  2. score every completion (trained_recipe.rewards: dt-eval's own scorers); judge failures are
     replaced by the group's mean for that component (zero advantage) and counted; too many
     failures over the last `window` steps stop training;
  3. advantages (GDPO or sum-then-normalise);
  4. reference log-probs (no grad), then micro-batched policy forward/backward -- every one of these
     forward passes gets the audio tensors, and the step fails if the audio encoder did not run in
     the gradient-producing forward; `num_iterations` > 1 reuses the rollout with PPO clipping;
  5. log one JSONL line; checkpoint every `checkpoint.every` steps; with `eval.every_steps` N,
     every N steps the current checkpoint is evaluated in process by `dt_eval.evaluate` on a
     held-out dt-eval task and its accuracy joins that step's line (`eval/<task>/accuracy`).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import algo
from .config import RecipeConfig
from .data import McqItem, build_messages, load_items
from .distributed import Dist
from .policy import AudioProbe, Policy, Rollout, load_audio_array
from .rewards import RecipeReward, ScoreItem, from_config

CKPT_FORMAT = "dt-recipe-checkpoint"
STATE_FILE = "trainer_state.pt"
META_FILE = "dt_recipe.json"


class JudgeFailureRateExceeded(RuntimeError):
    pass


class AudioNotInLossError(RuntimeError):
    pass


def _now() -> float:
    return time.perf_counter()


class Sampler:
    """Epoch-wise shuffled order over the items; state = (epoch, position) for resume."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.pos = 0, 0

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return list(np.random.default_rng(self.seed + 1000 * self.epoch).permutation(self.n))

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        order = self._order()
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                order = self._order()
            out.append(int(order[self.pos]))
            self.pos += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, s: dict[str, int]) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])


def _rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    if not root.exists():
        return None
    cands = [p for p in root.glob("step-*") if (p / STATE_FILE).exists() and (p / META_FILE).exists()]
    return max(cands, key=lambda p: int(p.name.split("-")[1])) if cands else None


def read_id_list(path: str | Path) -> list[str]:
    ids = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            rec = json.loads(s)
            if rec.get("kept", True) is False:
                continue
            ids.append(str(rec["id"]))
        else:
            ids.append(s)
    return ids


class Trainer:
    def __init__(self, cfg: RecipeConfig, *, reward: RecipeReward | None = None, items: list[McqItem] | None = None,
                 judge: Any = None, embedder: Any = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._reward = reward
        self._judge, self._embedder = judge, embedder
        self._items = items
        self.step = 0
        self.fail_window: deque[tuple[int, int]] = deque(maxlen=cfg.reward.failures.window)
        self._audio_cache: dict[str, np.ndarray] = {}
        self.last_metrics: dict[str, Any] = {}
        self.policy: Policy | None = None
        self.ref_model: Any = None
        self.dist = Dist(None)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.dist = Dist.from_env(cfg.model_opts.device)
        seed_everything(cfg.seed)  # the same on every process: identical initial weights (LoRA init too)
        if cfg.model_opts.cpu_threads:
            torch.set_num_threads(cfg.model_opts.cpu_threads)
        resume = cfg.checkpoint.resume
        self.resume_from: Path | None = None
        if resume == "auto":
            self.resume_from = find_latest_checkpoint(self.out)
        elif resume:
            self.resume_from = Path(resume)
            if not (self.resume_from / STATE_FILE).exists():
                raise FileNotFoundError(f"{resume}: not a dt-recipe checkpoint (no {STATE_FILE})")
        if self.dist.is_main:
            (self.out / "config.yaml").write_text(_yaml(cfg.to_dict()), encoding="utf-8")
        if self._items is None:
            self._items = load_items(cfg.data.train, cfg.data.audio_root, cfg.data.references, cfg.data.limit)
        self.all_items = self._items
        lora = cfg.model_opts.lora
        mo = cfg.model_opts
        init_path = cfg.model
        adapter = None
        if self.resume_from is not None:
            if lora.enabled:
                adapter = str(self.resume_from / "adapter")
            else:
                init_path = str(self.resume_from)
        device = self.dist.device or mo.device
        self.policy = Policy(init_path, device=device, dtype=mo.dtype, bf16=mo.bf16, lora=lora,
                             freeze_audio_tower=mo.freeze_audio_tower, gradient_checkpointing=mo.gradient_checkpointing,
                             audio_window_mode=mo.audio_window, attn_implementation=mo.attn_implementation,
                             adapter_path=adapter)
        if lora.enabled:
            self.policy.model_path = cfg.model  # merged checkpoints rebuild the architecture from the base
        ref_path = cfg.ref_model or cfg.model
        if cfg.algo.beta > 0:
            if lora.enabled and ref_path == cfg.model:
                self.ref_model = None  # adapter disabled = the initial model
            else:
                self.ref_model = Policy(ref_path, device=device, dtype=mo.dtype, bf16=mo.bf16, trainable=False,
                                        audio_window_mode="off").model
        params = self.policy.trainable_parameters()
        if not params:
            raise RuntimeError("no trainable parameters")
        self.dist.broadcast_params_(params)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.adam_betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.items = self._select_items()
        self.sampler = Sampler(len(self.items), cfg.seed, cfg.data.shuffle)
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        if self.dist.enabled:  # each process samples its own completions
            seed_everything(cfg.seed + 1_000_003 * self.dist.rank + self.step)
        if self._reward is None:
            self._reward = from_config(cfg, judge=self._judge, embedder=self._embedder)

    def _lr_lambda(self, step: int) -> float:
        o = self.cfg.optim
        warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        frac = min(1.0, step / max(1, o.steps))
        if o.lr_schedule == "linear":
            return warm * (1.0 - frac)
        if o.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * frac))
        return warm

    @property
    def reward(self) -> RecipeReward:
        assert self._reward is not None
        return self._reward

    # -- hard cases ----------------------------------------------------------------------------

    def _select_items(self) -> list[McqItem]:
        hc = self.cfg.hard_cases
        if hc.source == "all":
            return list(self.all_items)
        if hc.source == "list":
            if not hc.list:
                raise ValueError("hard_cases.source=list needs hard_cases.list")
            wanted = set(read_id_list(hc.list))
            chosen = [it for it in self.all_items if it.id in wanted]
            missing = wanted - {it.id for it in chosen}
            if missing:
                raise ValueError(f"{hc.list}: {len(missing)} ids not in the training data (e.g. {sorted(missing)[:3]})")
        else:
            saved = self.out / "hard_cases.jsonl"
            if not saved.exists() and self.dist.is_main:
                select_hard_cases(self.policy, self.all_items, self.cfg, saved, self._audio)
            self.dist.barrier()
            wanted = set(read_id_list(saved))
            chosen = [it for it in self.all_items if it.id in wanted]
        if not chosen:
            raise RuntimeError("no hard cases selected: widen hard_cases.band or check the list")
        return chosen

    # -- data ----------------------------------------------------------------------------------

    def _audio(self, item: McqItem) -> np.ndarray:
        a = self._audio_cache.get(item.id)
        if a is None:
            a = load_audio_array(item.audio, self.policy.rate, self.cfg.data.max_audio_seconds)
            if len(self._audio_cache) < 4096:
                self._audio_cache[item.id] = a
        return a

    def encode(self, items: list[McqItem]) -> Any:
        msgs = [build_messages(it, self.cfg.prompt) for it in items]
        return self.policy.encode(msgs, [self._audio(it) for it in items], self.cfg.prompt.chat_template_kwargs)

    # -- one step ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        cfg, pol = self.cfg, self.policy
        r, a = cfg.rollout, cfg.algo
        t0 = _now()
        # every process draws the same global batch and keeps its own slice
        idx = self.sampler.take(r.prompts_per_step * self.dist.world)
        idx = idx[self.dist.rank * r.prompts_per_step:(self.dist.rank + 1) * r.prompts_per_step]
        batch_items = [self.items[i] for i in idx]
        enc = self.encode(batch_items)
        ro = pol.generate(enc, r.group_size, max_new_tokens=r.max_completion_length, temperature=r.temperature,
                          top_p=r.top_p, top_k=r.top_k, batch_size=r.generation_batch_size)
        t_gen = _now()
        groups = ro.prompt_index
        s_items = [_score_item(batch_items[g]) for g in groups]
        rb = self.reward.score(s_items, ro.texts)
        t_rew = _now()
        # judge failures -> group mean (zero advantage), counted
        filled: dict[str, np.ndarray] = {}
        n_filled: dict[str, int] = {}
        raw_means: dict[str, float | None] = {}
        for c in rb.components:
            vals = rb.values[c]
            ok = [v for v in vals if v is not None]
            raw_means[c] = float(np.mean(ok)) if ok else None
            filled[c], n_filled[c] = algo.fill_failed(vals, groups)
        fails, judged = self.dist.sum_ints(rb.failures(), rb.judged_count())  # all processes stop together
        self.fail_window.append((fails, judged))
        win_f = sum(f for f, _ in self.fail_window)
        win_j = sum(j for _, j in self.fail_window)
        weights = {c: cfg.weight(c) for c in rb.components}
        adv = algo.compute_advantages(filled, weights, groups, a.adv_norm, a.scale_by_std, a.batch_whiten, a.std_eps)
        metrics: dict[str, Any] = {"step": self.step + 1, "stage": cfg.stage, "epoch": self.sampler.epoch}
        for c in rb.components:
            metrics[f"reward/{c}/mean"] = float(filled[c].mean())
            metrics[f"reward/{c}/std"] = float(filled[c].std())
            metrics[f"reward/{c}/scored_mean"] = raw_means[c]
            metrics[f"reward/{c}/zero_std_groups"] = adv.zero_std_frac_by_comp.get(c)
            metrics[f"judge/{c}/failures"] = int(sum(rb.failed[c]))
            metrics[f"judge/{c}/judged"] = int(sum(rb.judged[c]))
        for sub in ("sim_emb", "sim_llm"):
            vs = [d[sub] for d in rb.details if sub in d]
            if "sim" in rb.components and (vs or sub == "sim_llm" or cfg.stage == 1):
                metrics[f"reward/{sub}/mean"] = float(np.mean(vs)) if vs else None
                metrics[f"reward/{sub}/n"] = len(vs)
        metrics |= {"reward/total/mean": float(adv.total.mean()), "reward/total/std": float(adv.total.std()),
                    "zero_std_groups": adv.zero_std_frac, "adv/abs_mean": float(np.abs(adv.adv).mean()),
                    "judge/failures": fails, "judge/judged": judged,
                    "judge/failure_rate": fails / judged if judged else 0.0,
                    "judge/window_failure_rate": win_f / win_j if win_j else 0.0,
                    "judge/filled_with_group_mean": int(sum(n_filled.values())),
                    "sim_no_reference": rb.counts.get("sim_no_reference", 0),
                    "answers/unparsed": rb.counts.get("unparsed", 0)}
        metrics |= {f"judge/{k}": v for k, v in self.reward.judge_stats().items()}
        lengths = ro.completion_mask.sum(-1).float()
        metrics |= {"completion/len_mean": float(lengths.mean()), "completion/len_max": int(lengths.max()),
                    "completion/len_min": int(lengths.min()),
                    "completion/truncated_frac": float(np.mean(ro.truncated))}
        fp = cfg.reward.failures
        if win_j >= max(1, fp.min_calls) and win_f / win_j > fp.max_rate:
            metrics["stopped"] = "judge failure rate"
            self._log(metrics)
            raise JudgeFailureRateExceeded(
                f"judge failure rate {win_f}/{win_j} = {win_f / win_j:.2f} over the last {len(self.fail_window)} "
                f"step(s) exceeds reward.failures.max_rate={fp.max_rate}; stopping at step {self.step}")
        upd = self._update(ro, torch.tensor(adv.adv, dtype=torch.float32))
        metrics |= upd
        t_end = _now()
        metrics |= {"time/generate_s": t_gen - t0, "time/reward_s": t_rew - t_gen, "time/update_s": t_end - t_rew,
                    "time/step_s": t_end - t0, "lr": self.scheduler.get_last_lr()[0]}
        self.step += 1
        if cfg.log.samples_every and (self.step % cfg.log.samples_every == 0 or self.step == 1):
            self._log_samples(ro, batch_items, rb, adv.adv)
        return metrics

    def _update(self, ro: Rollout, adv: torch.Tensor) -> dict[str, Any]:
        cfg, pol = self.cfg, self.policy
        a, o = cfg.algo, cfg.optim
        n_local = len(ro)
        mask = ro.completion_mask.float()
        if a.mask_truncated:
            mask = mask * torch.tensor([0.0 if t else 1.0 for t in ro.truncated]).unsqueeze(-1)
        # Global counts: with gradients summed over processes, the loss is the union batch's.
        n, n_tokens = self.dist.sum_ints(n_local, int(mask.sum().item()))
        max_len = cfg.rollout.max_completion_length
        chunks = [list(range(s, min(n_local, s + o.micro_batch_size))) for s in range(0, n_local, o.micro_batch_size)]
        ref_lp: list[torch.Tensor | None] = [None] * len(chunks)
        if a.beta > 0:
            for k, ch in enumerate(chunks):
                sub = ro.rows(ch)
                if self.ref_model is None:
                    with pol.reference() as m:
                        ref_lp[k] = pol.token_logps(m, sub, with_grad=False).float()
                else:
                    ref_lp[k] = pol.token_logps(self.ref_model, sub, with_grad=False).float()
        old_lp: list[torch.Tensor | None] = [None] * len(chunks)
        if o.num_iterations > 1:
            for k, ch in enumerate(chunks):
                old_lp[k] = pol.token_logps(pol.model, ro.rows(ch), with_grad=False).float()
        loss_sum = kl_sum = clip_sum = 0.0
        grad_norm = 0.0
        audio_calls = 0
        for _ in range(o.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for k, ch in enumerate(chunks):
                sub = ro.rows(ch)
                m = mask[ch].to(pol.device)
                with AudioProbe(pol.model) as probe:
                    lp = pol.token_logps(pol.model, sub, with_grad=True).float()
                if probe.tower is not None and probe.grad_calls == 0:
                    raise AudioNotInLossError("the audio encoder did not run in the loss forward pass")
                audio_calls += probe.grad_calls
                old = old_lp[k].to(pol.device) if old_lp[k] is not None else lp.detach()
                ref = ref_lp[k].to(pol.device) if ref_lp[k] is not None else None
                tok_loss, kl, clipped = algo.per_token_loss(lp, old, ref, adv[ch].to(pol.device), a.beta,
                                                            a.clip_eps_low, a.clip_eps_high)
                loss = algo.aggregate(tok_loss, m, a.loss_agg, n, n_tokens, max_len)
                loss.backward()
                loss_sum += float(loss.detach())
                if kl is not None:
                    kl_sum += float((kl.detach() * m).sum())
                clip_sum += float((clipped * m).sum())
            params = pol.trainable_parameters()
            self.dist.sum_grads_(params)
            grads = [p.grad for p in params if p.grad is not None]
            grad_norm = float(torch.norm(torch.stack([g.detach().float().norm() for g in grads]))) if grads else 0.0
            if o.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        it = o.num_iterations
        if self.dist.enabled:  # each process holds its share of the global sums
            loss_sum, kl_sum, clip_sum = (sum(x) for x in zip(*self.dist.gather((loss_sum, kl_sum, clip_sum))))
        return {"loss": loss_sum / it, "kl": (kl_sum / it) / max(1, n_tokens) if a.beta > 0 else None,
                "grad_norm": grad_norm, "clip_frac": (clip_sum / it) / max(1, n_tokens),
                "audio_encoder_calls_in_loss": audio_calls, "tokens": n_tokens}

    # -- loop ----------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        if self.policy is None:
            self.setup()
        cfg = self.cfg
        total = cfg.optim.steps
        bar = None
        if cfg.log.progress and self.step < total and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc=f"dt-recipe stage {cfg.stage}", unit="step",
                       dynamic_ncols=True)
        try:
            while self.step < total:
                m = self.dist.merge_metrics(self.train_step(), self.policy.trainable_parameters())
                self.last_metrics = m
                saved = None
                if cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0:
                    saved = self.save_checkpoint()
                    m |= self.evaluate_checkpoint(saved)
                self._log(m)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{m['reward/total/mean']:.3f}",
                                    acc=f"{m.get('reward/acc/mean', float('nan')):.2f}",
                                    kl=f"{m['kl']:.4f}" if m.get("kl") is not None else "-",
                                    jfail=m["judge/failures"])
                if (self.step % cfg.checkpoint.every == 0 or self.step == total) and saved is None:
                    self.save_checkpoint()
        except JudgeFailureRateExceeded:
            last = find_latest_checkpoint(self.out)
            if self.step > 0 and (last is None or int(last.name.split("-")[1]) != self.step):
                self.save_checkpoint()  # keep what was learnt; resume with checkpoint.resume=auto
            raise
        finally:
            if bar is not None:
                bar.close()
            self.reward.close()
        final = self.out / "final"
        last = find_latest_checkpoint(self.out)
        if last is not None and self.dist.is_main:
            if final.exists() or final.is_symlink():
                if final.is_symlink() or final.is_file():
                    final.unlink()
                else:
                    shutil.rmtree(final)
            shutil.copytree(last, final, ignore=shutil.ignore_patterns(STATE_FILE))
        self.dist.barrier()
        return {"steps": self.step, "final": str(final), "last_metrics": self.last_metrics}

    def close(self) -> None:
        if self._reward is not None:
            self._reward.close()

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_checkpoint(self, ckpt: Path) -> dict[str, Any]:
        """`dt_eval.evaluate` on a saved checkpoint (hf backend, in this process, on the policy's
        device): the same run, prompt and official scorer as `dt-eval run`, one run directory per
        step (OUTPUT_DIR/eval/step-N, resumable). Returns the metrics for this step's log line. A
        failing evaluation is logged (eval/<task>/error), never the end of the training run."""
        from dt_eval.tasks.config import load_task

        ev = self.cfg.eval
        key = f"eval/{load_task(ev.task).name}"
        out: dict[str, Any] = {}
        if self.dist.is_main:
            import dt_eval

            run_dir = Path(ev.output_dir or self.out / "eval") / ckpt.name
            notes: list[str] = []
            t0 = _now()
            try:
                res = dt_eval.evaluate(
                    ev.task, str(ckpt), backend="hf", data_dirs=ev.data_dir, limit=ev.limit, output=run_dir,
                    batch_size=ev.batch_size, device=str(self.policy.device), thinking=ev.thinking,
                    gen_kwargs={"max_tokens": ev.max_tokens or self.cfg.rollout.max_completion_length},
                    progress=False, on_event=notes.append)
            except dt_eval.DtEvalError as e:
                out[f"{key}/error"] = str(e)
                print(f"dt-recipe: evaluation at step {self.step} failed: {e}", flush=True)
            else:
                t = res.tasks[next(iter(res.tasks))]
                out |= {f"{key}/accuracy": t.accuracy, f"{key}/official_raw": t.official_raw,
                        f"{key}/errors": t.errors, f"{key}/unparsed": t.unparsed, f"{key}/items": t.items,
                        f"{key}/run_dir": str(run_dir)}
            out[f"{key}/time_s"] = _now() - t0
        self.dist.barrier()  # the other processes wait for the evaluation
        return out

    # -- logging -------------------------------------------------------------------------------

    def _log(self, m: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({**m, "time": time.time()}, default=_jsonable) + "\n")

    def _log_samples(self, ro: Rollout, items: list[McqItem], rb: Any, adv: np.ndarray) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "samples.jsonl", "a", encoding="utf-8") as f:
            for i in range(min(len(ro), 2 * self.cfg.rollout.group_size)):
                it = items[ro.prompt_index[i]]
                f.write(json.dumps({"step": self.step, "id": it.id, "answer": it.answer, "completion": ro.texts[i],
                                    "rewards": {c: rb.values[c][i] for c in rb.components},
                                    "details": rb.details[i], "advantage": float(adv[i])}, default=_jsonable) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        d = self.out / "checkpoints" / f"step-{self.step:06d}"
        if not self.dist.is_main:  # every process holds the same weights: rank 0 writes them
            self.dist.barrier()
            return d
        try:
            return self._write_checkpoint(d)
        finally:
            self.dist.barrier()

    def _write_checkpoint(self, d: Path) -> Path:
        cfg = self.cfg
        tmp = d.with_name(d.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.policy.save_hf(tmp)
        meta = {
            "format": CKPT_FORMAT, "format_version": 1, "stage": cfg.stage, "step": self.step,
            "steps_planned": cfg.optim.steps, "base_model": cfg.model, "ref_model": cfg.ref_model or cfg.model,
            "reward": cfg.reward_summary(), "lora": cfg.model_opts.lora.model_dump() if cfg.model_opts.lora.enabled else None,
            "group_size": cfg.rollout.group_size, "lr": cfg.optim.lr, "beta": cfg.algo.beta,
            "data_parallel": self.dist.world, "prompts_per_step_total": cfg.rollout.prompts_per_step * self.dist.world,
            "data": {"train": cfg.data.train, "items": len(self.items), "hard_cases": cfg.hard_cases.source},
            "config_fingerprint": cfg.fingerprint(), "metrics": {k: v for k, v in self.last_metrics.items()
                                                                  if k.startswith(("reward/", "kl", "judge/failures"))},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dt_eval_version": _dt_eval_version(),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state(), "sampler": self.sampler.state(), "fail_window": list(self.fail_window),
                    "item_ids": [it.id for it in self.items], "config_fingerprint": cfg.fingerprint()},
                   tmp / STATE_FILE)
        if d.exists():
            shutil.rmtree(d)
        tmp.rename(d)
        keep = cfg.checkpoint.keep_last
        if keep:
            all_ck = sorted((p for p in d.parent.glob("step-*") if not p.name.endswith(".tmp")),
                            key=lambda p: int(p.name.split("-")[1]))
            for old in all_ck[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return d

    def _load_state(self, d: Path) -> None:
        st = torch.load(d / STATE_FILE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.sampler.load(st["sampler"])
        self.step = int(st["step"])
        self.fail_window = deque((tuple(x) for x in st.get("fail_window", [])), maxlen=self.cfg.reward.failures.window)
        ids = st.get("item_ids")
        if ids and ids != [it.id for it in self.items]:
            by_id = {it.id: it for it in self.all_items}
            if all(i in by_id for i in ids):
                self.items = [by_id[i] for i in ids]
                self.sampler.n = len(self.items)
        _set_rng_state(st["rng"])


def _score_item(it: McqItem) -> ScoreItem:
    return ScoreItem(id=it.id, question=it.question, choices=list(it.choices), answer=it.answer, reference=it.reference)


def select_hard_cases(policy: Policy, items: list[McqItem], cfg: RecipeConfig, out_path: Path,
                      audio_fn: Any) -> list[dict[str, Any]]:
    """Pass rate of each item over `hard_cases.rollouts` samples (accuracy only, no judge); keep the
    items inside `hard_cases.band`. Writes one JSONL line per item (id, pass_rate, kept)."""
    from .rewards import correctness

    hc, r = cfg.hard_cases, cfg.rollout
    lo, hi = hc.band
    rows = []
    for s in range(0, len(items), hc.batch_prompts):
        chunk = items[s:s + hc.batch_prompts]
        msgs = [build_messages(it, cfg.prompt) for it in chunk]
        enc = policy.encode(msgs, [audio_fn(it) for it in chunk], cfg.prompt.chat_template_kwargs)
        ro = policy.generate(enc, hc.rollouts, max_new_tokens=r.max_completion_length, temperature=r.temperature,
                             top_p=r.top_p, top_k=r.top_k, batch_size=r.generation_batch_size)
        hits = [0] * len(chunk)
        for text, g in zip(ro.texts, ro.prompt_index):
            ok, _ = correctness(text, chunk[g].choices, chunk[g].answer, cfg.prompt.labels, cfg.reward.task)
            hits[g] += int(ok)
        for it, h in zip(chunk, hits):
            p = h / hc.rollouts
            rows.append({"id": it.id, "pass_rate": p, "kept": lo <= p <= hi})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return rows


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "__dataclass_fields__"):
        return asdict(x)
    return str(x)


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def _dt_eval_version() -> str:
    try:
        from dt_eval import __version__

        return __version__
    except Exception:  # noqa: BLE001
        return "unknown"
