"""Model-family presets (serve/presets/*.yaml): schema, registry, detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dt_eval.tasks import presets as P
from dt_eval.tasks.presets import (
    Preset,
    UnknownPresetError,
    detect_preset,
    list_presets,
    load_preset,
    preset_dirs,
)

REPO_PRESETS = Path(__file__).resolve().parent.parent / "serve" / "presets"
FAMILIES = {"qwen2-audio", "qwen2.5-omni", "qwen3-omni-instruct", "qwen3-omni-thinking", "kimi-audio", "tiny-qwen2audio"}


def test_repo_preset_dir_comes_first():
    assert preset_dirs()[0] == REPO_PRESETS


def test_all_families_present():
    assert FAMILIES <= set(list_presets())


@pytest.mark.parametrize("path", sorted(REPO_PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_file_validates(path: Path):
    p = load_preset(path.stem)
    assert isinstance(p, Preset)
    assert p.family == path.stem
    assert p.sources, "every preset cites its sources"
    assert p.audio.sampling_rate == 16000
    # the serve command line is well formed: flags start with --, the mm limit is JSON
    args = p.vllm.serve_args()
    assert args[:2] == ["--dtype", p.vllm.dtype]
    i = args.index("--limit-mm-per-prompt")
    assert json.loads(args[i + 1])["audio"] >= p.audio.max_items_per_prompt
    # loading by path gives the same preset
    assert load_preset(str(path)) == p


@pytest.mark.parametrize("model, family", [
    ("Qwen/Qwen3-Omni-30B-A3B-Thinking", "qwen3-omni-thinking"),
    ("Qwen/Qwen3-Omni-30B-A3B-Instruct", "qwen3-omni-instruct"),
    ("Qwen/Qwen2-Audio-7B-Instruct", "qwen2-audio"),
    ("Qwen/Qwen2.5-Omni-7B", "qwen2.5-omni"),
    ("Qwen/Qwen2.5-Omni-3B", "qwen2.5-omni"),
    ("moonshotai/Kimi-Audio-7B-Instruct", "kimi-audio"),
    ("/home/me/.cache/dt-eval/tiny-qwen2audio-0123abcd/deterministic", "tiny-qwen2audio"),
    ("/models/qwen3-omni-30b-a3b-thinking/", "qwen3-omni-thinking"),
])
def test_detect_by_name(model: str, family: str):
    p = detect_preset(model)
    assert p is not None and p.family == family


def test_detect_local_dir_by_config(tmp_path: Path):
    d = tmp_path / "checkpoint-1200"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(
        {"model_type": "qwen2_audio", "architectures": ["Qwen2AudioForConditionalGeneration"]}))
    p = detect_preset(str(d))
    assert p is not None and p.family == "qwen2-audio"


def test_detect_local_dir_by_architecture_only(tmp_path: Path):
    d = tmp_path / "my-finetune"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5OmniForConditionalGeneration"]}))
    p = detect_preset(str(d))
    assert p is not None and p.family == "qwen2.5-omni"


def test_name_beats_config(tmp_path: Path):
    # the tiny model's config says qwen2_audio, but its directory names it
    d = tmp_path / "tiny-qwen2audio-x" / "random"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_audio"}))
    p = detect_preset(str(d))
    assert p is not None and p.family == "tiny-qwen2audio"


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B-Instruct", "gpt-4o", "", "   "])
def test_unknown_model_gives_none(model: str):
    assert detect_preset(model) is None


def test_unknown_local_dir_gives_none(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert detect_preset(str(tmp_path)) is None
    (tmp_path / "config.json").write_text("not json")
    assert detect_preset(str(tmp_path)) is None


def test_unknown_name_lists_known():
    with pytest.raises(UnknownPresetError) as e:
        load_preset("no-such-family")
    msg = str(e.value)
    assert "no-such-family" in msg
    for fam in FAMILIES:
        assert fam in msg


def test_thinking_preset_has_reasoning_parser():
    p = load_preset("qwen3-omni-thinking")
    assert p.thinking.mode == "native"
    assert p.thinking.always_on
    assert p.vllm.reasoning_parser == "qwen3"
    assert "--reasoning-parser" in p.vllm.serve_args()


def test_instruct_and_thinking_differ_as_published():
    ins, thk = load_preset("qwen3-omni-instruct"), load_preset("qwen3-omni-thinking")
    # README "Setting for Evaluation": Instruct greedy; Thinking samples (generation_config.json)
    assert ins.generation.temperature == 0
    assert thk.generation.temperature and thk.generation.temperature > 0
    assert thk.generation.top_p == 0.95 and thk.generation.top_k == 20
    # separate checkpoints: only the Thinking one reasons natively and needs a parser
    assert ins.thinking.mode != "native" and ins.vllm.reasoning_parser is None
    assert thk.generation.max_tokens >= 16384
    # README: no system prompt for evaluation
    assert ins.system_prompt is None and thk.system_prompt is None


def test_tiny_preset_matches_test_model():
    p = load_preset("tiny-qwen2audio")
    assert p.vllm.dtype == "float32"
    assert p.vllm.max_model_len == 2048
    assert "--enforce-eager" in p.vllm.args
    assert p.vllm.reasoning_parser == "qwen3"


def _valid_raw() -> dict:
    with open(REPO_PRESETS / "qwen2-audio.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("mutate, err", [
    (lambda r: r.update(extra_key=1), "extra"),
    (lambda r: r["vllm"].update(flag=1), "extra"),
    (lambda r: r["thinking"].update(mode="maybe"), "mode"),
    (lambda r: r["thinking"].update(prompt_instruction=None), "prompt_instruction"),
    (lambda r: r.update(match=["Qwen2-Audio"]), "lowercase"),
    (lambda r: r["vllm"].update(args=["--limit-mm-per-prompt", "audio=1"]), "JSON"),
    (lambda r: r["vllm"].update(args=["--limit-mm-per-prompt", '{"audio": 0}']), "fewer"),
    (lambda r: r["thinking"].update(always_on=True), "always_on"),
])
def test_schema_rejects(mutate, err):
    raw = _valid_raw()
    mutate(raw)
    with pytest.raises(ValueError, match=err):
        Preset.model_validate(raw)


def test_family_must_match_file_name(tmp_path: Path, monkeypatch):
    raw = _valid_raw()
    f = tmp_path / "other-name.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="must match the file name"):
        load_preset(str(f))


def test_bundled_dir_used_when_repo_dir_missing(tmp_path: Path, monkeypatch):
    # an installed wheel has only dt_eval/_bundled/serve/presets
    from dt_eval.util import resources

    fake_pkg = tmp_path / "site" / "dt_eval"
    bundled = fake_pkg / "_bundled" / "serve" / "presets"
    bundled.mkdir(parents=True)
    (bundled / "qwen2-audio.yaml").write_text((REPO_PRESETS / "qwen2-audio.yaml").read_text())
    monkeypatch.setattr(resources, "PACKAGE_DIR", fake_pkg)
    P._registry.cache_clear()
    try:
        assert P.preset_dirs() == [bundled]
        assert P.list_presets() == ["qwen2-audio"]
    finally:
        monkeypatch.undo()
        P._registry.cache_clear()
