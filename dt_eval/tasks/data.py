"""Load a task's items from a local benchmark directory or from the HF hub.

A local directory is laid out as the benchmark distributes it: the metadata file plus an audio
folder. The sha256 of the metadata file is recorded: MMAU test-mini and MMAR changed over time and
numbers computed on different files are not comparable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.util.hashing import sha256_file, sha256_text
from dt_eval.tasks.config import TaskConfig
from dt_eval.types import AudioRef, Item


class DataError(DtEvalError, ValueError):
    pass


@dataclass
class LoadedTask:
    config: TaskConfig
    items: list[Item]
    source: str  # local path or hub:<dataset>
    sha256: str
    version_label: str | None  # known file version, or None for an unrecognised file
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.config.name,
            "task_version": self.config.version,
            "source": self.source,
            "sha256": self.sha256,
            "version_label": self.version_label,
            "items": len(self.items),
            "warnings": self.warnings,
        }


def resolve_data_dir(cfg: TaskConfig, data_dir: str | Path | None) -> Path | None:
    if data_dir:
        return Path(data_dir).expanduser()
    env = cfg.data.default_dir_env
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return None


def load_task_data(cfg: TaskConfig, data_dir: str | Path | None = None, limit: int | None = None) -> LoadedTask:
    """Items of a task, from `data_dir` (or the task's env var) or else from the HF hub."""
    root = resolve_data_dir(cfg, data_dir)
    if root is not None:
        loaded = _load_local(cfg, root)
    elif cfg.data.hub is not None:
        loaded = _load_hub(cfg)
    else:
        raise DataError(f"{cfg.name}: pass --data-dir (no hub source configured)")
    if cfg.data.expected_items and len(loaded.items) != cfg.data.expected_items:
        loaded.warnings.append(
            f"{cfg.name}: {len(loaded.items)} items, the benchmark has {cfg.data.expected_items}"
        )
    if cfg.data.known_sha256 and loaded.version_label is None:
        loaded.warnings.append(
            f"{cfg.name}: metadata sha256 {loaded.sha256[:12]}… is not a known release; "
            "numbers may not be comparable with published ones"
        )
    _check_unique_ids(cfg, loaded)
    bad = [item for item in loaded.items if item.data_error]
    if bad:
        loaded.warnings.append(
            f"{cfg.name}: {len(bad)} item(s) with metadata errors are recorded as data errors and left out of "
            f"the accuracy: {_show_ids([f'{item.id} ({item.data_error})' for item in bad])}"
        )
    if limit is not None:
        loaded.items = loaded.items[:limit]
    return loaded


def _show_ids(ids: list[str], n: int = 10) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _check_unique_ids(cfg: TaskConfig, loaded: LoadedTask) -> None:
    """Samples are keyed by item id: a repeated id would silently overwrite the earlier item's sample."""
    seen: dict[str, int] = {}
    for item in loaded.items:
        seen[item.id] = seen.get(item.id, 0) + 1
    dups = [f"{i!r} ({n}x)" for i, n in seen.items() if n > 1]
    if dups:
        raise DataError(
            f"{cfg.name}: {len(dups)} item id(s) occur more than once in {loaded.source}: {_show_ids(dups)}; "
            "each sample is stored under its item id, so ids must be unique"
        )


def _metadata_path(cfg: TaskConfig, root: Path) -> Path:
    local = cfg.data.local
    if local is None:
        raise DataError(f"{cfg.name}: no local layout configured")
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"{cfg.name}: data directory {root} does not exist")
    path = root / local.metadata
    if path.is_file():
        return path
    parquet = sorted(root.rglob("*.parquet"))
    if parquet and local.format in ("auto", "parquet"):
        return root
    raise DataError(
        f"{cfg.name}: {path} not found; expected the benchmark's layout ({local.metadata} + audio folder)"
    )


def _load_local(cfg: TaskConfig, root: Path) -> LoadedTask:
    meta = _metadata_path(cfg, root)
    base = meta.parent if meta.is_file() else meta
    if meta.is_dir():  # parquet shards as downloaded from the hub
        files = sorted(meta.rglob("*.parquet"))
        records = _read_parquet(files, cfg)
        sha = sha256_text("".join(sha256_file(f) for f in files))
    else:
        records = _read_metadata_file(meta, cfg)
        sha = sha256_file(meta)
    base = base.resolve()  # once here, not per clip (a thousand realpath walks show in start-up time)
    items = [item_from_record(cfg, rec, i, base) for i, rec in enumerate(records)]
    return LoadedTask(cfg, items, str(meta), sha, cfg.data.known_sha256.get(sha))


def _read_metadata_file(path: Path, cfg: TaskConfig) -> list[dict[str, Any]]:
    fmt = cfg.data.local.format if cfg.data.local else "auto"
    if fmt == "auto":
        fmt = "jsonl" if path.suffix == ".jsonl" else "json"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}: {e.reason})") from None
    if fmt == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"{path}: record #{i} is a {type(rec).__name__}, not an object")
        return records
    records = []
    # split on "\n" only: str.splitlines also breaks at U+2028 and other characters JSON strings may hold
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON (column {e.colno}: {e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {n} is a {type(rec).__name__}, not an object")
        records.append(rec)
    return records


def _read_parquet(files: list[Path], cfg: TaskConfig) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError("reading parquet benchmark files needs `pip install dt-eval[hub]`") from None
    ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    return _dataset_records(ds, cfg)


def _dataset_records(ds: Any, cfg: TaskConfig) -> list[dict[str, Any]]:
    import datasets

    col = cfg.data.hub.audio_column if cfg.data.hub else "audio"
    if col in ds.column_names:
        # Decode audio ourselves (soundfile) instead of datasets' torchcodec path.
        ds = ds.cast_column(col, datasets.Audio(decode=False))
    return [dict(r) for r in ds]


def _load_hub(cfg: TaskConfig) -> LoadedTask:
    hub = cfg.data.hub
    assert hub is not None
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{cfg.name}: loading from the HF hub needs `pip install dt-eval[hub]`, or pass --data-dir"
        ) from None
    try:
        ds = datasets.load_dataset(hub.dataset, hub.config, split=hub.split)
    except Exception as e:  # offline, gated, renamed: say what to do
        raise DataError(
            f"{cfg.name}: could not load {hub.dataset} from the hub ({type(e).__name__}: {e}); "
            f"download the benchmark and pass --data-dir"
        ) from None
    records = _dataset_records(ds, cfg)
    sha = sha256_text(f"{hub.dataset}:{hub.split}:{ds._fingerprint}")
    items = [item_from_record(cfg, rec, i, None) for i, rec in enumerate(records)]
    return LoadedTask(cfg, items, f"hub:{hub.dataset}", sha, cfg.data.known_sha256.get(sha))


def _group_value(value: Any) -> str:
    # MMAU gives `category` as a one-element list in 13 records.
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def record_data_error(cfg: TaskConfig, rec: dict[str, Any]) -> str | None:
    """Why the official scorer cannot score this metadata record, or None. Such an item is not
    sent to the model; it is recorded and counted as a data error."""
    f = cfg.fields
    if cfg.answers_available and f.answer and not isinstance(rec.get(f.answer), str):
        shown = "missing" if f.answer not in rec else f"{rec[f.answer]!r}, not a string"
        return f"'{f.answer}' is {shown}"
    if f.choice_columns:
        # a null option before a set one would shift the letters away from the official scorer's
        values = [rec.get(c) for c in f.choice_columns]
        last = max((i for i, v in enumerate(values) if v is not None), default=-1)
        for col, value in zip(f.choice_columns[: last + 1], values):
            if not isinstance(value, str):
                return f"'{col}' is {'null' if value is None else repr(value)}"
        return None
    name = f.choices or "choices"
    choices = rec.get(name)
    if not isinstance(choices, list):
        return f"'{name}' is {'missing' if name not in rec else repr(choices)}, not a list"
    for i, c in enumerate(choices):
        if not isinstance(c, str):
            return f"option #{i} of '{name}' is {'null' if c is None else repr(c)}, not a string"
    return None


def item_from_record(cfg: TaskConfig, rec: dict[str, Any], index: int, base: Path | None) -> Item:
    f = cfg.fields
    if f.choice_columns:
        choices = [rec.get(c) for c in f.choice_columns]
        choices = [c for c in choices if c is not None]
    else:
        raw_choices = rec.get(f.choices or "choices")
        choices = list(raw_choices) if isinstance(raw_choices, list) else []
    audio = _audio_ref(cfg, rec, base)
    groups = {b.field: _group_value(rec.get(b.field)) for b in cfg.breakdowns}
    raw = {k: v for k, v in rec.items() if not (isinstance(v, dict) and "bytes" in v)}
    if audio and audio.path and isinstance(rec.get(_audio_field(cfg)), dict):
        raw["audio_path"] = audio.path
    return Item(
        id=str(rec.get(f.id, f"#{index}")),
        question=str(rec.get(f.question, "") or ""),
        choices=[str(c) for c in choices],
        answer=rec.get(f.answer) if f.answer else None,
        audio=audio,
        groups=groups,
        raw=raw,
        reference_thinking=rec.get(f.reference_thinking) if f.reference_thinking else None,
        data_error=record_data_error(cfg, rec),
    )


def _audio_field(cfg: TaskConfig) -> str:
    if cfg.data.local:
        return cfg.data.local.audio_field
    return cfg.data.hub.audio_column if cfg.data.hub else "audio"


def _audio_ref(cfg: TaskConfig, rec: dict[str, Any], base: Path | None) -> AudioRef | None:
    value = rec.get(_audio_field(cfg))
    if value is None and cfg.data.hub:
        value = rec.get(cfg.data.hub.audio_column)
    if isinstance(value, dict):  # datasets Audio(decode=False): {"bytes", "path"}
        if value.get("bytes"):
            return AudioRef(path=value.get("path"), data=value["bytes"])
        value = value.get("path")
    if not value:
        return None
    path = str(value)
    if base is not None and not os.path.isabs(path):
        # `base` comes resolved (symlinks followed, once per file): normalising the joined path is
        # enough here, with no filesystem walk per clip
        path = os.path.abspath(os.path.join(base, path))
    return AudioRef(path=path)
