"""testing/compare_optimizers.py: runs trained both ways, paired by paradigm, main task and seed."""

import csv
import os

import numpy as np
import pytest

from tawt.testing import compare_optimizers
from tawt.testing.output_tree import find_runs
from tawt.testing.significance_testing import compare_runs
from tests.conftest import corrupted_labels, write_task_files
from tests.test_collect_results import write_run
from utils_cross_task import read_labels, read_sentences

ORIGINAL = {"zero_grad_in_place": True, "legacy_adamw": True}


@pytest.fixture(scope="module")
def one_root(tmp_path_factory):
    """Joint and weighted joint ner, seeds 1 and 2, each with torch's optimizer and with the original's, in one
    root (as the large grid writes them); the original's runs make fewer errors. Also a single-task run."""
    data_dir = write_task_files(tmp_path_factory.mktemp("data"), sizes={"train": 4, "dev": 4, "test": 30}, seed=3)
    root = str(tmp_path_factory.mktemp("grid"))
    gold = read_sentences(os.path.join(data_dir, "test_ner.txt"))
    labels = read_labels(data_dir, "ner")
    for seed in (1, 2):
        for paradigm, weighting in (("joint", "fixed"), ("weighted_joint", "tawt")):
            weights = [[1 / 3] * 3, [0.1, 0.2, 0.7], [0.05, 0.15, 0.8]] if weighting == "tawt" else None
            for optimizer, rate, score in (({}, 0.6, 0.40 + seed / 100), (ORIGINAL, 0.1, 0.80 + seed / 100)):
                directory = os.path.join(root, paradigm + ("_original_optimizer" if optimizer else ""))
                write_run(directory, data_dir, paradigm, "ner", seed, score, 0.5,
                          corrupted_labels(gold, labels, rate, seed), weights, weighting=weighting, **optimizer)
    write_run(root, data_dir, "single_task", "ner", 1, 0.3, 0.3, corrupted_labels(gold, labels, 0.5, 9))
    return root, data_dir


def test_one_root_pairs_each_run_with_its_twin_of_the_other_optimizer(one_root, tmp_path, capsys):
    root, data_dir = one_root
    out = tmp_path / "compare.csv"
    compare_optimizers.main([root, root, "--default_optimizer", "torch", "--flag_optimizer", "original",
                             "--data_dir", data_dir, "--samples", "200", "--output_csv", str(out)])
    rows = {(row["paradigm"], row["main_task"]): row for row in csv.DictReader(open(out))}
    assert set(rows) == {("joint", "ner"), ("weighted_joint", "ner")}  # single-task ran one way only
    for (paradigm, _), row in rows.items():
        assert (row["seeds"], row["default_optimizer"], row["flag_optimizer"]) == ("1 2", "torch", "original")
        assert [float(s) for s in row["default_scores"].split()] == pytest.approx([41.0, 42.0])
        assert [float(s) for s in row["flag_scores"].split()] == pytest.approx([81.0, 82.0])
        assert float(row["flag_mean"]) == pytest.approx(81.5)
        # The method-level comparison: flag - default per seed (x 100), over the two seeds.
        assert float(row["mean_difference"]) == pytest.approx(40.0) and row["seeds_improved"] == "2/2"
        assert float(row["p_value"]) == 0.0 and float(row["ci_low"]) == pytest.approx(40.0)
        # Each seed's own tests of its two trained models on the test sentences, not the seeds pooled.
        runs = compare_optimizers.runs_by_key(find_runs(root))
        for index, seed in enumerate((1, 2)):
            pair = tuple(sorted(runs[paradigm, "ner", seed], key=lambda run: run.optimizer_name != "torch"))
            expected = compare_runs([pair], data_dir, tests=("ttest", "bootstrap", "randomization"), samples=200, seed=1)
            for test in ("ttest", "bootstrap", "randomization"):
                assert float(row[f"per_seed_{test}_p"].split()[index]) == pytest.approx(expected[f"{test}_p"], rel=1e-3)
        assert all(float(value) < 0.01 for value in row["per_seed_ttest_p"].split())  # 10 % of labels wrong against 60 %
    printed = capsys.readouterr().out
    assert "weighted_joint ner seeds [1, 2]: torch 41.50 ± 0.71  original 81.50 ± 0.71" in printed
    # The weights in effect during the last epoch (set by the update before it), for the weighted runs only.
    line = "seed 1 final weights: torch pos 0.100, chunking 0.200, ner 0.700 | original pos 0.100, chunking 0.200, ner 0.700"
    assert line in printed
    assert printed.count("final weights") == 2


def test_one_root_without_the_optimizers_named_is_refused_with_the_fix(one_root, capsys):
    root, data_dir = one_root
    with pytest.raises(SystemExit) as raised:
        compare_optimizers.main([root, root, "--data_dir", data_dir])
    assert raised.value.code == 2
    assert "give --default_optimizer and --flag_optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_optimizers.main([root, root, "--flag_optimizer", "original", "--data_dir", data_dir])
    error = capsys.readouterr().err
    assert "two runs of joint ner seed 1" in error and "--default_optimizer/--flag_optimizer" in error


def test_nothing_run_both_ways_says_so(one_root, tmp_path, capsys):
    root, data_dir = one_root
    with pytest.raises(SystemExit) as raised:
        compare_optimizers.main([root, root, "--default_optimizer", "torch", "--flag_optimizer", "zero_grad_in_place",
                                 "--data_dir", data_dir])
    assert raised.value.code == 1
    assert "no paradigm, main task and seed was run both ways" in capsys.readouterr().err
