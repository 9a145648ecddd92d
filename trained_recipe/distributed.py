"""Data parallelism for the local trainer, through accelerate (one process per GPU):

    accelerate launch --multi_gpu --num_processes 8 -m trained_recipe.cli train --config trained_recipe/configs/stage1.yaml
    torchrun --nproc_per_node 8 -m trained_recipe.cli train --config ...

(Without CUDA both fall back to gloo on the CPU; that is how the tests run it.)

Each process takes its own ``prompts_per_step`` prompts (a group never spans processes, so group
advantages need nothing from the others), generates and scores them, and computes its loss with
the *global* sequence and token counts; summing the gradients across processes then gives exactly
the single-process gradient of the union batch. Every process applies the same update from the
same summed gradient, so the weights stay identical (compared every step). Judge-failure counts
are summed, so every process stops at the same step. Rank 0 logs, shows the progress bar and
writes checkpoints. Without a launcher (WORLD_SIZE unset or 1) this is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch

# Metrics that are already global (computed from summed counts, or the same on every process).
GLOBAL_KEYS = {"step", "stage", "epoch", "loss", "kl", "grad_norm", "clip_frac", "tokens", "lr", "judge/failures",
               "judge/judged", "judge/failure_rate", "judge/window_failure_rate"}


def _merge_value(key: str, vals: list[Any]) -> Any:
    """Counts (ints) add up, rates and means (floats) are averaged, extremes stay extremes."""
    if key in GLOBAL_KEYS or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
        return vals[0]
    if key.endswith("len_max"):
        return max(vals)
    if key.endswith("len_min"):
        return min(vals)
    if all(isinstance(x, int) for x in vals):
        return sum(vals)
    return sum(vals) / len(vals)


class Dist:
    def __init__(self, state: Any = None) -> None:
        self.state = state
        self.enabled = state is not None and state.num_processes > 1
        self.rank = state.process_index if self.enabled else 0
        self.world = state.num_processes if self.enabled else 1
        self.device = str(state.device) if self.enabled else None

    @classmethod
    def from_env(cls, device: str = "auto") -> Dist:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(None)
        from accelerate import PartialState

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        return cls(PartialState(cpu=cpu))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def sum_ints(self, *values: int) -> list[int]:
        if not self.enabled:
            return [int(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return [int(round(x)) for x in t.tolist()]

    def broadcast_params_(self, params: list[torch.Tensor]) -> None:
        """Rank 0's values everywhere (e.g. LoRA's random init)."""
        if self.enabled:
            for p in params:
                torch.distributed.broadcast(p.data, src=0)

    def sum_grads_(self, params: list[torch.Tensor], bucket_bytes: int = 32 << 20) -> None:
        """Sum gradients across processes, in flat buckets (one collective per ~32 MB)."""
        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params:
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
            if size >= bucket_bytes:
                _reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            _reduce_bucket(bucket)

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def merge_metrics(self, m: dict[str, Any], params: list[torch.Tensor]) -> dict[str, Any]:
        """One metrics line for all processes; adds whether the weights are still identical."""
        if not self.enabled:
            return m
        mine = dict(m, **{"dist/param_hash": param_hash(params)})
        parts = self.gather(mine)
        out = {k: _merge_value(k, [p.get(k) for p in parts]) for k in parts[0]}
        out["dist/world_size"] = self.world
        out["dist/params_in_sync"] = len({p["dist/param_hash"] for p in parts}) == 1
        out.pop("dist/param_hash", None)
        if not out["dist/params_in_sync"]:
            raise RuntimeError("data-parallel processes hold different weights after the update")
        return out

    def _comm_device(self) -> torch.device:
        return torch.device(self.device) if self.device and self.device.startswith("cuda") else torch.device("cpu")


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def param_hash(params: list[torch.Tensor]) -> str:
    """A cheap fingerprint of the weights (sums on the device, no copy of the model to the CPU):
    identical weights on identical hardware give identical sums."""
    with torch.no_grad():
        s1 = torch.stack([p.detach().double().sum() for p in params]).sum().item()
        s2 = torch.stack([p.detach().double().pow(2).sum() for p in params]).sum().item()
    return f"{s1!r}/{s2!r}"
