"""HARD REQUIREMENT of the recipe: the audio reaches the log-probability forward pass that
produces the gradient (stock TRL GRPOTrainer trains audio LMs on placeholder tokens without the
audio, silently).

Proved on the tiny Qwen2-Audio (random weights, built offline) through the trainer's own update
path (`Trainer._update`: reference log-probs, policy forward with grad, loss, backward):
- the gradient changes when ONLY the audio features change (same prompt tokens, same completion
  tokens, same advantages), is identical when nothing changes, and reaches the audio encoder;
- a forward hook on the audio encoder fires, with grad enabled, in every loss micro-batch, and a
  policy forward that drops the audio (what stock TRL does) is refused;
- the recomputed log-probs equal the sampling distribution's (left padding, positions, audio);
- the short audio window is exact.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trained_recipe import audio_window
from trained_recipe.config import load_config
from trained_recipe.data import make_synthetic_task
from trained_recipe.policy import Policy, Rollout, load_audio_array
from trained_recipe.trainer import AudioNotInLossError, Trainer

pytestmark = pytest.mark.slow  # tiny torch model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dt_eval.testing.tiny_qwen2audio import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audio")
    model = build_tiny_model(root / "tiny", seed=3)
    data = make_synthetic_task(root / "data", 6, seed=5)
    return model, data, root


def make_trainer(setup, **over):
    model, data, root = setup
    base = {"model": str(model), "output_dir": str(root / f"run{len(over)}"), "data": {"train": str(data)},
            "reward": {"components": ["acc", "fmt"]},
            "rollout": {"group_size": 2, "prompts_per_step": 2, "max_completion_length": 8},
            "optim": {"steps": 1, "micro_batch_size": 2, "lr": 1e-3}, "algo": {"beta": 0.05},
            "log": {"progress": False, "samples_every": 0}, "model_opts": {"cpu_threads": 1}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    t = Trainer(load_config(None, base))
    t.setup()
    return t


def capture_update(trainer: Trainer, ro: Rollout, adv: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    """Run the trainer's real update on `ro`; return the gradients it stepped with (model and
    optimizer are restored afterwards)."""
    model_sd = copy.deepcopy(trainer.policy.model.state_dict())
    opt_sd = copy.deepcopy(trainer.optimizer.state_dict())
    sched_sd = copy.deepcopy(trainer.scheduler.state_dict())
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def capturing_step(*a, **k):
        for name, p in trainer.policy.model.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()
        return step(*a, **k)

    trainer.optimizer.step = capturing_step
    try:
        metrics = trainer._update(ro, adv)
    finally:
        trainer.optimizer.step = step
        trainer.policy.model.load_state_dict(model_sd)
        trainer.optimizer.load_state_dict(opt_sd)
        trainer.scheduler.load_state_dict(sched_sd)
    return grads, metrics


def with_audio(trainer: Trainer, ro: Rollout, make_audio) -> Rollout:
    """The same rollout (prompt and completion tokens) with other audio of the same length."""
    items = [trainer.items[0]] * 1
    a0 = load_audio_array(items[0].audio, trainer.policy.rate, 30.0)
    enc = trainer.policy.encode([[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "x"}]}]],
                                [make_audio(a0)])
    mm = {k: v[:1].repeat(len(ro), *([1] * (v.dim() - 1))) for k, v in enc.mm.items()}
    assert torch.equal(mm["feature_attention_mask"], ro.mm["feature_attention_mask"])  # same length: same tokens
    return Rollout(ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask, mm, ro.prompt_index,
                   ro.texts, ro.truncated)


def rollout_for_first_item(trainer: Trainer) -> Rollout:
    torch.manual_seed(0)
    enc = trainer.encode([trainer.items[0]])
    return trainer.policy.generate(enc, 4, max_new_tokens=8, temperature=1.0)


def grad_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.filterwarnings("ignore:Seems like:UserWarning")
def test_gradient_changes_when_only_the_audio_changes(setup):
    t = make_trainer(setup)
    ro = rollout_for_first_item(t)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    g_a, m_a = capture_update(t, ro, adv)
    g_a2, _ = capture_update(t, ro, adv)
    assert grad_diff(g_a, g_a2) == 0.0  # deterministic: any difference below comes from the audio
    rng = np.random.default_rng(0)
    noise = with_audio(t, ro, lambda a: (rng.standard_normal(len(a)) * 0.3).astype(np.float32))
    silence = with_audio(t, ro, lambda a: np.zeros_like(a))
    g_n, m_n = capture_update(t, noise, adv)
    g_s, _ = capture_update(t, silence, adv)
    assert grad_diff(g_a, g_n) > 1e-6 and grad_diff(g_a, g_s) > 1e-6 and grad_diff(g_n, g_s) > 1e-6
    assert m_a["loss"] != m_n["loss"] or m_a["kl"] != m_n["kl"] or grad_diff(g_a, g_n) > 0
    # the language model's own weights see a different gradient (the audio flows into the text positions)
    lm_keys = [k for k in g_a if "language_model" in k]
    assert lm_keys and max(float((g_a[k] - g_n[k]).abs().max()) for k in lm_keys) > 1e-6
    # and the gradient reaches the audio encoder itself
    enc_keys = [k for k in g_a if "audio_tower" in k]
    assert enc_keys and max(float(g_a[k].abs().max()) for k in enc_keys) > 0
    assert m_a["audio_encoder_calls_in_loss"] == 2  # 4 completions / micro-batch 2 = 2 forward passes with grad


def test_log_probs_change_with_the_audio_under_the_reference_and_policy(setup):
    t = make_trainer(setup)
    ro = rollout_for_first_item(t)
    silent = with_audio(t, ro, lambda a: np.zeros_like(a))
    pol = t.policy
    lp = pol.token_logps(pol.model, ro, with_grad=False)
    lp_s = pol.token_logps(pol.model, silent, with_grad=False)
    ref = pol.token_logps(t.ref_model, ro, with_grad=False)
    ref_s = pol.token_logps(t.ref_model, silent, with_grad=False)
    m = ro.completion_mask.bool()
    assert (lp - lp_s)[m].abs().max() > 1e-5 and (ref - ref_s)[m].abs().max() > 1e-5


def test_a_loss_forward_without_audio_is_refused(setup, monkeypatch):
    """What stock TRL does -- a policy forward on the placeholder tokens only -- is caught."""
    t = make_trainer(setup)
    ro = rollout_for_first_item(t)
    real = Policy.token_logps

    def drop_audio_when_training(self, model, r, with_grad):
        if with_grad:
            r = Rollout(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, {}, r.prompt_index,
                        r.texts, r.truncated)
        return real(self, model, r, with_grad)

    monkeypatch.setattr(Policy, "token_logps", drop_audio_when_training)
    with pytest.raises(AudioNotInLossError):
        t._update(ro, torch.tensor([1.0, -1.0, 0.5, -0.5]))


def test_train_step_logs_audio_encoder_calls(setup):
    t = make_trainer(setup)
    m = t.train_step()
    assert m["audio_encoder_calls_in_loss"] == 2 and np.isfinite(m["loss"])
    assert m["kl"] is not None and m["kl"] >= 0


def test_recomputed_log_probs_equal_the_sampling_distribution(setup):
    """Left-padded batch of two prompts of different lengths: the scoring forward (explicit
    positions, audio features) reproduces generate()'s own logits token by token."""
    t = make_trainer(setup)
    pol = t.policy
    items = [t.items[0], t.items[1]]
    msgs = [[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Is it up?"}]}],
            [{"role": "user", "content": [{"type": "audio"}, {"type": "text",
                                                             "text": "A much longer question about the pitch of this tone?"}]}]]
    enc = pol.encode(msgs, [load_audio_array(it.audio, pol.rate, 30.0) for it in items])
    assert (enc.attention_mask == 0).any()  # really left padded
    torch.manual_seed(1)
    with torch.no_grad(), audio_window.maybe_windowed(pol.model, enc.mm, bool(pol.window_ok)) as mm:
        out = pol.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **mm, do_sample=True,
                                 temperature=1.0, top_k=None, max_new_tokens=6, min_new_tokens=6,
                                 output_logits=True, return_dict_in_generate=True,
                                 suppress_tokens=pol.suppress_ids, pad_token_id=pol.pad_id)
    comp = out.sequences[:, enc.input_ids.shape[1]:]
    ro = pol._finish(enc, comp, [0, 1], 6)
    ro = Rollout(ro.prompt_ids, ro.prompt_mask, comp, torch.ones_like(comp), ro.mm, [0, 1], ro.texts, ro.truncated)
    gen_lp = torch.stack([torch.log_softmax(lg.float(), -1).gather(-1, comp[:, i:i + 1]).squeeze(-1)
                          for i, lg in enumerate(out.logits)], dim=1)
    ours = pol.token_logps(pol.model, ro, with_grad=False)
    torch.testing.assert_close(ours, gen_lp, atol=1e-4, rtol=1e-4)


def test_short_audio_window_is_exact(setup):
    t = make_trainer(setup)
    pol = t.policy
    ro = rollout_for_first_item(t)
    assert pol.window_ok is True
    a = pol.token_logps(pol.model, ro, with_grad=False)
    pol.window_ok = False
    b = pol.token_logps(pol.model, ro, with_grad=False)
    pol.window_ok = True
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert ro.mm["input_features"].shape[-1] == 3000  # the rollout keeps the full features


def test_listener_warm_start_keeps_the_encoder_it_was_asked_to_keep(det_model_dir):
    """recipe_learning's start model: the deterministic listener, coin-flip fine-tune, audio
    encoder + projector frozen. (A shadowed variable once built the random model instead.)"""
    from safetensors.torch import load_file

    from trained_recipe.synth import cached_format_model

    warm = load_file(str(cached_format_model(listen_prob=0.5, base="listener", freeze_audio=True) / "model.safetensors"))
    det = load_file(str(det_model_dir / "model.safetensors"))
    audio = [k for k in det if "audio_tower" in k or "multi_modal_projector" in k]
    assert audio and all(torch.equal(warm[k], det[k]) for k in audio)
    assert any(not torch.equal(warm[k], det[k]) for k in det if k not in audio)  # the LM was fine-tuned
    with pytest.raises(ValueError, match="base must be"):
        from trained_recipe.synth import build_format_model

        build_format_model(det_model_dir / "unused", base=str(det_model_dir))
