"""Record building: one finished generation -> one SampleRecord, one line of samples.jsonl (the
reasoning/answer split, the extracted answer, the official verdicts on it and on the raw output)."""

from __future__ import annotations

import time
from typing import Any

from dt_eval.pipeline.extract import split_reasoning
from dt_eval.pipeline.logprobs import record_field
from dt_eval.records import SCHEMA_VERSION, ExtractedAnswer, SampleRecord
from dt_eval.scoring.aggregate import score_one
from dt_eval.scoring.submission import extracted_prediction, task_extract
from dt_eval.tasks.config import TaskConfig
from dt_eval.tasks.prompts import PromptSettings, build_messages, prompt_text
from dt_eval.types import Generation, Item


def make_sample_record(cfg: TaskConfig, idx: int, item: Item, repeat: int, gen: Generation,
                       warnings: list[str], prompt: PromptSettings | None = None) -> dict[str, Any]:
    """One line of samples.jsonl as a plain dict (see `sample_record`)."""
    return sample_record(cfg, idx, item, repeat, gen, warnings, prompt).to_json_dict()


def sample_record(cfg: TaskConfig, idx: int, item: Item, repeat: int, gen: Generation,
                  warnings: list[str], prompt: PromptSettings | None = None) -> SampleRecord:
    """One sample's record. Audio is referenced by path, never embedded."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": gen.key,
        "kind": "audio",
        "task": cfg.name,
        "id": item.id,
        "index": idx,
        "repeat": repeat,
        "meta": item.raw,
        "audio": item.audio.describe() if item.audio else None,
        "output": gen.text,
        "reasoning": gen.reasoning,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "latency_s": gen.latency_s,
        "error": gen.error,
        "warnings": warnings,
        "backend_info": gen.backend_info,
        "time": time.time(),
    }
    if item.data_error:  # the official scorer cannot score this item: counted apart, never asked
        rec["data_error"] = True
        rec["error"] = rec["error"] or f"data: {item.data_error}"
    if prompt is not None:
        try:
            rec["prompt"] = prompt_text(build_messages(cfg, item, prompt)[0])
        except Exception:  # the sample's error says why it could not be prompted
            rec["prompt"] = None
    if rec["error"]:
        rec |= {"prediction": "", "reasoning_text": None, "extracted": None, "correct": False, "correct_raw": False}
        return SampleRecord(**rec)
    if gen.logprobs is not None:
        try:
            rec["logprobs"] = record_field(gen.logprobs, gen.reasoning, gen.text)
        except ValueError as e:  # inconsistent per-token lists: keep the answer, say why they are missing
            rec["warnings"] = [*warnings, f"logprobs not recorded: {e}"]
    ext = task_extract(cfg, gen.text, item.choices, reasoning=gen.reasoning)
    _, region, truncated = split_reasoning(gen.text or "", gen.reasoning)
    prediction = "" if truncated else region.strip()
    rec["prediction"] = prediction
    rec["reasoning_text"] = ext.reasoning
    rec["extracted"] = ExtractedAnswer.from_extraction(ext)
    if cfg.answers_available:
        rec["correct"] = bool(score_one(cfg, item.raw, extracted_prediction(cfg, ext)))
        rec["correct_raw"] = bool(score_one(cfg, item.raw, prediction))
    else:
        rec["correct"] = rec["correct_raw"] = None
    return SampleRecord(**rec)
