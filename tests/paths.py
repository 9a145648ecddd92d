"""Where the optional ground-truth material lives: ../shared beside the clone (never needed at
run time; tests that use it skip with a reason when it is absent)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DT_EVAL_SHARED", REPO.parent / "shared"))
MMAU_META = SHARED / "benchmarks/mmau/mmau-test-mini.json"
MMAU_META_OLD = SHARED / "benchmarks/mmau/mmau-test-mini.pre-v05.15.25.json"
MMAR_META = SHARED / "benchmarks/mmar/MMAR-meta.jsonl"
MMAR_META_V1 = SHARED / "benchmarks/mmar/MMAR-meta.v1-2025.json"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(reason=f"{path} not present (real benchmark metadata lives in ../shared, not in the project)")
    return path
