"""MoE gating shift: how a tuned checkpoint routes the same tokens differently from its base.

One model at a time. The base pass writes every MoE layer's router distribution (softmax of the
router logits, rounded to `store_dtype`) for every token to a cache file, one layer at a time
from a forward hook; each tuned pass reads the base's rows for the layer that just ran and adds
its per-token measures into per-(layer, segment) sums. Nothing holds more than one layer of one
item; the cache is tokens x MoE layers x experts x 2 bytes on disk (float16), deleted at the end
unless kept.

Per layer and segment (audio / prompt / reasoning / answer, see inputs.py):
  jsd              mean Jensen-Shannon divergence (bits, 0..1) of tuned vs base distribution
  jaccard          mean |A & B| / |A | B| of the top-k expert sets
  top1_agreement   share of tokens whose first expert is the same
  load_entropy     entropy (bits) of the expert load: how often each expert is in a token's
                   top-k, over the segment's tokens; `load_entropy_change` = tuned - base
Per layer, without data: router_weight_change = ||W_tuned - W_base||_F / ||W_base||_F.
Tuned distributions are rounded to `store_dtype` like the base's, so a layer that routes
identically shows exactly 0. More per-token measures: routing_stats.register_measure.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dt_eval.analyze.inputs import SEGMENTS, InputBuilder, split_response
from dt_eval.analyze.routing_stats import (
    TOKEN_MEASURES,
    Accumulator,
    BaseCache,
    BaseRecorder,
    TunedComparer,
    load_entropy_bits,
)
from dt_eval.analyze.runs import AnalyzeError, RunData, load_run
from dt_eval.util.hashing import sha256_text

FORMAT = "dt-eval-gating/1"
STORE_DTYPES = ("float16", "float32")

# ------------------------------------------------------------------ the passes


@dataclass
class Item:
    key: str
    messages: list[dict[str, Any]]
    template_kwargs: dict[str, Any]
    audio: Any  # AudioRef or None
    reasoning: str = ""
    answer: str = ""


def _with_model(path: str, device: str, dtype: Any, fn: Callable[[Any], Any]) -> Any:
    """Load a checkpoint, run `fn(model)`, and release it before the next one is loaded: only
    this frame and fn's hold the model, so it is gone (and device memory freed) on return."""
    import torch

    from dt_eval.analyze.moe import load_model

    model = load_model(path, device, dtype)
    try:
        return fn(model)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _route_items(model: Any, routers: list, builder: InputBuilder, items: list[Item], audio_rate: int,
                 window_s: float | None, hook: BaseRecorder | TunedComparer, device: str,
                 skipped: dict[str, int] | None, say: Callable[[str], None], label: str) -> list[str]:
    """Forward every item once with the router hooks on; returns the keys routed in order."""
    import torch

    from dt_eval.analyze.moe import RouterTap, forward_target
    from dt_eval.pipeline.audio import AudioError, load_audio

    target = forward_target(model)
    done: list[str] = []
    first_errors: dict[str, str] = {}
    t0, last = time.monotonic(), time.monotonic()
    with RouterTap(routers, hook.on_layer) as tap, torch.inference_mode():
        for i, it in enumerate(items):
            try:
                audio = None
                if builder.takes_audio:
                    if it.audio is None:
                        raise AudioError("the item has no audio")
                    audio = load_audio(it.audio, audio_rate, window_s).audio.array
                enc = builder.encode(it.messages, it.template_kwargs, audio, it.reasoning, it.answer)
                hook.start(it.key, enc.segments, enc.digest)
                inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.inputs.items()}
                tap.reset()
                target(**inputs, use_cache=False)
            except (AudioError, ValueError, RuntimeError) as e:  # one item's problem (a bad clip, OOM)
                if skipped is None or isinstance(e, AnalyzeError):  # tuned pass: items must match the base's
                    raise AnalyzeError(f"{label}: {it.key}: {type(e).__name__}: {e}") from e
                hook.drop(it.key)
                why = "audio error" if isinstance(e, AudioError) else f"model input or forward error ({type(e).__name__})"
                skipped[why] = skipped.get(why, 0) + 1
                if why not in first_errors:
                    first_errors[why] = f"{it.key}: {e}"
                    say(f"  {label}: skipped {it.key}: {type(e).__name__}: {e}")
                continue
            if any(c != 1 for c in tap.calls):
                raise AnalyzeError(f"{label}: routers fired {tap.calls} times in one forward (expected once "
                                   "each); this model layout is not supported")
            done.append(it.key)
            if time.monotonic() - last > 10:
                last = time.monotonic()
                say(f"  {label}: {i + 1}/{len(items)} items, {(i + 1) / (last - t0):.2f} items/s")
    return done


def _compatible(base: list, tuned: list, path: str) -> None:
    a = [(r.layer, r.n_experts, r.top_k) for r in base]
    b = [(r.layer, r.n_experts, r.top_k) for r in tuned]
    if a != b:
        raise AnalyzeError(f"{path}: its MoE layers (layer, experts, top-k) {b} differ from the base's {a}; "
                           "compare checkpoints of the same model")


def _digest_of(digests: Iterable[str]) -> str:
    return sha256_text("".join(digests))[:16]


def _per_layer(values: np.ndarray, tokens: np.ndarray) -> list[float | None]:
    return [float(v / n) if n > 0 else None for v, n in zip(values, tokens)]


def _segments_view(acc: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per segment (and 'all') arrays over layers: tokens (L,), load (L, E), measure sums (L,)."""
    out = {}
    for si, name in enumerate(SEGMENTS + ("all",)):
        sl = slice(None) if name == "all" else si
        view = {}
        for k, v in acc.items():
            view[k] = v[:, sl].sum(axis=1) if name == "all" else v[:, sl]
        out[name] = view
    return out


# ------------------------------------------------------------------ items


def _prompt_settings(responses: RunData | None, tasks: list[str], model: str, preset: str | None, thinking: str):
    """The run's own prompt settings when teacher-forcing its responses, else the family preset's."""
    from dt_eval.config import options_from_preset
    from dt_eval.tasks.prompts import PromptSettings

    ident = responses.config.identity if responses else {}
    if ident.get("prompt"):
        known = set(PromptSettings.__dataclass_fields__)
        return PromptSettings(**{k: v for k, v in ident["prompt"].items() if k in known}), ident.get("audio_window_s")
    opts = options_from_preset(tasks=tasks, model=model, backend="hf", preset=preset, thinking=thinking)
    return opts.prompt, opts.audio_window_s


def collect_items(tasks: list[str], data_dirs: dict[str, str], limit: int | None, settings: Any,
                  responses: RunData | None, repeat: int, skipped: dict[str, int]) -> list[Item]:
    from dt_eval.tasks.config import load_task
    from dt_eval.tasks.data import load_task_data
    from dt_eval.tasks.prompts import PromptError, build_messages

    items: list[Item] = []
    for name in tasks:
        cfg = load_task(name)
        lt = load_task_data(cfg, data_dirs.get(name) or data_dirs.get("*"), limit=limit)
        for it in lt.items:
            key = f"{cfg.name}/{it.id}/{repeat}"
            reasoning = answer = ""
            if responses is not None:
                rec = responses.samples.get(key)
                if rec is None:
                    skipped["no response in the run"] = skipped.get("no response in the run", 0) + 1
                    continue
                if rec.error:
                    skipped["response is an error record"] = skipped.get("response is an error record", 0) + 1
                    continue
                reasoning, answer = split_response(rec.output, rec.reasoning)
            try:
                messages, kwargs = build_messages(cfg, it, settings)
            except PromptError:
                skipped["bad item"] = skipped.get("bad item", 0) + 1
                continue
            items.append(Item(key, messages, kwargs, it.audio, reasoning, answer))
    return items


# ------------------------------------------------------------------ router weights without data


def _weights_from_files(path: str, names: list[str], prefix: str) -> list[Any] | None:
    """Router weights read straight from the safetensors files (no model built); None when the
    checkpoint names them differently (then the caller loads the model)."""
    from safetensors import safe_open

    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        wmap = json.loads(index.read_text())["weight_map"]
    elif (root / "model.safetensors").is_file():
        wmap = None
    else:
        return None
    out = []
    for n in names:
        key = f"{prefix}{n}.weight"
        file = root / (wmap.get(key, "") if wmap is not None else "model.safetensors")
        if not file.is_file():
            return None
        with safe_open(str(file), "pt") as f:
            if key not in f.keys():
                return None
            out.append(f.get_tensor(key).float())
    return out


def _router_weights(path: str, routers: list) -> list[Any]:
    import torch
    from transformers import AutoConfig

    from dt_eval.analyze.moe import discover_routers, router_weights

    prefix = "thinker." if getattr(AutoConfig.from_pretrained(path), "model_type", "") == "qwen3_omni_moe" else ""
    got = _weights_from_files(path, [r.name for r in routers], prefix)
    if got is not None:
        return got
    return _with_model(path, "cpu", torch.float32, lambda m: router_weights(discover_routers(m, what=path)))


# ------------------------------------------------------------------ entry point


def gating(base: str, tuned: list[str], tasks: list[str] | None = None, *, output: str | Path,
           limit: int | None = None, data_dirs: dict[str, str] | None = None, responses: str | Path | None = None,
           repeat: int = 0, device: str | None = None, dtype: str | None = None, store_dtype: str = "float16",
           preset: str | None = None, thinking: str = "on", keep_cache: bool = False, plots: bool = True,
           say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compare the routing of `tuned` checkpoints with `base` (see the module docstring); writes
    gating.json, gating.md and plots into `output` and returns the gating.json data. Without
    `tasks` only the router-weight change is computed."""
    from dt_eval.analyze.moe import (
        check_moe,
        discover_routers,
        family_note,
        n_decoder_layers,
        relative_change,
        router_weights,
    )

    say = say or (lambda m: print(m, file=sys.stderr))
    if not tuned:
        raise AnalyzeError("give at least one tuned checkpoint")
    if store_dtype not in STORE_DTYPES:
        raise AnalyzeError(f"store dtype must be one of {', '.join(STORE_DTYPES)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    base_routers = check_moe(base)
    for t in tuned:
        _compatible(base_routers, check_moe(t), t)
    layers = [r.layer for r in base_routers]
    result: dict[str, Any] = {"format": FORMAT, "base": {"model": str(base)}, "tuned": [], "tasks": list(tasks or []),
                              "responses": str(responses) if responses else None, "store_dtype": store_dtype,
                              "definitions": DEFINITIONS, "notes": []}
    if not tasks:
        say(f"router weights only (no --tasks): {base} vs {len(tuned)} checkpoint(s)")
        w0 = _router_weights(base, base_routers)
        result["base"].update(layers=layers, n_experts=base_routers[0].n_experts, top_k=base_routers[0].top_k)
        for t in tuned:
            w1 = _router_weights(t, base_routers)
            result["tuned"].append({"model": str(t), "router_weight_change": [relative_change(a, b) for a, b in zip(w0, w1)]})
        return _write(result, out, plots)

    run = load_run(responses) if responses else None
    if run is not None and run.dropped:
        result["notes"].append(f"{run.dropped} torn line(s) of {responses}/samples.jsonl skipped")
    settings, window_s = _prompt_settings(run, tasks, base, preset, thinking)
    skipped: dict[str, int] = {}
    items = collect_items(tasks, data_dirs or {}, limit, settings, run, repeat, skipped)
    if not items:
        raise AnalyzeError(f"no item to analyse (skipped: {skipped or 'none loaded'})")
    from dt_eval.backends.hf import resolve_device_dtype

    dev, torch_dtype = resolve_device_dtype(device, dtype)
    measures = list(TOKEN_MEASURES)

    # -- base pass: router distributions to the cache, base expert load
    say(f"base {base}: routing {len(items)} items on {dev}")
    from transformers import AutoConfig

    builder = InputBuilder(base, AutoConfig.from_pretrained(base))
    result["notes"] += builder.notes
    n_exp, k = base_routers[0].n_experts, base_routers[0].top_k
    cache = BaseCache(out / "cache", len(base_routers), n_exp, store_dtype)
    base_acc = Accumulator(len(base_routers), n_exp, dev, [])

    def base_pass(model: Any) -> tuple[list[str], list[Any]]:
        routers = discover_routers(model, what=base)
        _compatible(base_routers, routers, base)
        result["base"].update(family=getattr(model.config, "model_type", None), family_note=family_note(model),
                              n_decoder_layers=n_decoder_layers(model))
        keys = _route_items(model, routers, builder, items, builder.sampling_rate, window_s,
                            BaseRecorder(cache, base_acc, k, store_dtype, dev), dev, skipped, say, "base")
        return keys, router_weights(routers)

    t0 = time.monotonic()
    try:
        keys, w0 = _with_model(base, dev, torch_dtype, base_pass)
    finally:
        cache.finish()
    base_view = _segments_view(base_acc.numpy())
    result["base"].update(layers=layers, n_experts=n_exp, top_k=k, seconds=round(time.monotonic() - t0, 2),
                          segments={s: {"tokens": int(v["tokens"][0]),
                                        "load_entropy": [load_entropy_bits(c) for c in v["load"]]}
                                    for s, v in base_view.items()})
    result["items"] = {"used": len(keys), "skipped": skipped,
                       "input_digest": _digest_of(cache.index[key][2] for key in keys),
                       "tokens": {s: int(v["tokens"][0]) for s, v in base_view.items()}}
    used = [it for it in items if it.key in set(keys)]

    # -- tuned passes: measures against the cached base rows of the same tokens
    def tuned_pass(path: str, model: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        routers = discover_routers(model, what=path)
        _compatible(base_routers, routers, path)
        acc = Accumulator(len(routers), n_exp, dev, measures)
        comparer = TunedComparer(cache, acc, k, store_dtype, dev, measures)
        _route_items(model, routers, builder, used, builder.sampling_rate, window_s, comparer, dev, None, say, path)
        return _tuned_result(path, acc.numpy(), base_view, measures, w0, router_weights(routers),
                             _digest_of(comparer.digests), time.monotonic() - t0)

    try:
        for path in tuned:
            say(f"tuned {path}: routing {len(used)} items")
            result["tuned"].append(_with_model(path, dev, torch_dtype, lambda m, p=path: tuned_pass(p, m)))
    finally:
        cache.close()
        if keep_cache:
            (out / "cache" / "index.json").write_text(json.dumps(
                {"dtype": store_dtype, "layers": layers, "n_experts": n_exp,
                 "layout": "per item: (layers, tokens, experts), item rows from offset (in elements)",
                 "items": {kk: {"offset": v[0], "tokens": v[1], "digest": v[2]} for kk, v in cache.index.items()}}))
        else:
            shutil.rmtree(out / "cache", ignore_errors=True)
    return _write(result, out, plots)


def _tuned_result(path: str, acc: dict[str, np.ndarray], base_view: dict, measures: list[str], w0: list, w1: list,
                  dig: str, seconds: float) -> dict[str, Any]:
    from dt_eval.analyze.moe import relative_change

    segs = {}
    for s, v in _segments_view(acc).items():
        ent = [load_entropy_bits(c) for c in v["load"]]
        base_ent = [load_entropy_bits(c) for c in base_view[s]["load"]]
        seg = {"tokens": int(v["tokens"][0])}
        seg.update({m: _per_layer(v[m], v["tokens"]) for m in measures})
        seg["load_entropy"] = ent
        seg["load_entropy_change"] = [None if a is None or b is None else a - b for a, b in zip(ent, base_ent)]
        segs[s] = seg
    return {"model": str(path), "input_digest": dig, "seconds": round(seconds, 2),
            "router_weight_change": [relative_change(a, b) for a, b in zip(w0, w1)], "segments": segs}


DEFINITIONS = {
    "router distribution": "softmax of a MoE layer's router logits over its experts, for one token",
    "jsd": "Jensen-Shannon divergence (log base 2, so 0..1) between the tuned and base router distributions "
           "of the same token, averaged over the segment's tokens",
    "jaccard": "|A & B| / |A | B| of the tuned and base top-k expert sets of a token, averaged",
    "top1_agreement": "share of tokens whose highest-scoring expert is the same",
    "load_entropy": "entropy (bits) of the expert load: the share of top-k slots each expert takes over the "
                    "segment's tokens; maximum log2(n_experts)",
    "load_entropy_change": "tuned load_entropy - base load_entropy",
    "router_weight_change": "||W_tuned - W_base||_F / ||W_base||_F of the router weight matrix (no data)",
    "segments": "audio: audio placeholder tokens; prompt: other prompt tokens; reasoning: the teacher-forced "
                "response up to and including </think>; answer: the response after it; all: every token",
}


def _write(result: dict[str, Any], out: Path, plots: bool) -> dict[str, Any]:
    from dt_eval.analyze.outputs import write_outputs
    from dt_eval.analyze.plots import gating_figures
    from dt_eval.analyze.tables import gating_markdown

    return write_outputs(result, out, "gating", gating_markdown, gating_figures, plots)
