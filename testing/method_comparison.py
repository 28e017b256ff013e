"""Is one method better than another? A comparison of two Table-1 rows over the seeds both ran.

A seed is one draw of everything a training run leaves to chance (initialisation, batch order, dropout), so
the seeds of a row are samples of the method, while the test sentences of one seed only describe the models
that seed trained. The comparison here is over seeds:

* per seed, the difference of the table's own metric (corpus accuracy, span F1, ...) between the two rows'
  runs of that seed;
* their mean, the 95% t-interval over seeds, and the p-value of the paired t-test (n - 1 degrees of freedom);
* the effect size d = mean / standard deviation of the differences, how many seeds improved (k/n), and how
  many seeds a paired t-test at alpha 0.05 would need for 80% power at the observed mean and spread;
* with 5 or more seeds, a two-level bootstrap: draw seeds with replacement, then each drawn seed's test
  sentences with replacement, and recompute each seed's corpus metric. Fewer seeds give too few distinct
  seed resamples for a percentile interval (3 seeds give 10).

Holm's correction (or Benjamini-Hochberg's) adjusts the p-values of the comparisons a table marks together.
"""

import math

import numpy as np

from tawt.testing.significance_testing import bootstrap_differences, corpus_scores

CONFIDENCE = 0.95
POWER = 0.8
ALPHA = 0.05
# Below this many seeds the two-level bootstrap is not reported: too few distinct seed resamples.
BOOTSTRAP_MIN_SEEDS = 5
# The power search stops here: a difference this small against its spread is not worth more seeds.
MAX_SEEDS_SEARCHED = 1000


def distinct_resamples(seeds):
    """How many different multisets of `seeds` seeds drawing with replacement gives: C(2n - 1, n)."""
    return math.comb(2 * seeds - 1, seeds)


def seeds_for_power(mean, std, alpha=ALPHA, power=POWER, max_seeds=MAX_SEEDS_SEARCHED):
    """The fewest seeds with which a two-sided paired t-test at `alpha` detects a true mean difference
    `mean` with spread `std` with probability `power` (noncentral t); None when no difference was seen or
    more than `max_seeds` would be needed."""
    from scipy.stats import nct, t

    if mean == 0 or not np.isfinite(mean) or not np.isfinite(std):
        return None
    if std == 0:
        return 2  # every seed moved by the same amount: the smallest paired test already sees it
    effect = abs(mean) / std
    for seeds in range(2, max_seeds + 1):
        freedom = seeds - 1
        critical = t.ppf(1 - alpha / 2, freedom)
        shift = effect * math.sqrt(seeds)
        if nct.sf(critical, freedom, shift) + nct.cdf(-critical, freedom, shift) >= power:
            return seeds
    return None


def compare_over_seeds(baseline_scores, tested_scores, confidence=CONFIDENCE):
    """The method-level comparison of two rows from their per-seed scores ({seed: score}, the table's metric
    as a fraction): only the seeds both have are paired. Differences are tested - baseline, x 100."""
    from scipy.stats import t

    seeds = sorted(set(baseline_scores) & set(tested_scores))
    differences = np.array([100 * (tested_scores[seed] - baseline_scores[seed]) for seed in seeds])
    count = len(differences)
    result = {
        "seeds": seeds, "differences": differences.tolist(), "mean_difference": float("nan"),
        "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"), "effect_size": float("nan"),
        "seeds_improved": f"{int(np.sum(differences > 0))}/{count}", "seeds_for_80_power": None,
    }
    if count == 0:
        return result
    mean = float(differences.mean())
    result["mean_difference"] = mean
    if count < 2:
        return result  # one seed has no spread: no interval, no test
    std = float(differences.std(ddof=1))
    half_width = t.ppf(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
    if std == 0:
        # Every seed moved by the same amount: t is infinite; no seed-to-seed variation was seen.
        p_value = 1.0 if mean == 0 else 0.0
    else:
        p_value = float(2 * t.sf(abs(mean) / (std / math.sqrt(count)), count - 1))
    result.update({
        "ci_low": mean - half_width, "ci_high": mean + half_width, "p_value": p_value,
        "effect_size": mean / std if std > 0 else math.copysign(math.inf, mean) if mean else 0.0,
        "seeds_for_80_power": seeds_for_power(mean, std),
    })
    return result


def two_level_bootstrap(family, baseline_counts, tested_counts, samples, seed, confidence=CONFIDENCE):
    """(two-sided p, (low, high) percentile interval) of the mean over seeds of tested - baseline (x 100),
    resampling seeds, then sentences within each drawn seed and recomputing that seed's corpus metric.

    `baseline_counts` and `tested_counts` are lists, one per seed in the same order, of per-sentence count
    arrays (significance_testing.sentence_counts) of the two rows' runs of that seed.
    """
    seeds = len(baseline_counts)
    rng = np.random.default_rng(seed)
    drawn_seeds = rng.integers(0, seeds, size=(samples, seeds))
    # Each drawn slot gets its own sentence resample, even where one seed is drawn twice in a sample.
    slot_differences = np.empty((samples, seeds))
    for index in range(seeds):
        slots = drawn_seeds == index
        slot_differences[slots] = bootstrap_differences(
            family, baseline_counts[index], tested_counts[index], int(slots.sum()), rng)
    means = 100 * slot_differences.mean(axis=1)
    observed = 100 * np.mean([
        corpus_scores(family, tested.sum(0)) - corpus_scores(family, baseline.sum(0))
        for baseline, tested in zip(baseline_counts, tested_counts)
    ])
    as_extreme = np.sum(np.abs(means - observed) >= abs(observed) - 1e-10)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float((as_extreme + 1) / (samples + 1)), (float(low), float(high))


def _ranked(p_values):
    """(p-values as floats, the indices of the known ones from smallest p up, an all-NaN result to fill)."""
    p_values = np.asarray(p_values, dtype=float)
    known = np.flatnonzero(~np.isnan(p_values))
    return p_values, known[np.argsort(p_values[known], kind="stable")], np.full(len(p_values), np.nan)


def holm(p_values):
    """Holm's step-down adjusted p-values, in the order given (NaN stays NaN and takes no part)."""
    p_values, order, adjusted = _ranked(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def benjamini_hochberg(p_values):
    """Benjamini-Hochberg's step-up adjusted p-values (false discovery rate), in the order given."""
    p_values, order, adjusted = _ranked(p_values)
    running = 1.0
    for rank in range(len(order) - 1, -1, -1):
        running = min(running, len(order) * p_values[order[rank]] / (rank + 1))
        adjusted[order[rank]] = running
    return adjusted.tolist()


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}
