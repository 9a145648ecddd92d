"""Uncertainty of an accuracy, and paired comparisons of two runs on the items they share.

Inputs are per-item outcomes: ``{item_id: {repeat: correct}}`` (see `outcomes_from_samples`).
Every result names its method in a `method` field; proportions are fractions in [0, 1]
(`to_dict(scale=100)` gives percentages, as results.json shows accuracies).

Why these methods:

- One sample per item: the **Wilson score interval** (``wilson``). Its coverage stays close to 95%
  at small n and near 0% / 100%, where the normal ("Wald") interval p ± 1.96·stderr collapses to
  ±0: 8/8 right gives lm-eval's ``1.0 ± 0.0``, while Wilson gives [67.6%, 100%].
- Repeats (``--repeats K``): the items are the sample, their repeats are not independent draws of
  the benchmark. Each item's repeats are averaged, and the interval is the **Wilson interval at
  the effective sample size** (``wilson-effective-n``; Kish's design effect, as Korn & Graubard
  use for survey proportions): n_eff = p(1 - p) / stderr², between n - 1 (every item got the
  same verdict on every repeat: binary items, plain Wilson) and n·K (repeats as independent as
  separate items). At 0% / 100% n_eff = n. A bootstrap over items would collapse to [100, 100]
  there, as the normal interval does. The across-repeat std (spread of the K per-repeat
  accuracies: the sampling noise of one run) is reported beside it, not mixed into it.
- `stderr` is always lm-eval's definition (`mean_stderr`): the sample std (n - 1) of the per-item
  values / sqrt(n); with repeats, of the item means. It is what a normal interval would use.
- Paired comparison, one sample per item in both runs: **McNemar's exact test** (``mcnemar-exact``:
  two-sided binomial test with p = 1/2 on the items that flipped). With repeats in either run:
  a **paired bootstrap** over items (``paired-bootstrap``; p from the null-shifted bootstrap
  distribution of the difference). The difference's interval is always the paired bootstrap
  percentile interval over the shared items (``paired-bootstrap``). When no item flipped it is
  [0, 0]: the runs agree on every item; McNemar's p = 1 says the same.

Pure Python + numpy; no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
SEED = 0
RESAMPLES = 10_000
_CHUNK_CELLS = 2_000_000  # bootstrap draws per chunk (16 MB of uniforms, as many indices)

METHOD_NAMES = {
    "wilson": "Wilson score interval",
    "wilson-effective-n": "Wilson score interval at the effective sample size, repeats averaged per item",
    "mcnemar-exact": "McNemar exact test",
    "paired-bootstrap": "paired bootstrap over items",
}

Outcomes = Mapping[Hashable, Mapping[int, bool]]  # item -> {repeat: correct}


def z_value(level: float = LEVEL) -> float:
    """Two-sided normal quantile: 1.959963984540054 for 0.95."""
    return statistics.NormalDist().inv_cdf(0.5 + level / 2)


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exact at the ends (floating point leaves 1e-17 crumbs there)
    low = 0.0 if p == 0 else max(0.0, center - half)
    high = 1.0 if p == 1 else min(1.0, center + half)
    return low, high


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0 (nothing is known)."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    return _wilson(successes / n, n, z_value(level))


def effective_n(item_means: list[float], samples: int) -> float:
    """Kish's effective sample size of a mean of per-item means: p(1 - p) / stderr², kept within
    [1, samples]; the number of items when p is 0 or 1 (no variance to measure it by)."""
    n = len(item_means)
    p = statistics.fmean(item_means)
    se = mean_stderr(item_means)
    if n < 2 or p <= 0 or p >= 1:
        return float(n)
    if not se:
        return float(samples)  # every item at the same fraction p: the repeats vary, not the items
    return min(float(samples), max(1.0, p * (1 - p) / (se * se)))


def mean_stderr(values: Iterable[float]) -> float | None:
    """lm-eval's `mean_stderr`: sample std (n - 1) / sqrt(n). None for fewer than 2 values."""
    xs = [float(v) for v in values]
    if len(xs) < 2:
        return None
    return statistics.stdev(xs) / math.sqrt(len(xs))


def _resampled_means(values: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (items drawn with replacement) of `values`.

    Resample r draws its n item indices as floor(U * n) from the next n uniforms of numpy's PCG64
    generator seeded with `seed` (one 64-bit draw per uniform, so the result does not depend on
    how the work is chunked)."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    out = np.empty(resamples, dtype=float)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = np.minimum((rng.random((stop - start, n)) * n).astype(np.int64), n - 1)
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_mean_ci(values: Iterable[float], *, level: float = LEVEL, seed: int = SEED,
                      resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (numpy's default linear-interpolated percentiles)."""
    xs = np.asarray(list(values), dtype=float)
    if xs.size == 0:
        return math.nan, math.nan
    means = _resampled_means(xs, seed, resamples)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c: the binomial test of
    min(b, c) successes in b + c trials with p = 1/2, doubled and capped at 1; 1.0 when b = c = 0."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; the division rounds once


# --------------------------------------------------------------------------------------------
# Results


def _scaled(d: dict[str, Any], keys: tuple[str, ...], scale: float) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        if k in keys and v is not None:
            v = v * scale
        out[k] = v
    return out


@dataclass(frozen=True)
class AccuracyCI:
    """An accuracy with its interval. `accuracy` is the mean over items of each item's mean over
    its repeats (the pooled accuracy when every item has every repeat)."""

    n: int  # items
    accuracy: float
    ci_low: float
    ci_high: float
    method: str  # "wilson" (one sample per item) or "wilson-effective-n" (repeats averaged per item)
    stderr: float | None  # lm-eval's mean_stderr over the items (their means, with repeats)
    level: float = LEVEL
    repeats: int = 1  # most samples any item has
    correct: int | None = None  # items right (one sample per item only)
    repeat_std: float | None = None  # sample std of the per-repeat accuracies (repeats only)
    repeat_accuracies: tuple[float, ...] | None = None
    n_eff: float | None = None  # the effective sample size of the interval (repeats only)

    _PROPORTIONS = ("accuracy", "ci_low", "ci_high", "stderr", "repeat_std")

    def to_dict(self, scale: float = 1.0) -> dict[str, Any]:
        d = asdict(self)
        if d["repeat_accuracies"] is not None:
            d["repeat_accuracies"] = [a * scale for a in d["repeat_accuracies"]]
        return _scaled(d, self._PROPORTIONS, scale)

    def describe(self, scale: float = 100.0, digits: int = 2) -> str:
        """'62.50 (95% CI 30.57–86.32, Wilson score interval)'; with repeats the across-repeat std."""
        f = f"{{:.{digits}f}}"
        s = (f"{f.format(self.accuracy * scale)} ({self.level:.0%} CI {f.format(self.ci_low * scale)}–"
             f"{f.format(self.ci_high * scale)}, {METHOD_NAMES[self.method]})")
        if self.repeat_std is not None:
            s += f", across-repeat std {f.format(self.repeat_std * scale)}"
        return s


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the items both scored. `diff` = acc_b - acc_a."""

    n_shared: int
    acc_a: float
    acc_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str  # the test: "mcnemar-exact" or "paired-bootstrap"
    ci_method: str  # "paired-bootstrap"
    # flips: with one sample per item, items wrong in A and right in B (and the reverse); with
    # repeats, items whose repeat-averaged accuracy is higher in B (and the reverse)
    a_wrong_b_right: int
    a_right_b_wrong: int
    only_a: int  # items only A scored (not compared)
    only_b: int
    repeats_a: int
    repeats_b: int
    level: float = LEVEL
    seed: int = SEED
    resamples: int = RESAMPLES

    _PROPORTIONS = ("acc_a", "acc_b", "diff", "ci_low", "ci_high")

    def to_dict(self, scale: float = 1.0) -> dict[str, Any]:
        return _scaled(asdict(self), self._PROPORTIONS, scale)


def format_p(p: float) -> str:
    """'p = 0.039', 'p = 1', 'p < 0.0001'."""
    if p < 1e-4:
        return "p < 0.0001"
    return f"p = {p:.2g}" if p < 0.001 else f"p = {round(p, 3):g}"


# --------------------------------------------------------------------------------------------
# Accuracy intervals


def _item_means(outcomes: Outcomes) -> dict[Hashable, float]:
    return {item: statistics.fmean(bool(v) for v in reps.values()) for item, reps in outcomes.items() if reps}


def _repeat_accuracies(outcomes: Outcomes) -> list[float]:
    per_repeat: dict[int, list[bool]] = {}
    for reps in outcomes.values():
        for r, v in reps.items():
            per_repeat.setdefault(r, []).append(bool(v))
    return [statistics.fmean(per_repeat[r]) for r in sorted(per_repeat)]


def accuracy_ci(outcomes: Outcomes, *, level: float = LEVEL) -> AccuracyCI:
    """The accuracy of one task (or one category) with its interval: Wilson with one sample per
    item, else Wilson at the effective sample size of the repeat-averaged items."""
    means = _item_means(outcomes)
    n = len(means)
    k = max((len(r) for r in outcomes.values()), default=0)
    if n == 0:
        return AccuracyCI(0, math.nan, math.nan, math.nan, "wilson", None, level, 0)
    acc = statistics.fmean(means.values())
    stderr = mean_stderr(means.values())
    if k <= 1:
        correct = sum(1 for m in means.values() if m)
        low, high = wilson_interval(correct, n, level)
        return AccuracyCI(n, acc, low, high, "wilson", stderr, level, 1, correct=correct)
    values = list(means.values())
    n_eff = effective_n(values, sum(len(r) for r in outcomes.values()))
    low, high = _wilson(acc, n_eff, z_value(level))
    per_repeat = _repeat_accuracies(outcomes)
    return AccuracyCI(n, acc, low, high, "wilson-effective-n", stderr, level, k, n_eff=n_eff,
                      repeat_std=statistics.stdev(per_repeat) if len(per_repeat) > 1 else None,
                      repeat_accuracies=tuple(per_repeat))


def grouped_accuracy_ci(outcomes: Outcomes, groups: Mapping[Hashable, str], **kw: Any) -> dict[str, AccuracyCI]:
    """`accuracy_ci` per category (items without a group are left out), in first-seen order."""
    by_group: dict[str, dict[Hashable, Mapping[int, bool]]] = {}
    for item, reps in outcomes.items():
        if item in groups:
            by_group.setdefault(groups[item], {})[item] = reps
    return {g: accuracy_ci(items, **kw) for g, items in by_group.items()}


# --------------------------------------------------------------------------------------------
# Paired comparison


def compare_paired(a: Outcomes, b: Outcomes, *, level: float = LEVEL, seed: int = SEED,
                   resamples: int = RESAMPLES) -> PairedComparison:
    """Run B against run A on their shared items (see the module docstring for the methods)."""
    mean_a, mean_b = _item_means(a), _item_means(b)
    shared = [i for i in mean_a if i in mean_b]
    only_a = len(mean_a) - len(shared)
    only_b = sum(1 for i in mean_b if i not in mean_a)
    k_a = max((len(a[i]) for i in shared), default=0)
    k_b = max((len(b[i]) for i in shared), default=0)
    base = dict(only_a=only_a, only_b=only_b, repeats_a=k_a, repeats_b=k_b, level=level, seed=seed,
                resamples=resamples, ci_method="paired-bootstrap")
    if not shared:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan, math.nan, 1.0, "mcnemar-exact",
                                a_wrong_b_right=0, a_right_b_wrong=0, **base)
    xa = np.array([mean_a[i] for i in shared])
    xb = np.array([mean_b[i] for i in shared])
    up = int(np.sum(xb > xa))
    down = int(np.sum(xb < xa))
    diff = float(xb.mean() - xa.mean())
    boot = _resampled_means(xb - xa, seed, resamples)
    tail = (1 - level) / 2 * 100
    low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
    if k_a <= 1 and k_b <= 1:
        method, p = "mcnemar-exact", mcnemar_exact(down, up)
    else:
        # null-shifted bootstrap: how often a resample lands at least as far from the observed
        # difference as the observed difference is from 0 (+1 smoothing: never exactly 0)
        extreme = int(np.sum(np.abs(boot - diff) >= abs(diff) - 1e-12))
        method, p = "paired-bootstrap", min(1.0, (extreme + 1) / (resamples + 1))
    return PairedComparison(len(shared), float(xa.mean()), float(xb.mean()), diff, low, high, p, method,
                            a_wrong_b_right=up, a_right_b_wrong=down, **base)


# --------------------------------------------------------------------------------------------
# From sample records


def _field(sample: Any, name: str) -> Any:
    return sample.get(name) if isinstance(sample, Mapping) else getattr(sample, name, None)


def outcomes_from_samples(samples: Iterable[Any], task: str | None = None) -> dict[str, dict[int, bool]]:
    """``{item_id: {repeat: correct}}`` of the samples the accuracy counts: data errors and samples
    the official scorer leaves out (`correct` None: MMSU wrong-format responses, hidden answers)
    are not items. Pass the latest record per key (a --retry-errors redo supersedes the error)."""
    out: dict[str, dict[int, bool]] = {}
    for s in samples:
        if task is not None and _field(s, "task") != task:
            continue
        correct = _field(s, "correct")
        if _field(s, "data_error") or correct is None:
            continue
        out.setdefault(str(_field(s, "id")), {})[int(_field(s, "repeat") or 0)] = bool(correct)
    return out
