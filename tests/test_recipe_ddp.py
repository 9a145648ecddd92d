"""Data-parallel training (trained_recipe/distributed.py) with real processes and real gloo
collectives on the CPU: the summed gradient equals the union batch's, and `torchrun` /
`accelerate launch` train, checkpoint and resume with the weights identical on every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trained_recipe import algo  # noqa: E402
from trained_recipe.distributed import Dist, param_hash  # noqa: E402

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


class _State:  # what Dist reads from accelerate's PartialState
    def __init__(self, rank: int, world: int) -> None:
        self.process_index, self.num_processes, self.device = rank, world, torch.device("cpu")


def _batch(mode_seed: int = 0):
    g = torch.Generator().manual_seed(mode_seed)
    x = torch.randn(6, 5, 3, generator=g)  # 6 sequences, 5 tokens, 3 features
    adv = torch.randn(6, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    return x, adv, mask


def _loss(model, x, adv, mask, mode, n, n_tok):
    tok = -(model(x).squeeze(-1)) * adv[:, None]  # a policy-gradient-shaped per-token loss
    return algo.aggregate(tok, mask, mode, n, n_tok, 5)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dist = Dist(_State(rank, world))
    res = {}
    for mode in ("grpo", "dapo", "dr_grpo"):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        x, adv, mask = _batch()
        part = slice(rank * 3, rank * 3 + 3)
        n, n_tok = dist.sum_ints(3, int(mask[part].sum()))
        _loss(model, x[part], adv[part], mask[part], mode, n, n_tok).backward()
        params = list(model.parameters())
        dist.sum_grads_(params)
        res[mode] = [p.grad.tolist() for p in params]
    res["hash"] = param_hash(list(model.parameters()))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
    torch.distributed.destroy_process_group()


def test_summed_gradients_equal_the_union_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0 == r1  # every process holds the same summed gradient (and weights)
    for mode in ("grpo", "dapo", "dr_grpo"):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        x, adv, mask = _batch()
        _loss(model, x, adv, mask, mode, 6, int(mask.sum())).backward()
        want = [p.grad.tolist() for p in model.parameters()]
        for got, exp in zip(r0[mode], want):
            assert torch.allclose(torch.tensor(got), torch.tensor(exp), atol=1e-6), mode


def test_without_a_launcher_dist_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = Dist.from_env("cpu")
    assert not d.enabled and d.world == 1 and d.is_main and d.sum_ints(3, 4) == [3, 4]
    m = {"loss": 1.0}
    assert d.merge_metrics(m, []) is m


def _cfg(tmp: Path, steps: int, resume: bool) -> Path:
    import yaml

    from trained_recipe.data import make_synthetic_task
    from trained_recipe.synth import cached_format_model

    data = make_synthetic_task(tmp / "data", 8, seed=11)  # deterministic: the same files every call
    cfg = {"model": str(cached_format_model()), "output_dir": str(tmp / "out"), "seed": 1, "data": {"train": str(data)},
           "rollout": {"group_size": 2, "prompts_per_step": 2, "max_completion_length": 20, "temperature": 1.0},
           "optim": {"steps": steps, "lr": 5e-4, "micro_batch_size": 2}, "algo": {"beta": 0.01},
           "reward": {"components": ["acc", "fmt"]},
           "checkpoint": {"every": 2, "keep_last": 2, "resume": "auto" if resume else None},
           "log": {"progress": False, "samples_every": 0}, "model_opts": {"cpu_threads": 1, "device": "cpu"}}
    path = tmp / f"cfg{steps}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch(cmd: list[str], tmp: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


@pytest.mark.slow
def test_accelerate_and_torchrun_train_checkpoint_and_resume_on_two_processes(tmp_path):
    for tool in ("accelerate", "torchrun"):
        if not (BIN / tool).exists():
            pytest.skip(f"{tool} is not installed next to {sys.executable}")
    # The multi-GPU command itself; on a machine without CUDA the processes fall back to gloo on the CPU.
    first = _launch([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trained_recipe.cli", "train",
                     "--config", str(_cfg(tmp_path, 2, False))], tmp_path)
    summary = [json.loads(x) for x in first.splitlines() if x.startswith("{")]
    assert len(summary) == 1 and summary[0]["data_parallel"] == 2  # printed once, by rank 0
    again = _launch([str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "trained_recipe.cli", "train",
                     "--config", str(_cfg(tmp_path, 3, True))], tmp_path)
    assert json.loads(again.strip().splitlines()[-1])["steps"] == 3
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one line per step: only rank 0 logs
    for r in rows:
        assert r["dist/world_size"] == 2 and r["dist/params_in_sync"] is True
        assert r["audio_encoder_calls_in_loss"] >= 2  # both processes ran the audio in the loss
        assert r["tokens"] > 0 and r["loss"] == r["loss"]  # finite
    meta = json.loads((tmp_path / "out" / "final" / "dt_recipe.json").read_text())
    assert meta["step"] == 3 and meta["data_parallel"] == 2 and meta["prompts_per_step_total"] == 4
