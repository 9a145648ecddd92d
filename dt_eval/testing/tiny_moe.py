"""Tiny mixture-of-experts models built offline (random weights), for the gating analysis tests
and benchmarks/analyze_speed.py.

* :func:`build_tiny_moe` -- a few layers and experts of a transformers MoE family:
  ``qwen3_moe``, ``qwen2_moe``, ``mixtral`` (text only) or ``qwen3_omni_thinker`` (the
  Qwen3-Omni-MoE thinker: real Whisper-style audio encoder + MoE language model; saved with its
  tokenizer and feature extractor, no multimodal processor: that one needs torchvision, and
  dt_eval.analyze builds the same inputs from the tokenizer and feature extractor), or
  ``qwen3_omni``: the full Qwen3-Omni-MoE model class holding that thinker, without the talker
  (``enable_audio_output=False``), as a full checkpoint is loaded for the analysis.
* :func:`perturb` -- a "tuned" copy with chosen layers' router weights and/or expert weights
  changed, everything else bit-identical.

Router weights are drawn with a larger spread than transformers' init (std 0.02 gives near
uniform routing in a tiny model), so routing is peaked and top-k choices are meaningful.

    python -m dt_eval.testing.tiny_moe OUT_DIR [--family qwen3_moe] [--layers 4] [--experts 8]

Importing this module does not import torch / transformers.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

FAMILIES = ("qwen3_moe", "qwen2_moe", "mixtral", "qwen3_omni_thinker", "qwen3_omni")
OMNI_TOKENS = ("<|audio_start|>", "<|audio_end|>", "<|audio_pad|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>")
#: Qwen3-Omni-style chat template: the audio part is <|audio_start|><|audio_pad|><|audio_end|>,
#: the processor (or dt_eval.analyze) repeats <|audio_pad|> once per audio-encoder frame.
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] in ['audio', 'audio_url', 'input_audio'] %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
N_MELS = 32


def _tokenizer(family: str):
    from dt_eval.testing.tiny_qwen2audio import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    if family.startswith("qwen3_omni"):
        tok.add_tokens(list(OMNI_TOKENS), special_tokens=True)
        tok.chat_template = OMNI_CHAT_TEMPLATE
    else:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _config(family: str, vocab: int, layers: int, experts: int, top_k: int, hidden: int, tok):
    heads = max(2, hidden // 16)
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                max_position_embeddings=8192, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=None)
    if family == "qwen3_moe":
        from transformers import Qwen3MoeConfig

        return Qwen3MoeConfig(**text, moe_intermediate_size=hidden // 2, num_experts=experts,
                              num_experts_per_tok=top_k, norm_topk_prob=True)
    if family == "qwen2_moe":
        from transformers import Qwen2MoeConfig

        return Qwen2MoeConfig(**text, moe_intermediate_size=hidden // 2, num_experts=experts,
                              num_experts_per_tok=top_k, shared_expert_intermediate_size=hidden)
    if family == "mixtral":
        from transformers import MixtralConfig

        return MixtralConfig(**text, num_local_experts=experts, num_experts_per_tok=top_k)
    if family == "qwen3_omni":
        from transformers import Qwen3OmniMoeConfig

        thinker = _config("qwen3_omni_thinker", vocab, layers, experts, top_k, hidden, tok)
        return Qwen3OmniMoeConfig(thinker_config=thinker.to_dict(), enable_audio_output=False)
    if family == "qwen3_omni_thinker":
        from transformers import Qwen3OmniMoeThinkerConfig

        ids = {t: tok.convert_tokens_to_ids(t) for t in OMNI_TOKENS}
        half = text["head_dim"] // 2  # mrope sections (t, h, w) cover head_dim / 2
        text.update(moe_intermediate_size=hidden // 2, num_experts=experts, num_experts_per_tok=top_k,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "interleaved": True,
                                     "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]})
        return Qwen3OmniMoeThinkerConfig(
            audio_config=dict(num_mel_bins=N_MELS, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                              d_model=32, output_dim=hidden, n_window=50, n_window_infer=100,
                              downsample_hidden_size=16, max_source_positions=1500),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                               deepstack_visual_indexes=[0], num_position_embeddings=64, patch_size=16),
            text_config=text,
            audio_token_id=ids["<|audio_pad|>"], image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"], audio_start_token_id=ids["<|audio_start|>"],
            # read by the thinker's rope index but missing from the config class (transformers 5.24)
            vision_start_token_id=ids["<|vision_start|>"],
        )
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def _model_class(family: str):
    import transformers

    return getattr(transformers, {
        "qwen3_moe": "Qwen3MoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "mixtral": "MixtralForCausalLM",
        "qwen3_omni_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
        "qwen3_omni": "Qwen3OmniMoeForConditionalGeneration"}[family])


def build_tiny_moe(out_dir: str | Path, family: str = "qwen3_moe", layers: int = 4, experts: int = 8,
                   top_k: int = 2, hidden: int = 64, seed: int = 0, router_std: float | None = None) -> Path:
    """Build a random tiny MoE model (+ tokenizer, + feature extractor for the omni thinker) into
    `out_dir`. `router_std`: spread of the router weights (default 2/sqrt(hidden): router logits of
    std ~2 on RMS-normalised hidden states)."""
    import torch

    from dt_eval.analyze.moe import discover_routers

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(family)
    cfg = _config(family, len(tok), layers, experts, top_k, hidden, tok)
    torch.manual_seed(seed)
    model = _model_class(family)(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    std = router_std if router_std is not None else 2.0 / math.sqrt(hidden)
    with torch.no_grad():
        for r in discover_routers(model):
            r.module.weight.copy_(torch.randn(r.module.weight.shape, generator=gen) * std)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if family.startswith("qwen3_omni"):
        from transformers import WhisperFeatureExtractor

        WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=30,
                                n_fft=400, return_attention_mask=True).save_pretrained(out)
    return out


def _resolve(layers: Sequence[int], n: int) -> list[int]:
    """Positions among the MoE layers; negative counts from the top (-1 = the last MoE layer)."""
    return sorted({i % n for i in layers})


def perturb(src: str | Path, dst: str | Path, routers: Sequence[int] = (), experts: Sequence[int] = (),
            scale: float = 0.5, seed: int = 1) -> Path:
    """Copy `src` to `dst` with the router weights of MoE layers `routers` and the expert weights
    of MoE layers `experts` changed by Gaussian noise of relative size `scale` (per tensor:
    noise norm = scale x weight norm). Layers are positions among the MoE layers, negative from
    the top. Everything else is saved unchanged."""
    import torch

    from dt_eval.analyze.moe import discover_routers, load_model, routed_root

    src, dst = Path(src), Path(dst)
    model = load_model(str(src), "cpu", torch.float32)
    found = discover_routers(model)
    gen = torch.Generator().manual_seed(seed)

    def shake(p: torch.nn.Parameter) -> None:
        noise = torch.randn(p.shape, generator=gen)
        p.add_(noise * (scale * p.norm() / noise.norm()))

    modules = dict(routed_root(model).named_modules())  # router names are relative to it
    with torch.no_grad():
        for i in _resolve(routers, len(found)):
            shake(found[i].module.weight)
        for i in _resolve(experts, len(found)):
            block = modules[found[i].name.rsplit(".", 1)[0]]
            params = list(block.experts.parameters())
            if not params:
                raise ValueError(f"{found[i].name}: no expert weights found")
            for p in params:
                shake(p)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "model.safetensors.index.json"))
    model.save_pretrained(dst)
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--family", default="qwen3_moe", choices=FAMILIES)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(build_tiny_moe(a.out_dir, a.family, a.layers, a.experts, a.top_k, a.hidden, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
