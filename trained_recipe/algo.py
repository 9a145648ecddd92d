"""GRPO-family maths, pure functions: judge-failure filling, group advantages, token losses.

Advantages (one scalar per completion, groups = the G completions of one prompt):

- ``adv_norm="sum"`` (GRPO): r = sum_k w_k r_k, then A = (r - mean_g(r)) / (std_g(r) + eps).
- ``adv_norm="gdpo"`` (the paper's GDPO): each component is normalised inside its group first,
  A = sum_k w_k (r_k - mean_g(r_k)) / (std_g(r_k) + eps); so a component whose group is constant
  contributes nothing, whatever the scale of the others. ``batch_whiten`` then whitens the summed
  advantage over the whole batch (as in NVIDIA's GDPO).
- ``scale_by_std=False`` (Dr. GRPO): no division by the group std.
Standard deviations are population std (ddof=0). A group whose total reward is constant is a
"zero-std group" (no learning signal); its fraction is logged.

Losses (per token t of completion i, ratio rho = exp(logp - logp_old)):

    l_it = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta * KL_k3
    KL_k3 = exp(ref - logp) - (ref - logp) - 1         (Schulman's k3, unbiased, >= 0)

- ``grpo``:    mean over completions of (mean over the completion's tokens)
- ``dapo``:    sum over all tokens / number of tokens in the batch (token-level)
- ``dr_grpo``: sum over all tokens / (number of completions * max completion length)
The normalisers are computed over the whole optimizer batch, so splitting it into micro-batches
(gradient accumulation) gives the same gradient as one big batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def fill_failed(values: Sequence[float | None], groups: Sequence[int]) -> tuple[np.ndarray, int]:
    """Replace None (judge failure) by the mean of the group's scored values for that component.

    A group with no scored value at all gets 0.0 everywhere for it (a constant: zero advantage).
    Returns (filled values, number of filled entries).
    """
    vals = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    g = np.asarray(groups)
    filled = 0
    for gid in np.unique(g):
        idx = np.where(g == gid)[0]
        bad = idx[np.isnan(vals[idx])]
        if len(bad) == 0:
            continue
        good = idx[~np.isnan(vals[idx])]
        vals[bad] = vals[good].mean() if len(good) else 0.0
        if not len(good):
            vals[idx] = 0.0
        filled += len(bad)
    return vals, filled


def _group_norm(x: np.ndarray, g: np.ndarray, scale: bool, eps: float) -> tuple[np.ndarray, dict[int, float]]:
    out = np.zeros_like(x, dtype=np.float64)
    stds: dict[int, float] = {}
    for gid in np.unique(g):
        idx = np.where(g == gid)[0]
        m = x[idx].mean()
        s = x[idx].std()
        stds[int(gid)] = float(s)
        out[idx] = (x[idx] - m) / (s + eps) if scale else (x[idx] - m)
    return out, stds


@dataclass
class Advantages:
    adv: np.ndarray  # one per completion
    total: np.ndarray  # weighted reward sum per completion
    zero_std_frac: float  # groups whose total reward is constant
    zero_std_frac_by_comp: dict[str, float]


def compute_advantages(rewards: dict[str, np.ndarray], weights: dict[str, float], groups: Sequence[int],
                       mode: str = "gdpo", scale_by_std: bool = True, batch_whiten: bool = False,
                       eps: float = 1e-4) -> Advantages:
    g = np.asarray(groups)
    comps = list(rewards)
    total = sum(weights.get(c, 1.0) * np.asarray(rewards[c], dtype=np.float64) for c in comps)
    total = np.asarray(total, dtype=np.float64)
    _, total_stds = _group_norm(total, g, False, eps)
    zero = float(np.mean([s < 1e-8 for s in total_stds.values()])) if total_stds else 0.0
    by_comp = {}
    if mode == "sum":
        adv, _ = _group_norm(total, g, scale_by_std, eps)
        for c in comps:
            _, st = _group_norm(np.asarray(rewards[c], dtype=np.float64), g, False, eps)
            by_comp[c] = float(np.mean([s < 1e-8 for s in st.values()]))
    elif mode == "gdpo":
        adv = np.zeros_like(total)
        for c in comps:
            a, st = _group_norm(np.asarray(rewards[c], dtype=np.float64), g, scale_by_std, eps)
            by_comp[c] = float(np.mean([s < 1e-8 for s in st.values()]))
            adv += weights.get(c, 1.0) * a
    else:
        raise ValueError(f"adv_norm must be gdpo or sum, got {mode!r}")
    if batch_whiten and len(adv) > 1:
        s = adv.std()
        adv = (adv - adv.mean()) / (s + eps) if s > 1e-8 else adv - adv.mean()
    return Advantages(adv=adv, total=total, zero_std_frac=zero, zero_std_frac_by_comp=by_comp)


# -- token losses --------------------------------------------------------------------------------


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def per_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
                   beta: float, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(per-token loss, per-token KL or None, per-token clipped indicator); shapes [B, T]."""
    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(-1)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a
    loss = -torch.min(unclipped, clipped)
    is_clipped = (clipped < unclipped).float()
    kl = None
    if ref_logp is not None and beta > 0:
        kl = k3_kl(logp, ref_logp)
        loss = loss + beta * kl
    return loss, kl, is_clipped


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, n_seqs_total: int, n_tokens_total: int,
              max_len: int) -> torch.Tensor:
    """This micro-batch's share of the batch loss (sum over micro-batches = the batch loss)."""
    mask = mask.to(loss.dtype)
    if mode == "grpo":
        per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(1, n_seqs_total)
    if mode == "dapo":
        return (loss * mask).sum() / max(1, n_tokens_total)
    if mode == "dr_grpo":
        return (loss * mask).sum() / max(1, n_seqs_total * max_len)
    raise ValueError(f"loss_agg must be grpo, dr_grpo or dapo, got {mode!r}")


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materialising the full log-probs twice."""
    logits = logits.float()
    return torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
