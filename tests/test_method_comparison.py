"""testing/method_comparison.py: the comparison of two methods over seeds, its corrections, and the Table-1
marks built on it, against the pooled per-sentence test it replaces."""

import csv
import os

import numpy as np
import pytest

from tawt.sequence_metrics import compute_metrics
from tawt.testing import collect_results
from tawt.testing import method_comparison as comparison
from tawt.testing import significance_testing as significance
from tawt.testing.output_tree import find_runs
from tests.conftest import corrupted_labels, write_task_files
from tests.test_collect_results import write_run
from utils_cross_task import read_labels, read_sentences


def test_the_large_grids_ner_weighted_joint_comparison_has_the_published_figures():
    # Per-seed F1 differences of weighted joint and joint training on ner (results/large), x 100.
    baseline = {1: 0.30, 2: 0.30, 3: 0.30}
    tested = {1: 0.3704, 2: 0.3383, 3: 0.3305}
    result = comparison.compare_over_seeds(baseline, tested)
    assert result["mean_difference"] == pytest.approx(4.64, abs=0.005)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((-0.61, 9.89), abs=0.01)
    assert result["p_value"] == pytest.approx(0.063, abs=0.001)
    assert result["seeds_improved"] == "3/3" and result["seeds"] == [1, 2, 3]
    # d = 2.2: four seeds give a paired t-test 80% power at this mean and spread.
    assert result["effect_size"] == pytest.approx(4.64 / np.std([7.04, 3.83, 3.05], ddof=1), rel=1e-3)
    assert result["seeds_for_80_power"] == 4


def test_only_the_seeds_both_rows_ran_are_paired():
    result = comparison.compare_over_seeds({1: 0.5, 2: 0.6, 4: 0.1}, {1: 0.6, 2: 0.6, 3: 0.9})
    assert result["seeds"] == [1, 2] and result["differences"] == pytest.approx([10.0, 0.0])
    assert result["seeds_improved"] == "1/2"
    one = comparison.compare_over_seeds({1: 0.5}, {1: 0.6})
    assert one["mean_difference"] == pytest.approx(10.0) and np.isnan(one["p_value"]) and np.isnan(one["ci_low"])


def test_seeds_for_power_matches_the_paired_t_test_tables():
    # Cohen's tables (and G*Power) for a two-sided paired t-test at alpha 0.05 and power 0.8.
    assert comparison.seeds_for_power(0.5, 1.0) == 34
    assert comparison.seeds_for_power(0.8, 1.0) == 15
    assert comparison.seeds_for_power(1.0, 1.0) == 10
    assert comparison.seeds_for_power(0.0, 1.0) is None


def test_the_t_interval_covers_the_planted_mean_in_about_95_percent_of_experiments():
    rng = np.random.default_rng(7)
    planted, covered, experiments = 1.5, 0, 400
    for _ in range(experiments):
        differences = planted + rng.normal(0, 2.0, size=3)
        result = comparison.compare_over_seeds({seed: 0.0 for seed in range(3)},
                                               {seed: value / 100 for seed, value in enumerate(differences)})
        covered += result["ci_low"] <= planted <= result["ci_high"]
    assert 0.90 * experiments <= covered <= 0.99 * experiments


def test_holm_and_benjamini_hochberg_on_a_known_p_vector():
    p_values = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # Holm: sorted 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, each at least the one before.
    assert comparison.holm(p_values)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: p x 4 / rank, each at most the one after.
    assert comparison.benjamini_hochberg(p_values)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert np.isnan(comparison.holm(p_values)[4]) and comparison.holm([0.6, 0.7]) == [1.0, 1.0]


def test_distinct_seed_resamples():
    assert [comparison.distinct_resamples(seeds) for seeds in (3, 4, 5)] == [10, 35, 126]


def accuracy(gold, labels, predicted):
    return compute_metrics("pos", labels, [s.labels for s in gold], predicted)["accuracy"]


def planted_grid(root, data_dir, rates):
    """Joint (corruption rate 0.3) and weighted joint (the seed's rate in `rates`) pos runs, one per seed,
    their results files the accuracy of their prediction files."""
    gold = read_sentences(os.path.join(data_dir, "test_pos.txt"))
    labels = read_labels(data_dir, "pos")
    for seed, rate in enumerate(rates, start=1):
        for paradigm, paradigm_rate, args in (("joint", 0.3, {}), ("weighted_joint", rate, {"weighting": "tawt"})):
            predicted = corrupted_labels(gold, labels, paradigm_rate, seed + 10 * (paradigm == "joint"))
            score = accuracy(gold, labels, predicted)
            write_run(root, data_dir, paradigm, "pos", seed, score, score, predicted, **args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("data"), sizes={"train": 2, "dev": 2, "test": 150}, seed=11)


def collected_comparison(root):
    collect_results.main([root, "--no_plots"])
    with open(os.path.join(root, "summary", "method_comparisons.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(root, "summary", "table1.md"), encoding="utf-8") as handle:
        return rows, handle.read()


def test_large_gains_of_opposite_sign_are_significant_pooled_but_not_for_the_method(data_dir, tmp_path):
    root = str(tmp_path / "out")
    planted_grid(root, data_dir, rates=(0.05, 0.05, 0.65))
    # The pooled per-sentence test (the table's mark before) calls the three trained pairs different.
    runs = find_runs(root)
    pairs = [(next(r for r in runs if r.paradigm == "joint" and r.seed == seed),
              next(r for r in runs if r.paradigm == "weighted_joint" and r.seed == seed)) for seed in (1, 2, 3)]
    pooled = significance.compare_runs(pairs, tests=("ttest",))
    assert pooled["ttest_p"] < 0.05 and pooled["difference"] > 0
    [row], markdown = collected_comparison(root)
    assert (row["task"], row["method"], row["baseline"], row["seeds"]) == (
        "pos", "Weighted joint training", "Joint training", "1 2 3")
    differences = [float(value) for value in row["per_seed_differences"].split()]
    assert differences[0] > 15 and differences[1] > 15 and differences[2] < -15
    assert float(row["p_value"]) > 0.3 and float(row["ci_low"]) < 0 < float(row["ci_high"])
    assert row["seeds_improved"] == "2/3" and row["significant"] == "False"
    assert "†" not in markdown.split("\n\n- ")[0]
    assert "not with 3 seeds (10 distinct seed resamples)" in row["bootstrap_note"]


def test_a_small_gain_on_every_one_of_five_seeds_is_significant_for_the_method(data_dir, tmp_path):
    root = str(tmp_path / "out")
    planted_grid(root, data_dir, rates=(0.24,) * 5)
    [row], markdown = collected_comparison(root)
    assert row["seeds_improved"] == "5/5" and float(row["p_holm"]) < 0.05 and row["significant"] == "True"
    assert 0 < float(row["ci_low"]) < float(row["mean_difference"]) < float(row["ci_high"])
    # Five seeds: the two-level bootstrap resamples seeds, then sentences; its interval excludes 0 too.
    assert float(row["bootstrap_low"]) > 0 and float(row["bootstrap_p"]) < 0.05
    weighted_line = next(line for line in markdown.splitlines() if line.startswith("| Weighted joint training |"))
    assert "†" in weighted_line and f"{float(row['mean_difference']):+.2f} [" in weighted_line and "5/5" in weighted_line


def test_the_two_level_bootstrap_of_identical_systems_finds_nothing(data_dir):
    gold = read_sentences(os.path.join(data_dir, "test_pos.txt"))
    labels = read_labels(data_dir, "pos")
    counts = [significance.sentence_counts("tagging", [s.labels for s in gold],
                                           corrupted_labels(gold, labels, 0.3, seed)) for seed in range(5)]
    p_value, (low, high) = comparison.two_level_bootstrap("tagging", counts, counts, samples=200, seed=1)
    assert p_value == 1.0 and low == high == 0.0
