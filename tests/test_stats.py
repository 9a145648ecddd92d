"""dt_eval.scoring.stats against known values: hand-computed Wilson intervals, McNemar on a
constructed 2x2 table, the bootstrap with a fixed seed (against an independent loop over the same
draws), lm-eval's stderr on the same per-item values, and the accuracy of a real run directory."""

from __future__ import annotations

import json
import math
import random
import statistics

import numpy as np
import pytest

from dt_eval.scoring.stats import (
    accuracy_ci,
    bootstrap_mean_ci,
    compare_paired,
    format_p,
    grouped_accuracy_ci,
    mcnemar_exact,
    mean_stderr,
    outcomes_from_samples,
    wilson_interval,
    z_value,
)
from dt_eval.storage.rundir import latest_by_key, read_samples

from .paths import REPO

FIXTURE_RUN = REPO / "tests" / "fixtures" / "run-0.1.0"
Z = 1.959963984540054  # Phi^-1(0.975)
Z2 = Z * Z  # 3.841458820694124


def single(values: list[int]) -> dict[str, dict[int, bool]]:
    """One sample per item."""
    return {f"i{k}": {0: bool(v)} for k, v in enumerate(values)}


# --------------------------------------------------------------------------------------------
# Wilson


def test_z_value():
    assert z_value() == pytest.approx(Z, abs=1e-12)


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        # x = n: centre = (1 + z²/2n)/(1 + z²/n), half-width = (z²/2n)/(1 + z²/n), so
        # low = 1/(1 + z²/n) = n/(n + z²) = 8/11.841459 = 0.675592; high = 1 exactly.
        (8, 8, 0.675592, 1.0),
        # x = 0: the mirror image: high = z²/(n + z²) = 3.841459/11.841459 = 0.324408.
        (0, 8, 0.0, 0.324408),
        # p = 0.5: centre = 0.5; half = z/(1 + z²/10) * sqrt(0.25/10 + z²/400)
        #        = 1.959964/1.384146 * sqrt(0.025 + 0.009604) = 1.415998 * 0.186020 = 0.263407.
        (5, 10, 0.236593, 0.763407),
        # p = 0.75, n = 1000: centre = (0.75 + 0.001921)/1.003841 = 0.749043;
        # half = z/1.003841 * sqrt(0.0001875 + 0.00000096) = 1.952465 * 0.013728 = 0.026804.
        (750, 1000, 0.722240, 0.775847),
    ],
)
def test_wilson_hand_computed(x, n, low, high):
    lo, hi = wilson_interval(x, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


def test_wilson_agrees_with_scipy_on_a_grid():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in (1, 2, 7, 8, 30, 113, 1000):
        for x in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ref = scipy_stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
            lo, hi = wilson_interval(x, n)
            assert (lo, hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12)), (x, n)


def test_wilson_does_not_collapse_where_the_normal_interval_does():
    # lm-eval on 8 items all right prints acc 1.0 ± 0.0: stderr is 0, the normal interval [1, 1]
    acc = accuracy_ci(single([1] * 8))
    assert acc.stderr == 0.0
    assert acc.method == "wilson" and acc.correct == 8 and acc.accuracy == 1.0
    assert acc.ci_low == pytest.approx(8 / (8 + Z2)) and acc.ci_high == 1.0
    assert acc.describe() == "100.00 (95% CI 67.56–100.00, Wilson score interval)"
    d = acc.to_dict(scale=100)
    assert d["accuracy"] == 100.0 and d["ci_low"] == pytest.approx(67.5592, abs=1e-4) and d["method"] == "wilson"
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(9, 8)


# --------------------------------------------------------------------------------------------
# Standard error: lm-eval's definition on the same per-item values


def test_stderr_matches_lm_eval_on_the_same_items():
    metrics = pytest.importorskip("lm_eval.api.metrics")
    rng = random.Random(3)
    for n in (2, 8, 45, 1000):
        values = [int(rng.random() < 0.6) for _ in range(n)]
        ours = accuracy_ci(single(values)).stderr
        assert ours == pytest.approx(metrics.mean_stderr(values), rel=1e-12)
        # what lm-eval's evaluator calls for an `acc`-style metric aggregated by mean
        assert ours == pytest.approx(metrics.stderr_for_metric(metrics.mean, 100_000)(values), rel=1e-12)
    # with repeats: lm-eval's formula on the item means (the items are the sample)
    outcomes = {f"i{k}": {r: rng.random() < 0.5 for r in range(3)} for k in range(40)}
    means = [statistics.fmean(v.values()) for v in outcomes.values()]
    assert accuracy_ci(outcomes).stderr == pytest.approx(metrics.mean_stderr(means), rel=1e-12)
    assert mean_stderr([1]) is None


# --------------------------------------------------------------------------------------------
# McNemar exact


def test_mcnemar_exact_on_a_constructed_table():
    # b = 10 items right in A only, c = 2 right in B only: n = 12 discordant pairs.
    # P(X <= 2 | Bin(12, 1/2)) = (C(12,0) + C(12,1) + C(12,2)) / 2^12 = (1 + 12 + 66)/4096 = 79/4096;
    # two-sided: 2 * 79/4096 = 158/4096 = 0.03857421875
    assert mcnemar_exact(10, 2) == 158 / 4096 == 0.03857421875
    assert mcnemar_exact(2, 10) == 158 / 4096
    assert mcnemar_exact(0, 6) == 2 / 64  # all six flips one way: 2 * (1/2)^6
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0  # capped at 1; nothing flipped
    assert mcnemar_exact(3000, 2800) > 0  # large n stays exact (integers), no overflow
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in ((10, 2), (7, 1), (30, 18), (0, 9), (250, 200)):
        assert mcnemar_exact(b, c) == pytest.approx(scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)


def test_compare_paired_on_a_2x2_table():
    # both right 20, A only 10, B only 2, both wrong 8: n = 40, acc A = 30/40, acc B = 22/40
    pairs = [(1, 1)] * 20 + [(1, 0)] * 10 + [(0, 1)] * 2 + [(0, 0)] * 8
    a = {f"q{k}": {0: bool(x)} for k, (x, _) in enumerate(pairs)}
    b = {f"q{k}": {0: bool(y)} for k, (_, y) in enumerate(pairs)}
    b["extra"] = {0: True}  # B only: not compared
    cmp = compare_paired(a, b)
    assert (cmp.n_shared, cmp.only_a, cmp.only_b) == (40, 0, 1)
    assert (cmp.acc_a, cmp.acc_b, cmp.diff) == (0.75, 0.55, pytest.approx(-0.2))
    assert (cmp.a_right_b_wrong, cmp.a_wrong_b_right) == (10, 2)
    assert cmp.method == "mcnemar-exact" and cmp.p_value == 158 / 4096
    assert cmp.ci_method == "paired-bootstrap" and cmp.ci_low < -0.2 < cmp.ci_high < 0
    assert format_p(cmp.p_value) == "p = 0.039"
    d = cmp.to_dict(scale=100)
    assert d["diff"] == pytest.approx(-20.0) and d["p_value"] == 158 / 4096 and d["a_wrong_b_right"] == 2
    # the same runs agree with themselves
    same = compare_paired(a, a)
    assert same.p_value == 1.0 and same.diff == 0.0 and (same.ci_low, same.ci_high) == (0.0, 0.0)
    assert compare_paired(a, {}).n_shared == 0


# --------------------------------------------------------------------------------------------
# Bootstrap


def _reference_bootstrap(values: list[float], seed: int, resamples: int) -> tuple[float, float]:
    """The documented procedure written out as a plain loop: resample r takes the next n uniforms
    U of PCG64(seed) and the items floor(U * n)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for _ in range(resamples):
        idx = (rng.random(n) * n).astype(int)
        means.append(sum(values[i] for i in idx) / n)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def test_bootstrap_is_reproducible_with_a_fixed_seed():
    rng = random.Random(11)
    values = [float(rng.random() < 0.7) for _ in range(60)]
    ci = bootstrap_mean_ci(values, seed=7, resamples=2000)
    assert ci == bootstrap_mean_ci(values, seed=7, resamples=2000)  # same seed, same interval
    assert ci == pytest.approx(_reference_bootstrap(values, 7, 2000), abs=1e-12)
    other = bootstrap_mean_ci(values, seed=8, resamples=2000)
    assert other != ci and other == pytest.approx(ci, abs=0.05)
    # chunking does not change the draws
    import dt_eval.scoring.stats as stats

    old = stats._CHUNK_CELLS
    try:
        stats._CHUNK_CELLS = 7 * 60 + 13
        assert bootstrap_mean_ci(values, seed=7, resamples=2000) == ci
    finally:
        stats._CHUNK_CELLS = old


def test_bootstrap_agrees_with_wilson_at_large_n():
    values = [1.0] * 750 + [0.0] * 250
    lo, hi = bootstrap_mean_ci(values, seed=0)
    wlo, whi = wilson_interval(750, 1000)
    assert abs(lo - wlo) < 0.004 and abs(hi - whi) < 0.004


def test_repeats_wilson_at_the_effective_sample_size_hand_computed():
    # 10 items x 2 repeats, 5 right twice, 5 wrong twice: p = 0.5; item means 1,1,1,1,1,0,0,0,0,0
    # sample variance = 10 * 0.25 / 9 = 0.277778, stderr² = 0.0277778, n_eff = 0.25 / 0.0277778 = 9
    # Wilson(0.5, 9): half = z/(1 + z²/9) * sqrt(0.25/9 + z²/324) = 1.373652 * 0.199083 = 0.273471
    consistent = {f"i{k}": {0: k < 5, 1: k < 5} for k in range(10)}
    acc = accuracy_ci(consistent)
    assert acc.method == "wilson-effective-n" and acc.n_eff == pytest.approx(9.0)
    assert (acc.ci_low, acc.ci_high) == (pytest.approx(0.226529, abs=1e-6), pytest.approx(0.773471, abs=1e-6))
    assert acc.repeat_std == 0.0 and acc.repeats == 2
    # 3 items right on both repeats: no variance to measure, n_eff = the 3 items:
    # low = 3 / (3 + z²) = 3 / 6.841459 = 0.438503 (a bootstrap would say [1, 1])
    perfect = accuracy_ci({f"i{k}": {0: True, 1: True} for k in range(3)})
    assert perfect.n_eff == 3 and perfect.ci_low == pytest.approx(0.438503, abs=1e-6) and perfect.ci_high == 1.0
    assert perfect.describe() == ("100.00 (95% CI 43.85–100.00, Wilson score interval at the effective sample size, "
                                  "repeats averaged per item), across-repeat std 0.00")
    # 8 items, each right on exactly one of 2 repeats: the items do not differ, the repeats do:
    # n_eff = all 16 samples, Wilson(8 of 16) = [0.279996, 0.720004]
    coin = accuracy_ci({f"i{k}": {0: k % 2 == 0, 1: k % 2 == 1} for k in range(8)})
    assert coin.n_eff == 16 and (coin.ci_low, coin.ci_high) == pytest.approx(wilson_interval(8, 16))
    assert coin.ci_low == pytest.approx(0.279996, abs=1e-6)


def test_repeats_average_items_first():
    rng = random.Random(5)
    # 50 items, 4 repeats; item difficulty varies, so repeats of one item are correlated
    outcomes = {}
    for k in range(50):
        p = rng.random()
        outcomes[f"i{k}"] = {r: rng.random() < p for r in range(4)}
    acc = accuracy_ci(outcomes)
    per_repeat = [statistics.fmean(outcomes[i][r] for i in outcomes) for r in range(4)]
    assert acc.method == "wilson-effective-n" and acc.repeats == 4 and acc.n == 50
    assert acc.accuracy == pytest.approx(statistics.fmean(per_repeat))  # every item has every repeat
    assert acc.repeat_std == pytest.approx(statistics.stdev(per_repeat))
    assert acc.repeat_accuracies == pytest.approx(tuple(per_repeat))
    means = [statistics.fmean(v.values()) for v in outcomes.values()]
    se = statistics.stdev(means) / math.sqrt(50)
    assert acc.stderr == pytest.approx(se)
    assert acc.n_eff == pytest.approx(acc.accuracy * (1 - acc.accuracy) / se**2) and 49 <= acc.n_eff <= 200
    assert acc.ci_low < acc.accuracy < acc.ci_high
    # close to the bootstrap over items away from the edges
    blo, bhi = bootstrap_mean_ci(means)
    assert abs(acc.ci_low - blo) < 0.02 and abs(acc.ci_high - bhi) < 0.02
    assert "across-repeat std" in acc.describe()


def test_paired_bootstrap_with_repeats():
    rng = random.Random(9)
    a = {f"i{k}": {r: rng.random() < 0.4 for r in range(3)} for k in range(80)}
    same = compare_paired(a, a)
    assert same.method == "paired-bootstrap" and same.p_value == 1.0 and same.diff == 0.0
    better = {i: {r: True for r in range(3)} for i in a}  # B right on every repeat of every item
    cmp = compare_paired(a, better, resamples=2000)
    assert cmp.method == "paired-bootstrap" and (cmp.repeats_a, cmp.repeats_b) == (3, 3)
    assert cmp.p_value == pytest.approx(1 / 2001)  # no resample comes near 0
    assert cmp.a_right_b_wrong == 0 and cmp.a_wrong_b_right == sum(1 for v in a.values() if not all(v.values()))
    assert 0 < cmp.ci_low < cmp.diff < cmp.ci_high
    assert cmp == compare_paired(a, better, resamples=2000)  # fixed seed


# --------------------------------------------------------------------------------------------
# Real run records: the items the accuracy counts


def test_outcomes_of_a_real_run_match_its_official_accuracy():
    samples, dropped = read_samples(FIXTURE_RUN)
    assert dropped == 0
    latest = list(latest_by_key(samples).values())
    results = json.loads((FIXTURE_RUN / "results.json").read_text())
    for task, res in results["tasks"].items():
        acc = accuracy_ci(outcomes_from_samples(latest, task))
        assert acc.n == res["items"]
        assert acc.accuracy * 100 == pytest.approx(res["accuracy_mean"])
        assert [a * 100 for a in acc.repeat_accuracies] == pytest.approx([r["accuracy"] for r in res["repeats"]])
        assert acc.repeat_std * 100 == pytest.approx(res["accuracy_std"])
    # per category: the same function on each group's items
    metas = {s["id"]: s["meta"] for s in latest if s["task"] == "mmau"}
    groups = {i: m["task"] for i, m in metas.items()}
    by_cat = grouped_accuracy_ci(outcomes_from_samples(latest, "mmau"), groups)
    assert sum(c.n for c in by_cat.values()) == len(metas)
    assert all(c.method == "wilson-effective-n" for c in by_cat.values())


def test_outcomes_leave_out_data_errors_and_unscored():
    recs = [
        {"task": "t", "id": "a", "repeat": 0, "correct": True},
        {"task": "t", "id": "a", "repeat": 1, "correct": False},
        {"task": "t", "id": "b", "repeat": 0, "correct": False, "data_error": True},
        {"task": "t", "id": "c", "repeat": 0, "correct": None},  # left out by the official scorer
        {"task": "u", "id": "d", "repeat": 0, "correct": True},
    ]
    assert outcomes_from_samples(recs, "t") == {"a": {0: True, 1: False}}
    assert math.isnan(accuracy_ci({}).accuracy)
