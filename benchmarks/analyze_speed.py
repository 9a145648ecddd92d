"""Cost of `dt-eval analyze gating` over a plain forward pass of the same MoE model.

Builds a random MoE with dt_eval.testing.tiny_moe (default: Qwen3-MoE layout, hidden 512,
8 layers, 32 experts, top-4) and times, on one random sequence of T tokens (segments: four equal
parts), the forward the analysis runs (the backbone under the LM head):

  plain   no hooks
  base    with the base-pass hooks: router softmax, float16 rows to the disk cache, expert load
  tuned   with the tuned-pass hooks: cached rows read back, JSD / Jaccard / top-1 / load sums

On CPU the clock is the process's CPU time (one thread by default), so other work on the machine
does not count; on CUDA it is wall time after a synchronize. Plain and analysed forwards
alternate, so drifting conditions hit both alike; tokens/s are medians
over the repeats; overhead = median over the repeats of (analysed time / the adjacent plain
time) - 1 (goal: under 20%). Input
building (tokenizer, audio features) is the same with or without the analysis and not timed.
Peak memory: CUDA -- torch.cuda.max_memory_allocated per phase; CPU -- the process's peak RSS
(VmHWM) after the plain forwards and after the analysed ones. Also: cache bytes per token.

    python benchmarks/analyze_speed.py [--family qwen3_moe] [--hidden 512] [--layers 8]
        [--experts 32] [--top-k 4] [--tokens 1024] [--repeats 5] [--device cpu|cuda] [--dtype float32]
        [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="qwen3_moe")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (CUDA default), ...")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (CPU timing is in CPU-seconds).")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    a = ap.parse_args()

    import numpy as np
    import torch

    from dt_eval.analyze.moe import RouterTap, discover_routers, forward_target, load_model
    from dt_eval.analyze.routing_stats import TOKEN_MEASURES, Accumulator, BaseCache, BaseRecorder, TunedComparer
    from dt_eval.backends.hf import resolve_device_dtype
    from dt_eval.testing.tiny_moe import build_tiny_moe

    dev, dtype = resolve_device_dtype(a.device, a.dtype)
    cuda = dev.startswith("cuda")
    if not cuda:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_moe(Path(tmp) / "m", a.family, layers=a.layers, experts=a.experts, top_k=a.top_k,
                              hidden=a.hidden)
        model = load_model(str(path), dev, dtype)
        routers = discover_routers(model)
        target = forward_target(model)
        params = sum(p.numel() for p in model.parameters())
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(10, model.config.vocab_size, (1, a.tokens), generator=gen).to(dev)
        mask = torch.ones_like(ids)
        segments = np.repeat(np.arange(4, dtype=np.int8), -(-a.tokens // 4))[: a.tokens]
        n, e, k = len(routers), routers[0].n_experts, routers[0].top_k
        cache = BaseCache(Path(tmp) / "cache", n, e, "float16")
        base_acc = Accumulator(n, e, dev, [])
        tuned_acc = Accumulator(n, e, dev, list(TOKEN_MEASURES))
        recorder = BaseRecorder(cache, base_acc, k, "float16", dev)
        comparer = TunedComparer(cache, tuned_acc, k, "float16", dev, list(TOKEN_MEASURES))

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        clock = time.perf_counter if cuda else time.process_time  # CPU: CPU-seconds, robust to a busy machine

        def forward() -> float:
            sync()
            t0 = clock()
            with torch.inference_mode():
                target(input_ids=ids, attention_mask=mask, use_cache=False)
            sync()
            return clock() - t0

        def hooked(hook, key: str) -> float:
            hook.start(key, segments, "same-input")
            with RouterTap(routers, hook.on_layer):
                return forward()

        forward()  # warm-up (allocator, kernels)
        peaks: dict[str, float | None] = {}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        plain_t = [forward() for _ in range(2)]
        peaks["plain"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else vm_hwm_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base_t, base_pairs = [], []
        for r in range(a.repeats):  # alternate plain and base-pass forwards
            plain_t.append(forward())
            base_t.append(hooked(recorder, f"item{r}"))
            base_pairs.append(base_t[-1] / plain_t[-1])
        peaks["base"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else vm_hwm_mib()
        cache.finish()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        tuned_t, tuned_pairs = [], []
        for r in range(a.repeats):
            plain_t.append(forward())
            tuned_t.append(hooked(comparer, f"item{r}"))
            tuned_pairs.append(tuned_t[-1] / plain_t[-1])
        peaks["tuned"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else vm_hwm_mib()
        cache_bytes = cache.path.stat().st_size
        cache.close()

    tps = {name: a.tokens / statistics.median(ts) for name, ts in
           (("plain", plain_t[2:]), ("base", base_t), ("tuned", tuned_t))}
    out = {
        "model": f"{a.family} hidden {a.hidden}, {a.layers} layers, {a.experts} experts, top-{a.top_k} "
                 f"({params / 1e6:.1f} M parameters)",
        "device": dev, "dtype": str(dtype).replace("torch.", ""), "tokens": a.tokens, "repeats": a.repeats,
        "tokens_per_s": {k2: round(v, 1) for k2, v in tps.items()},
        # median over (analysed / adjacent plain) time ratios: robust to load drifting during the run
        "overhead_pct": {"base": round(100 * (statistics.median(base_pairs) - 1), 1),
                         "tuned": round(100 * (statistics.median(tuned_pairs) - 1), 1)},
        "peak_memory_mib": {k2: None if v is None else round(v, 1) for k2, v in peaks.items()},
        "peak_memory_kind": "torch.cuda.max_memory_allocated per phase" if cuda else "process peak RSS (VmHWM) so far",
        "cache_bytes_per_token": cache_bytes / (a.tokens * a.repeats),
        "clock": "wall time (CUDA synchronized)" if cuda else "process CPU time",
        "cpu_threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"model: {out['model']} on {dev} ({out['dtype']}), {a.tokens} tokens x {a.repeats} repeats")
    print(f"{'pass':<8}{'tokens/s':>12}{'overhead':>11}{'peak MiB':>11}   (clock: {out['clock']})")
    for name in ("plain", "base", "tuned"):
        ov = "" if name == "plain" else f"{out['overhead_pct'][name]:+.1f}%"
        pk = out["peak_memory_mib"][name]
        print(f"{name:<8}{tps[name]:>12.1f}{ov:>11}{'' if pk is None else f'{pk:.1f}':>11}")
    print(f"cache: {out['cache_bytes_per_token']:.0f} bytes per token ({n} MoE layers x {e} experts x 2); "
          f"peak memory: {out['peak_memory_kind']}; load average {out['load_avg']}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
