"""The recipe's configuration: one YAML file per stage, validated (unknown keys are errors).

Load with :func:`load_config` (a YAML path plus ``--set a.b=c`` overrides). Relative paths in
the file resolve against the file's directory, except ``output_dir`` and paths given with
``--set``, which resolve against the current directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dt_eval.util.hashing import sha256_text

COMPONENTS = ("acc", "fmt", "con", "sim")
STAGE_COMPONENTS = {1: ["acc", "fmt", "con", "sim"], 2: ["acc", "sim"]}

DEFAULT_INSTRUCTION = (
    "Think about the audio step by step inside <think></think> tags, then give the final answer "
    "as the option's letter and text."
)
# (The shipped stage configs follow the paper instead: an instruction naming <reasoning></reasoning>
# with reward.format_style "reasoning", Audio-DeepThinker's rewarded format.)

# The reasoning tag each format style rewards (styles not listed accept several).
_STYLE_TAG = {"reasoning": "reasoning", "think": "think", "think_answer": "think"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    train: str  # audio MCQ JSONL (see trained_recipe/data.py)
    references: str | None = None  # a dt-eval-refs file (`dt-eval refs build`), merged by id
    audio_root: str | None = None  # base for relative audio paths (default: the JSONL's folder)
    limit: int | None = None  # only the first N items
    shuffle: bool = True
    max_audio_seconds: float | None = 30.0  # clips are cut here (Qwen2-Audio's window); None = never


class PromptConfig(_Strict):
    """The training prompt is rendered by dt-eval's own task code (dt_eval.tasks.prompts): the
    question and options in `task`'s template, with the recipe's instruction (which names the
    reasoning tag the format reward wants) in place of the task's."""

    task: str | None = None  # dt-eval task whose prompt renders the items; None: reward.task (else mmar)
    system: str | None = None  # None: the task's system prompt, else the chat template's default
    template: str | None = None  # None: the task's template ("{question}\n\nOptions:\n{options}\n\n{instruction}")
    option_format: str | None = None  # None: the task's ("({label}) {text}")
    labels: str = "ABCDEFGHIJ"
    instruction: str = DEFAULT_INSTRUCTION
    audio_first: bool = True  # audio part before the text part
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {enable_thinking: true}


class RolloutConfig(_Strict):
    group_size: int = Field(8, ge=2)  # G completions per prompt
    prompts_per_step: int = Field(4, ge=1)  # prompts per optimizer step (batch = prompts_per_step * G)
    generation_batch_size: int = Field(32, ge=1)  # completions per generate() call
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = 0  # 0 = off
    max_completion_length: int = Field(1024, ge=1)


class OptimConfig(_Strict):
    steps: int = Field(100, ge=1)  # optimizer steps
    lr: float = 1e-6
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    micro_batch_size: int = Field(8, ge=1)  # sequences per forward/backward; gradients accumulate
    num_iterations: int = Field(1, ge=1)  # optimizer updates per rollout batch (PPO-style mu)


class AlgoConfig(_Strict):
    loss_agg: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    adv_norm: Literal["gdpo", "sum"] = "gdpo"  # gdpo: normalise each reward per group, then sum
    scale_by_std: bool = True  # divide by the group std (Dr. GRPO: false)
    batch_whiten: bool = False  # GDPO paper: whiten the summed advantage over the batch
    beta: float = Field(0.001, ge=0)  # KL (k3) coefficient; 0 = no reference model
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2  # DAPO's clip-higher uses 0.28
    mask_truncated: bool = False  # DAPO overlong filtering: completions without EOS get no loss
    std_eps: float = 1e-4


class JudgeSettings(_Strict):
    url: str | list[str] | None = None  # OpenAI-compatible base URL(s), e.g. http://127.0.0.1:8000/v1
    model: str = "judge"
    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int | None = 42
    concurrency: int = 32
    timeout_s: float = 120.0
    max_retries: int = 3
    parse_retries: int = 1
    cache: str | None = "auto"  # auto: OUTPUT_DIR/judge_cache.sqlite; null: no cache
    extra_body: dict[str, Any] = Field(default_factory=dict)


class FailurePolicy(_Strict):
    max_rate: float = Field(0.2, ge=0, le=1)  # stop when judge failures / judged completions pass this
    window: int = Field(5, ge=1)  # ... over the last N steps
    min_calls: int = Field(8, ge=0)  # ... once at least this many completions were judged in the window


class RewardConfig(_Strict):
    components: list[str] | None = None  # default: stage 1 acc,fmt,con,sim; stage 2 acc,sim
    weights: dict[str, float] = Field(default_factory=dict)  # default 1.0 each
    hybrid_w: float = Field(0.5, ge=0, le=1)  # stage-1 sim = w * LLM + (1 - w) * embedding
    # dt_eval.reasoning.format styles: reasoning (the paper's <reasoning>...</reasoning> answer; the stage
    # configs), think, think_answer, split, any (all of them; the default here)
    format_style: str = "any"
    open_tag_in_prompt: bool = False
    # R_acc: this dt-eval task's answer extraction and official scorer decide correctness
    # (mmar/mmau: the official token match; mmsu: MMSU's letter rule), as in `dt-eval run`.
    task: str = "mmar"
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    embedder: str | None = None  # sentence-transformers model; None = offline all-MiniLM-L6-v2
    failures: FailurePolicy = Field(default_factory=FailurePolicy)

    @field_validator("format_style")
    @classmethod
    def _style(cls, v: str) -> str:
        from dt_eval.reasoning.format import STYLES

        if v not in STYLES:
            raise ValueError(f"format_style must be one of {', '.join(STYLES)}, got {v!r}")
        return v

    @field_validator("components")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [c for c in v if c not in COMPONENTS]
            if bad or not v:
                raise ValueError(f"unknown reward components {bad}; choose from {COMPONENTS}")
            if len(set(v)) != len(v):
                raise ValueError("reward components repeat")
        return v


class LoraConfig(_Strict):
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class ModelConfig(_Strict):
    lora: LoraConfig = Field(default_factory=LoraConfig)
    freeze_audio_tower: bool = False
    device: str = "auto"  # auto: cuda if available, else cpu
    bf16: Literal["auto", "on", "off"] = "auto"  # autocast to bfloat16 (auto: on with CUDA); weights stay fp32
    dtype: Literal["float32", "bfloat16"] = "float32"  # weight dtype (bfloat16 halves memory; lossy at lr 1e-6)
    gradient_checkpointing: bool = False
    audio_window: Literal["auto", "off"] = "auto"  # Qwen2-Audio: run the encoder on the clip's frames only
    attn_implementation: str | None = None
    cpu_threads: int | None = None  # torch.set_num_threads on CPU (1 is fastest on a busy small machine)


class CheckpointConfig(_Strict):
    every: int = Field(50, ge=1)  # save every N optimizer steps (and at the end)
    keep_last: int | None = 3  # older step checkpoints are deleted (None: keep all)
    resume: str | None = None  # a checkpoint dir, or "auto" (the newest in OUTPUT_DIR/checkpoints)


class HardCaseConfig(_Strict):
    source: Literal["all", "rollouts", "list"] = "all"
    list: str | None = None  # JSONL of {"id": ...} (or a plain text file of ids) for source=list
    band: tuple[float, float] = (0.125, 0.75)  # keep items whose pass rate p satisfies lo <= p <= hi
    rollouts: int = Field(8, ge=1)  # samples per item to estimate the pass rate
    batch_prompts: int = 8

    @field_validator("band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError("band must satisfy 0 <= lo <= hi <= 1")
        return v


class EvalConfig(_Strict):
    """Evaluate the policy during training: every N steps the current checkpoint goes through
    `dt_eval.evaluate(..., backend="hf")` on a held-out dt-eval task; the accuracy (and the
    eval's errors, unparsed answers, run directory) lands in metrics.jsonl at that step."""

    every_steps: int = Field(0, ge=0)  # 0: never
    task: str = "mmar"  # a dt-eval task with answers (mmar, mmau, mmsu, or a task YAML path)
    data_dir: str | None = None  # the benchmark's directory (default: the task's env var, else the hub)
    limit: int | None = Field(None, ge=1)  # only the first N items
    batch_size: int = Field(8, ge=1)
    max_tokens: int | None = Field(None, ge=1)  # default: rollout.max_completion_length
    thinking: Literal["on", "off"] = "on"
    output_dir: str | None = None  # default: OUTPUT_DIR/eval (one run directory per step)


class LogConfig(_Strict):
    progress: bool = True
    samples_every: int = 10  # write a few completions to samples.jsonl every N steps (0: never)


class RecipeConfig(_Strict):
    stage: Literal[1, 2] = 1
    model: str  # policy initialisation (stage 2: the stage-1 checkpoint)
    ref_model: str | None = None  # KL reference (default: `model`, the initial policy)
    output_dir: str = "runs/recipe"
    seed: int = 0
    data: DataConfig
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    model_opts: ModelConfig = Field(default_factory=ModelConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    hard_cases: HardCaseConfig = Field(default_factory=HardCaseConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _check(self) -> RecipeConfig:
        if self.optim.micro_batch_size > self.rollout.prompts_per_step * self.rollout.group_size:
            self.optim.micro_batch_size = self.rollout.prompts_per_step * self.rollout.group_size
        # A prompt that asks for one tag while the format reward wants another rewards nothing.
        want = _STYLE_TAG.get(self.reward.format_style)
        if want is not None and "fmt" in self.components:
            other = "think" if want == "reasoning" else "reasoning"
            if f"<{other}>" in self.prompt.instruction:
                raise ValueError(f"prompt.instruction asks for <{other}> tags but reward.format_style "
                                 f"{self.reward.format_style!r} rewards <{want}>")
        from .rewards import acc_task

        acc_task(self.reward.task, self.prompt.labels)  # an unknown task or unusable labels fail here
        if self.prompt.task is None:  # the prompt of the task whose scorer decides R_acc
            self.prompt.task = self.reward.task
        from .data import prompt_task

        prompt_task(self.prompt)  # an unknown prompt task fails here, not at the first step
        if self.eval.every_steps:
            from dt_eval.tasks.config import UnknownTaskError, load_task

            try:
                task = load_task(self.eval.task)
            except UnknownTaskError as e:
                raise ValueError(f"eval.task: {e}") from None
            if not task.answers_available:
                raise ValueError(f"eval.task {self.eval.task!r} has hidden answers; evaluate on a scored task")
        return self

    # -- derived -------------------------------------------------------------------------------

    @property
    def components(self) -> list[str]:
        return list(self.reward.components or STAGE_COMPONENTS[self.stage])

    def weight(self, comp: str) -> float:
        return float(self.reward.weights.get(comp, 1.0))

    @property
    def needs_judge(self) -> bool:
        return "con" in self.components or "sim" in self.components

    @property
    def needs_embedder(self) -> bool:
        return "sim" in self.components and self.stage == 1

    def reward_summary(self) -> dict[str, Any]:
        """What the checkpoint metadata records about the reward."""
        sim = None
        if "sim" in self.components:
            sim = ({"kind": "hybrid", "w_llm": self.reward.hybrid_w, "w_emb": 1 - self.reward.hybrid_w,
                    "gated_by": "acc", "embedder": self.reward.embedder or "all-MiniLM-L6-v2 (offline)"}
                   if self.stage == 1 else {"kind": "llm", "gated_by": "acc"})
        return {"components": self.components, "weights": {c: self.weight(c) for c in self.components},
                "sim": sim, "format_style": self.reward.format_style, "acc_task": self.reward.task,
                "adv_norm": self.algo.adv_norm,
                "loss_agg": self.algo.loss_agg, "beta": self.algo.beta,
                "judge_model": self.reward.judge.model if self.needs_judge else None}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        return sha256_text(json.dumps(self.to_dict(), sort_keys=True))[:16]


# -- loading -----------------------------------------------------------------------------------

_PATH_KEYS = (("model",), ("ref_model",), ("data", "train"), ("data", "references"), ("data", "audio_root"),
              ("hard_cases", "list"), ("checkpoint", "resume"), ("eval", "data_dir"))


def _set_in(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    cur[keys[-1]] = value


def _get_in(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _resolve(value: Any, base: Path) -> Any:
    """A relative path: next to the config file if it exists there (or starts with ./ or ../),
    else relative to the current directory; a hub id ("Qwen/Qwen2-Audio-7B-Instruct") that
    exists nowhere stays as it is."""
    if not isinstance(value, str) or not value or value == "auto":
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    beside = base / p
    if beside.exists() or value.startswith(("./", "../")):
        return str(beside.resolve())
    here = Path.cwd() / p
    if here.exists() or not _looks_like_hub_id(value):
        return str(here.resolve())
    return value


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.endswith((".jsonl", ".json", ".txt", ".yaml"))


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        _set_in(out, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> RecipeConfig:
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a recipe config must be a YAML mapping")
        base = path.resolve().parent
        for keys in _PATH_KEYS:
            v = _get_in(raw, keys)
            if v is not None:
                _set_in(raw, ".".join(keys), _resolve(v, base))
    over = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for keys in _PATH_KEYS:
        v = _get_in(over, keys)
        if v is not None:
            _set_in(over, ".".join(keys), _resolve(v, Path.cwd()))
    return RecipeConfig.model_validate(_merge(raw, over))
