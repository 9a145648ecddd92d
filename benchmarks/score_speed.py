"""How long scoring 1,000 MMAU test-mini items takes: in process, as a whole CLI call, and the
official evaluation.py on the same file when you point --official at a copy of it.

    python benchmarks/score_speed.py [--meta ../shared/benchmarks/mmau/mmau-test-mini.json]
                                     [--official /path/to/MMAU/evaluation.py]

Goals: under 0.2 s in process, under 1 s for the CLI call.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dt_eval.scoring.submission import read_prediction_file, score_records  # noqa: E402
from dt_eval.tasks.config import load_task  # noqa: E402
from tests.synthetic_meta import mmau_records  # noqa: E402


def timed(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meta", type=Path, default=ROOT.parent / "shared/benchmarks/mmau/mmau-test-mini.json")
    ap.add_argument("--official", type=Path, help="path to a copy of the official MMAU evaluation.py")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    if args.meta.exists():
        records, source = json.loads(args.meta.read_text()), str(args.meta)
    else:
        records, source = mmau_records(1000), "synthetic (1,000 records)"
    rng = random.Random(0)
    for r in records:
        # realistic thinking-model outputs, so extraction has work to do
        r["model_output"] = f"<think>\nListening... {r['question']}\n</think>\n\n" \
                            f"({'ABCDEFGH'[rng.randrange(len(r['choices']))]})"
    tmp = Path(tempfile.mkdtemp()) / "sub.json"
    tmp.write_text(json.dumps(records))
    cfg = load_task("mmau")

    t_read = timed(lambda: read_prediction_file(tmp), args.repeat)
    t_score = timed(lambda: score_records(cfg, records), args.repeat)
    t_extract = timed(lambda: score_records(cfg, records, extract_answers=True), args.repeat)
    cli = [sys.executable, "-m", "dt_eval.cli", "score", "--task", "mmau", "-p", str(tmp), "--extract"]
    t_cli = timed(lambda: subprocess.run(cli, capture_output=True, check=True, cwd=ROOT), 3)
    print(f"data: {source}; {len(records)} items; CPU: {sys.platform}")
    print(f"{'read file':<42}{t_read * 1000:8.1f} ms")
    print(f"{'score, official match (in process)':<42}{t_score * 1000:8.1f} ms")
    print(f"{'score, extraction + official + raw':<42}{t_extract * 1000:8.1f} ms   goal < 200 ms")
    print(f"{'dt-eval score --extract (whole CLI call)':<42}{t_cli * 1000:8.1f} ms   goal < 1000 ms")
    if args.official and args.official.exists():
        off = [sys.executable, str(args.official), "--input", str(tmp)]
        t_off = timed(lambda: subprocess.run(off, capture_output=True, check=True), 3)
        print(f"{'official evaluation.py (whole call)':<42}{t_off * 1000:8.1f} ms")
        print(f"{'ratio dt-eval CLI / official':<42}{t_cli / t_off:8.2f}")


if __name__ == "__main__":
    main()
