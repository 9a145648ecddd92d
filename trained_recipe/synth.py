"""A tiny audio LM that has the output format but does not listen -- the starting point of the
CPU smoke test and of benchmarks/recipe_learning.py.

:func:`build_format_model` takes the random tiny Qwen2-Audio (dt_eval.testing.tiny_qwen2audio)
and fine-tunes it briefly on the recipe's own prompts (rising/falling sweeps), with targets

    <think>\nThe pitch goes up.\n</think>\n\n(A) rising      or
    <think>\nThe pitch goes down.\n</think>\n\n(B) falling

chosen by a coin flip *independent of the audio*. The result writes a well-formed reasoning
block and a consistent answer, but answers rising/falling at chance: RL with an accuracy reward
can only improve it by learning to use the audio (which is the point of the benchmark).
:func:`cached_format_model` builds it once per (this file, transformers, torch) under
``$DT_EVAL_CACHE`` (default ``~/.cache/dt-eval``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dt_eval.util.hashing import sha256_bytes
from dt_eval.util.locks import wait_lock
from dt_eval.util.resources import cache_root

TARGETS = {
    "rising": "<think>\nThe pitch goes up.\n</think>\n\n(A) rising",
    "falling": "<think>\nThe pitch goes down.\n</think>\n\n(B) falling",
}


def build_format_model(out_dir: str | Path, steps: int = 80, seed: int = 0, lr: float = 3e-3,
                       batch_size: int = 8, n_train: int = 64, listen_prob: float = 0.5,
                       base: str = "random", freeze_audio: bool = False, verbose: bool = False) -> Path:
    """`listen_prob`: probability that a training target follows the audio (0.5 = a coin flip:
    format only; higher values give a partial listener). `base`: "random" (the random tiny model)
    or "listener" (dt-eval's deterministic tiny model, whose audio encoder already tells rising
    from falling: the coin-flip fine-tune then only un-learns *using* it). `freeze_audio`: keep the
    audio encoder and projector as they are during the fine-tune (only the language model learns
    to ignore them), as in an instruction-tuned audio LM whose encoder hears but whose answers do
    not use it."""
    import numpy as np
    import torch

    from dt_eval.testing.tiny_qwen2audio import EOS_TOKEN, build_tiny_model

    from . import audio_window
    from .config import PromptConfig
    from .data import McqItem, build_messages, load_items, make_synthetic_task
    from .policy import Policy, load_audio_array

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if base not in ("listener", "random"):
            raise ValueError(f"base must be 'listener' or 'random', got {base!r}")
        if base == "listener":
            from dt_eval.testing.tiny_qwen2audio import cached_tiny_model

            src = cached_tiny_model(deterministic=True)
        else:
            src = build_tiny_model(Path(tmp) / "random", seed=seed)
        data_path = make_synthetic_task(Path(tmp) / "data", n_train, seed=seed + 7, name="warm")
        items: list[McqItem] = load_items(data_path)
        pol = Policy(str(src), device="cpu", audio_window_mode="auto")
        tok = pol.tokenizer
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        examples = []
        for it in items:
            enc = pol.encode([build_messages(it, PromptConfig())], [load_audio_array(it.audio, pol.rate, 30.0)])
            truth = it.meta.get("direction") or it.answer
            other = "falling" if truth == "rising" else "rising"
            target = TARGETS[truth if rng.random() < listen_prob else other]  # 0.5: a coin flip, not the audio
            tgt = tok(target + EOS_TOKEN, add_special_tokens=False)["input_ids"]
            examples.append((enc, torch.tensor(tgt)))
        model = pol.model
        if freeze_audio:
            for name, p in model.named_parameters():
                if any(part in name for part in ("audio_tower", "multi_modal_projector")):
                    p.requires_grad_(False)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        for step in range(steps):
            batch = [examples[int(i)] for i in rng.integers(0, len(examples), size=batch_size)]
            seqs = [torch.cat([enc.input_ids[0], tgt]) for enc, tgt in batch]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), pol.pad_id, dtype=torch.long)
            am = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for j, ((enc, tgt), x) in enumerate(zip(batch, seqs)):
                ids[j, :len(x)], am[j, :len(x)] = x, 1
                labels[j, enc.input_ids.shape[1]:len(x)] = tgt
            mm = {k: torch.cat([enc.mm[k] for enc, _ in batch]) for k in batch[0][0].mm}
            opt.zero_grad(set_to_none=True)
            with audio_window.maybe_windowed(model, mm, True) as mm_in:
                logits = model(input_ids=ids, attention_mask=am, **mm_in).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if verbose and step % 20 == 0:
                print(f"warm-start step {step} loss {loss.item():.3f}", flush=True)
        model.eval()
        pol.save_hf(out)
    return out


def _cache_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import dt_eval.testing.tiny_qwen2audio as tq

    here = Path(__file__)
    parts = [here.read_bytes(), (here.parent / "data.py").read_bytes(),  # the prompts and the synthetic task
             Path(tq.__file__).read_bytes()]
    for pkg in ("transformers", "torch"):
        try:
            parts.append(f"{pkg}=={version(pkg)}".encode())
        except PackageNotFoundError:
            pass
    return sha256_bytes(b"".join(parts))[:12]


def cached_format_model(listen_prob: float = 0.5, steps: int = 80, base: str = "random", lr: float = 3e-3,
                        freeze_audio: bool = False) -> Path:
    """The format-but-not-listening tiny model (or a partial listener with `listen_prob` > 0.5),
    built on first use (~1 min on 2 cores)."""
    tag = "" if (listen_prob, steps, base, lr) == (0.5, 80, "random", 3e-3) else f"-q{listen_prob:g}-s{steps}-{base}-lr{lr:g}"
    tag += "-frozen-audio" if freeze_audio else ""
    # (named `target`, not `base`: `base` is the start model's kind, passed on below)
    target = cache_root() / f"dt-recipe-format-model-{_cache_key()}{tag}"
    if (target / "config.json").exists():
        return target
    with wait_lock(target.with_name(target.name + ".lock")):
        if (target / "config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".format-", dir=target.parent))
        try:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                build_format_model(tmp / "model", steps=steps, listen_prob=listen_prob, base=base, lr=lr,
                                   freeze_audio=freeze_audio)
            finally:
                torch.set_num_threads(threads)
            os.rename(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
