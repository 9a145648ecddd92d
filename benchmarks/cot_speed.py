"""Speed of the reasoning scorers on this machine.

1. Embedding throughput (chains/s): the offline all-MiniLM-L6-v2 embedding the 1,000 MMAR
   reference chains (`thinking` of ../shared/benchmarks/mmar/MMAR-meta.jsonl when present,
   else 1,000 synthetic chains of similar length), chunking included; plus scoring 1,000
   (chain, reference) pairs with distinct chains.
2. Judge throughput at concurrency 1/16/64 against a fixed-delay fake server
   (tests/fault_server.py in its own process) as a fraction of ideal
   (ideal time = requests x delay / concurrency), through JudgeClient (no cache).
3. Cost of a rescore of a 1,000-sample MMAR run (hybrid, stage2, consistency, rubrics, format)
   whose judge replies are all cached: judge requests made (goal 0) and seconds. The first,
   uncached rescore against an in-process fake judge is timed too.

    python benchmarks/cot_speed.py [--delay 0.05] [--requests 1280] [--requests-c1 40]
                                   [--samples 1000] [--skip-embedding] [--only embedding|judge|rescore]

Wall-clock figures depend on what else runs on the machine (the load average is printed);
CPU-seconds are given for the embedding so runs on a busy machine stay comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DT_EVAL_SHARED", ROOT.parent / "shared"))
MMAR_META = SHARED / "benchmarks/mmar/MMAR-meta.jsonl"


def mmar_records(n: int) -> tuple[list[dict], str]:
    if MMAR_META.exists():
        recs = [json.loads(x) for x in MMAR_META.read_text(encoding="utf-8").splitlines() if x.strip()]
        return recs[:n], f"MMAR-meta.jsonl ({len(recs[:n])} items)"
    from tests.synthetic_meta import mmar_records as synth

    rng = random.Random(0)
    words = "the pitch rises while a dog barks and the speaker sounds calm so the answer must be".split()
    recs = synth(n)
    for r in recs:
        r["thinking"] = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) + "."
    return recs, f"synthetic ({n} items)"


def bench_embedding(recs: list[dict]) -> list[tuple[str, str]]:
    from dt_eval.reasoning.embedding import Embedder
    from dt_eval.reasoning.types import CotInput

    t0 = time.perf_counter()
    emb = Embedder()
    load_s = time.perf_counter() - t0
    chains = [r["thinking"] for r in recs]
    emb.embed(chains[:32])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    _, chunks = emb.embed(chains)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    multi = sum(1 for c in chunks if c > 1)
    items = [CotInput(id=str(i), question="q", reasoning=f"In my view: {r['thinking']}", reference=r["thinking"])
             for i, r in enumerate(recs)]
    t0, c0 = time.perf_counter(), time.process_time()
    emb.score_items(items)
    dt_pairs, cpu_pairs = time.perf_counter() - t0, time.process_time() - c0
    return [
        ("embedder load (incl. sha256 check)", f"{load_s:.1f} s"),
        (f"embed {len(chains)} reference chains", f"{dt:.2f} s = {len(chains) / dt:.1f} chains/s; "
                                                   f"{cpu:.1f} CPU-s = {len(chains) / cpu:.1f} chains/CPU-s "
                                                   f"({multi} needed >1 chunk)"),
        (f"score {len(items)} (chain, reference) pairs", f"{dt_pairs:.2f} s = {len(items) / dt_pairs:.1f} pairs/s "
                                                         f"({2 * len(items)} texts); {cpu_pairs:.1f} CPU-s"),
    ]


async def judge_run(url: str, concurrency: int, n: int, delay: float) -> tuple[float, int]:
    from dt_eval.reasoning.judge import JudgeCall, JudgeClient, JudgeConfig

    cfg = JudgeConfig(base_url=url, model="fake-model", concurrency=concurrency, timeout_s=60, max_retries=0,
                      parse_retries=0)
    async with JudgeClient(cfg) as judge:
        warm = [JudgeCall(f"w{i}", "bench", [{"role": "user", "content": f"warm {i}"}], parse=str)
                for i in range(concurrency)]
        await judge.judge_many(warm)
        calls = [JudgeCall(f"c{i}", "bench", [{"role": "user", "content": f"judge item {i}"}], parse=str)
                 for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        out = await judge.judge_many(calls)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, cpu, sum(1 for o in out if o.ok)


def bench_judge(delay: float, n: int, n_c1: int) -> list[tuple[str, str]]:
    from run_overhead import start_server  # the same fault server, started the same way

    proc, url = start_server(delay)
    rows = []
    try:
        for c in (1, 16, 64):
            reqs = n_c1 if c == 1 else n
            dt, cpu, ok = asyncio.run(judge_run(url, c, reqs, delay))
            ideal = reqs * delay / c
            rows.append((f"judge, concurrency {c:>2} ({reqs} requests, {delay * 1000:.0f} ms each)",
                         f"{dt:.2f} s, {ideal / dt * 100:.0f}% of ideal, {reqs / dt:.0f} req/s, "
                         f"client {cpu / reqs * 1000:.2f} CPU-ms/req ({ok} ok)"))
    finally:
        proc.stop()
    return rows


def bench_rescore(recs: list[dict], skip_embedding: bool) -> list[tuple[str, str]]:
    from dt_eval.reasoning.rescore import rescore_run
    from tests.test_cot_support import FakeJudge, StubEmbedder, make_run_dir

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        outputs = [(f"Listening closely: {r['thinking']}", r["answer"] if i % 4 else r["choices"][0])
                   for i, r in enumerate(recs)]
        make_run_dir(run, task="mmar", outputs=outputs, records=recs)
        cot = ["hybrid", "stage2", "consistency", "rubrics", "format"]
        embedder = StubEmbedder() if skip_embedding else None
        quiet = dict(say=lambda m: None, judge_concurrency=64, judge_timeout_s=60)
        with FakeJudge(record=True) as srv:
            t0 = time.perf_counter()
            agg = rescore_run(run, cot, srv.url, "fake-judge", embedder, **quiet)["mmar"]
            first = time.perf_counter() - t0
            n1 = len(srv.chat_requests())
            t0 = time.perf_counter()
            agg2 = rescore_run(run, cot, srv.url, "fake-judge", embedder, **quiet)["mmar"]
            second = time.perf_counter() - t0
            n2 = len(srv.chat_requests()) - n1
        rows.append((f"rescore {len(recs)} samples, {','.join(cot)} (uncached; in-process fake judge)",
                     f"{first:.1f} s, {n1} judge requests ({agg['judge_calls']} recorded)"))
        rows.append((f"rescore again (all cached){' [stub embedder]' if skip_embedding else ''}",
                     f"{second:.1f} s, {n2} judge requests ({agg2['judge_calls']} recorded)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--requests", type=int, default=1280)
    ap.add_argument("--requests-c1", type=int, default=40)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--skip-embedding", action="store_true", help="no real embedding model (stub in rescore)")
    ap.add_argument("--only", choices=["embedding", "judge", "rescore"], action="append",
                    help="run only these parts (repeatable)")
    args = ap.parse_args(argv)
    parts = set(args.only or ["embedding", "judge", "rescore"])
    import platform

    recs, source = mmar_records(args.samples)
    rows: list[tuple[str, str]] = [("machine", f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}"),
                                   ("chains", source)]
    rows.append(("load average (1 min) at start", f"{os.getloadavg()[0]:.1f}"))
    if "embedding" in parts and not args.skip_embedding:
        rows += bench_embedding(recs)
    if "judge" in parts:
        rows += bench_judge(args.delay, args.requests, args.requests_c1)
    if "rescore" in parts:
        rows += bench_rescore(recs, args.skip_embedding)
    rows.append(("load average (1 min) at end", f"{os.getloadavg()[0]:.1f}"))
    from tabulate import tabulate

    print(tabulate(rows, headers=["measure", "result"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
