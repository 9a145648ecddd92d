"""Find the MoE routers of a transformers model and tap their logits with forward hooks.

A router is the module that scores every expert for every token (its output, or the first item
of its output, is the router logits, shape (tokens, experts)). transformers 5 names them
`*TopKRouter` (`layers.N.mlp.gate`); transformers 4 used a plain `nn.Linear` called `gate`
inside a `*SparseMoeBlock`. Both are found. Hooks are preferred over
`output_router_logits=True`: the model would keep every layer's logits until the forward ends,
a hook hands each layer's logits over and lets them go (memory stays one layer's worth).

Qwen3-Omni-MoE: only the thinker is analysed (the talker, which speaks, has routers too).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# model_type -> what was tested. All route by softmax over the router logits, then top-k; the
# "router distribution" of a token is that softmax.
FAMILIES: dict[str, str] = {
    "qwen3_moe": "tested (tiny model built offline)",
    "qwen2_moe": "tested (tiny model built offline; the shared expert's sigmoid gate is not a router and is left out)",
    "mixtral": "tested (tiny model built offline)",
    "qwen3_omni_moe_thinker": "tested (tiny thinker with a real Whisper-style audio encoder, built offline)",
    "qwen3_omni_moe": "tested: the thinker of the full model class (tiny, built offline without the talker)",
}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class NotMoEError(ValueError):
    """The model has no mixture-of-experts router."""


@dataclass
class Router:
    name: str  # module path, e.g. model.language_model.layers.3.mlp.gate
    layer: int  # decoder layer index (depth)
    module: Any
    n_experts: int
    top_k: int


def _model_type(model: Any) -> str:
    return getattr(getattr(model, "config", None), "model_type", "") or ""


def routed_root(model: Any) -> Any:
    """The part whose routers are analysed: the thinker of Qwen3-Omni, else the model."""
    thinker = getattr(model, "thinker", None)
    return model if thinker is None else thinker


def forward_target(model: Any) -> Any:
    """The backbone under the LM head (same inputs, no vocabulary-sized logits): routing does
    not depend on the head, and skipping it saves time and (T x vocab) memory."""
    root = routed_root(model)
    inner = getattr(root, "model", None)
    return inner if inner is not None and callable(inner) else root


def _is_router(name: str, module: Any, parent_cls: str) -> bool:
    cls = type(module).__name__
    if name.rsplit(".", 1)[-1] == "shared_expert_gate":
        return False
    if cls.endswith("TopKRouter") or cls.endswith("Router"):
        return hasattr(module, "weight")
    # transformers 4: `gate = nn.Linear(hidden, n_experts)` inside a sparse MoE block
    return (name.rsplit(".", 1)[-1] == "gate" and cls == "Linear"
            and ("SparseMoe" in parent_cls or "MoE" in parent_cls or "Moe" in parent_cls))


def _top_k(module: Any, config: Any) -> int:
    k = getattr(module, "top_k", None)
    cfgs = [config, getattr(config, "text_config", None)]
    while k is None and cfgs:
        cfg = cfgs.pop(0)
        k = getattr(cfg, "num_experts_per_tok", None) if cfg is not None else None
    if k is None:
        raise NotMoEError(f"{type(module).__name__}: cannot tell how many experts each token uses (top-k)")
    return int(k)


def discover_routers(model: Any, what: str = "the model") -> list[Router]:
    """Every router of the analysed part, in depth order; NotMoEError for a dense model."""
    root = routed_root(model)
    modules = dict(root.named_modules())
    found: list[Router] = []
    for name, module in modules.items():
        parent = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
        if not _is_router(name, module, type(parent).__name__ if parent is not None else ""):
            continue
        m = _LAYER.search(name)
        if m is None:
            continue
        weight = module.weight
        found.append(Router(name=name, layer=int(m.group(1)), module=module, n_experts=int(weight.shape[0]),
                            top_k=_top_k(module, getattr(root, "config", None))))
    if not found:
        mt = _model_type(model) or type(model).__name__
        raise NotMoEError(
            f"{what} ({mt}) has no mixture-of-experts router: the gating analysis needs an MoE model "
            f"(tested: {', '.join(sorted(FAMILIES))})")
    found.sort(key=lambda r: r.layer)
    layers = [r.layer for r in found]
    if len(set(layers)) != len(layers):
        raise NotMoEError(f"{what}: several routers in one decoder layer ({layers}); not a supported layout")
    return found


def n_decoder_layers(model: Any) -> int | None:
    cfg = getattr(routed_root(model), "config", None)
    for c in (getattr(cfg, "text_config", None), cfg):
        n = getattr(c, "num_hidden_layers", None) if c is not None else None
        if n:
            return int(n)
    return None


def family_note(model: Any) -> str:
    mt = _model_type(model)
    return FAMILIES.get(mt, f"{mt or type(model).__name__}: not in the tested families; routers found by the "
                            "generic rule, router distribution taken as the softmax of the router logits")


class RouterTap:
    """Forward hooks on the routers: `on_layer(position, logits)` is called once per router per
    forward, with logits (tokens, experts) of that router, in depth order. Use as a context
    manager; hooks are removed on exit. Counts calls so a caller can check every router fired
    exactly once per forward (a model that calls a router twice would break the statistics)."""

    def __init__(self, routers: list[Router], on_layer: Callable[[int, Any], None]):
        self.routers = routers
        self.on_layer = on_layer
        self.calls = [0] * len(routers)
        self._handles: list[Any] = []

    def _hook(self, pos: int):
        def hook(module: Any, args: Any, output: Any) -> None:
            logits = output[0] if isinstance(output, tuple) else output
            self.calls[pos] += 1
            self.on_layer(pos, logits.detach())
        return hook

    def reset(self) -> None:
        self.calls = [0] * len(self.routers)

    def __enter__(self) -> RouterTap:
        self._handles = [r.module.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def router_weights(routers: list[Router]) -> list[Any]:
    """A float32 CPU copy of each router's weight (experts x hidden): small, kept for comparison."""
    return [r.module.weight.detach().float().cpu().clone() for r in routers]


def relative_change(base: Any, tuned: Any) -> float:
    """||W_tuned - W_base||_F / ||W_base||_F (0 when identical)."""
    import torch

    if tuple(base.shape) != tuple(tuned.shape):
        raise ValueError(f"router shapes differ: {tuple(base.shape)} vs {tuple(tuned.shape)}")
    denom = float(torch.linalg.norm(base))
    diff = float(torch.linalg.norm(tuned - base))
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


# ---------------------------------------------------------------------------------- loading


def _config(path: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", "") == "qwen3_omni_moe":
        config.enable_audio_output = False  # the talker is not analysed: do not build or load it
    return config


def _model_class(config: Any, path: str):
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise ValueError(f"{path}: cannot find a transformers class for architectures={arch!r}")
    return cls


def check_moe(path: str) -> list[Router]:
    """Build the model on the meta device (no weights read) and find its routers: a dense model
    fails here, before anything is loaded."""
    import torch

    config = _config(path)
    cls = _model_class(config, path)
    with torch.device("meta"):
        model = cls._from_config(config)
    return discover_routers(model, what=path)


def load_model(path: str, device: str, dtype: Any):
    """The model in eval mode on `device` (class from the checkpoint's `architectures`)."""
    config = _config(path)
    cls = _model_class(config, path)
    model = cls.from_pretrained(path, config=config, dtype=dtype)
    return model.to(device).eval()
