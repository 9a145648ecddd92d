"""Export the recipe's audio MCQ JSONL to verl's RL parquet.

One row per item, in the layout verl's ``RLHFDataset`` reads (and verl-omni's AVQA example
writes):

    data_source   "dt_recipe_audio_mcq"          (selects the reward function in verl)
    prompt        [{"role": "system", ...}?, {"role": "user", "content": "<audio>QUESTION + OPTIONS"}]
                  the "<audio>" placeholder is replaced by verl with {"type": "audio", "audio": PATH}
    audios        [absolute audio path]          (verl's `data.audio_key`, default "audios")
    ability       "audio_mcq_reasoning"
    reward_model  {"style": "rule", "ground_truth": CORRECT OPTION TEXT}
    extra_info    {"split", "index", "id", "question", "choices", "answer", "reference",
                   "stage", "labels"}

The prompt text is the trainer's own (trained_recipe.data.user_text), so a verl run and a local
run see the same words. Audio stays outside the parquet: every node must see the same paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import PromptConfig
from ..data import McqItem, load_items, user_text

DATA_SOURCE = "dt_recipe_audio_mcq"
ABILITY = "audio_mcq_reasoning"
AUDIO_PLACEHOLDER = "<audio>"
EXPECTED_COLUMNS = ("data_source", "prompt", "audios", "ability", "reward_model", "extra_info")


def build_row(item: McqItem, index: int, *, stage: int = 1, prompt: PromptConfig | None = None,
              data_source: str = DATA_SOURCE, split: str = "train") -> dict[str, Any]:
    cfg = prompt or PromptConfig()
    text = user_text(item, cfg)
    content = f"{AUDIO_PLACEHOLDER}{text}" if cfg.audio_first else f"{text}{AUDIO_PLACEHOLDER}"
    messages = []
    if cfg.system is not None:
        messages.append({"role": "system", "content": cfg.system})
    messages.append({"role": "user", "content": content})
    return {
        "data_source": data_source,
        "prompt": messages,
        "audios": [str(Path(item.audio).resolve())],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": item.answer},
        "extra_info": {"split": split, "index": index, "id": item.id, "question": item.question,
                       "choices": list(item.choices), "answer": item.answer, "reference": item.reference or "",
                       "stage": int(stage), "labels": cfg.labels},
    }


def export_parquet(data: str | Path, out: str | Path, *, stage: int = 1, references: str | Path | None = None,
                   hard_cases: str | Path | None = None, data_source: str = DATA_SOURCE, split: str = "train",
                   audio_root: str | Path | None = None, config_path: str | Path | None = None,
                   check_audio: bool = True) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompt = PromptConfig()
    if config_path:
        from ..config import load_config

        prompt = load_config(config_path).prompt
    items = load_items(data, audio_root, references, check_audio=check_audio)
    if hard_cases:
        from ..trainer import read_id_list

        keep = set(read_id_list(hard_cases))
        items = [it for it in items if it.id in keep]
    if not items:
        raise ValueError("nothing to export")
    rows = [build_row(it, i, stage=stage, prompt=prompt, data_source=data_source, split=split)
            for i, it in enumerate(items)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # plain `string` columns, no dictionary encoding of nested columns (verl-omni saw pyarrow
    # reader crashes with it)
    pq.write_table(pa.Table.from_pylist(rows), out, use_dictionary=False)
    return {"rows": len(rows), "stage": stage, "with_reference": sum(1 for it in items if it.reference),
            "out": str(out)}
