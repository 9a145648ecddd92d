"""Functions behind our lm-eval task configs (``tasks/dt_*.yaml``).

Docs are dt-eval items flattened into rows; the metric re-runs ``dt-eval run``'s own record
builder on the model's text, so ``acc`` equals dt-eval's accuracy on the same generations.
"""

from __future__ import annotations

import json
from typing import Any

from dt_eval.integrations.lmeval import task_config
from dt_eval.integrations.lmeval.model import unpack_generation
from dt_eval.tasks.data import item_from_record, load_task_data
from dt_eval.tasks.prompts import task_text
from dt_eval.types import AudioRef, Generation, Item


def load_docs(task: str, data_dir: str | None = None, **_: Any):
    """lm-eval ``custom_dataset``: the task's items (``--metadata '{"data_dir": ...}'`` or the
    task's environment variable, else the HF hub) as a one-split DatasetDict."""
    from datasets import Dataset, DatasetDict

    cfg = task_config(task)
    lt = load_task_data(cfg, data_dir)
    rows = [doc_from_item(task, lt.sha256, i, item) for i, item in enumerate(lt.items)]
    return DatasetDict({"test": Dataset.from_list(rows)})


def doc_from_item(task: str, sha256: str, index: int, item: Item) -> dict[str, Any]:
    audio = item.audio
    return {
        "task": task,
        "id": item.id,
        "index": index,
        "question": item.question,
        "choices": list(item.choices),
        "answer": item.answer if item.answer is None else str(item.answer),
        "audio_path": audio.path if audio else None,
        "audio_bytes": audio.data if audio else None,
        "raw_json": json.dumps(item.raw, ensure_ascii=False, default=str),
        "data_sha256": sha256,
    }


def item_from_doc(doc: dict[str, Any]) -> Item:
    cfg = task_config(doc["task"])
    item = item_from_record(cfg, json.loads(doc["raw_json"]), doc["index"], None)
    audio = None
    if doc.get("audio_path") or doc.get("audio_bytes"):
        audio = AudioRef(path=doc.get("audio_path"), data=doc.get("audio_bytes"))
    item.audio = audio
    return item


def doc_to_text(doc: dict[str, Any]) -> str:
    return task_text(task_config(doc["task"]), item_from_doc(doc))


def doc_to_audio(doc: dict[str, Any]) -> list[dict[str, Any]]:
    # A reference, not samples: lm-eval logs request arguments, and dt-audio decodes the file
    # itself at the model family's rate and window.
    return [{"path": doc.get("audio_path"), "bytes": doc.get("audio_bytes")}]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    from dt_eval.pipeline.records import make_sample_record

    cfg = task_config(doc["task"])
    text, reasoning = unpack_generation(results[0] if results else "")
    gen = Generation(key=f"{doc['task']}/{doc['id']}/0", text=text, reasoning=reasoning)
    rec = make_sample_record(cfg, doc["index"], item_from_doc(doc), 0, gen, [], None)
    return {
        "acc": float(bool(rec["correct"])),
        "acc_official_raw": float(bool(rec["correct_raw"])),
        "unparsed": float(bool((rec.get("extracted") or {}).get("unparsed"))),
    }
