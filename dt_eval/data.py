"""Load a task's items from a local benchmark directory or from the HF hub.

A local directory is laid out as the benchmark distributes it: the metadata file plus an audio
folder. The sha256 of the metadata file is recorded: MMAU test-mini and MMAR changed over time and
numbers computed on different files are not comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import AudioRef, Item
from .scoring.submission import file_sha256
from .taskconfig import TaskConfig


class DataError(ValueError):
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
    if limit is not None:
        loaded.items = loaded.items[:limit]
    return loaded


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
        digest = hashlib.sha256()
        for f in files:
            digest.update(file_sha256(f).encode())
        sha = digest.hexdigest()
    else:
        records = _read_metadata_file(meta, cfg)
        sha = file_sha256(meta)
    items = [item_from_record(cfg, rec, i, base) for i, rec in enumerate(records)]
    return LoadedTask(cfg, items, str(meta), sha, cfg.data.known_sha256.get(sha))


def _read_metadata_file(path: Path, cfg: TaskConfig) -> list[dict[str, Any]]:
    fmt = cfg.data.local.format if cfg.data.local else "auto"
    if fmt == "auto":
        fmt = "jsonl" if path.suffix == ".jsonl" else "json"
    text = path.read_text(encoding="utf-8")
    try:
        if fmt == "json":
            data = json.loads(text)
        else:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid {fmt.upper()} ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records")
    return data


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
    sha = hashlib.sha256(f"{hub.dataset}:{hub.split}:{ds._fingerprint}".encode()).hexdigest()
    items = [item_from_record(cfg, rec, i, None) for i, rec in enumerate(records)]
    return LoadedTask(cfg, items, f"hub:{hub.dataset}", sha, cfg.data.known_sha256.get(sha))


def _group_value(value: Any) -> str:
    # MMAU gives `category` as a one-element list in 13 records.
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


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
    path = Path(str(value))
    if not path.is_absolute() and base is not None:
        path = (base / path).resolve()
    return AudioRef(path=str(path))
