"""testing/collect_results.py: Table 1 from a fake output tree, its significance marks and the weight plots."""

import csv
import json
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from tawt.testing import collect_results
from tawt.testing.output_tree import OutputTreeError
from tests.conftest import corrupted_labels, sentence_scores_by_hand, write_task_files
from utils_cross_task import prediction_file_text, read_labels, read_sentences

SEEDS = (1, 2)
MAIN_TASKS = ("ner", "pos")
# (paradigm, extra args) of the Table 1 grid; weighted pre-training comes with two inv_constants.
GRID = [
    ("single_task", {}),
    ("pretraining", {}),
    ("weighted_pretraining", {"inv_constant": 1.0, "weighting": "tawt"}),
    ("weighted_pretraining", {"inv_constant": 10.0, "weighting": "tawt"}),
    ("joint", {}),
    ("weighted_joint", {"weighting": "tawt"}),
    ("normalized_joint", {"task_weights": [0.05, 0.05, 0.9]}),
    ("weighted_normalized_joint", {"task_weights": [0.05, 0.05, 0.9], "weighting": "tawt"}),
    ("joint_gcs", {"weighting": "gcs", "gcs_mode": "unweighted", "gcs_variant": "du"}),
    ("joint_olaux", {"weighting": "olaux"}),
]


def write_run(root, data_dir, paradigm, main_task, seed, test_score, dev_score, predicted=None, weights=None, **args):
    """A run directory as the training scripts leave it: arguments, results, predictions, task weights."""
    name = "_".join(f"{key}{value}" for key, value in sorted(args.items()) if key != "task_weights")
    directory = os.path.join(root, paradigm, main_task, name or "default", f"seed_{seed}")
    os.makedirs(directory)
    sources = [task for task in ("pos", "chunking", "ner") if task != main_task][:2]
    tasks = [main_task] if paradigm == "single_task" else sources + [main_task]
    all_args = {
        "data_dir": data_dir, "main_task_train_sent_num": 100, "auxiliary_main_ratio": None,
        "inv_constant": 10.0, "weighting": "fixed", "task_weights": None, **args,
    }
    with open(os.path.join(directory, "run_args.json"), "w") as handle:
        json.dump({"paradigm": paradigm, "main_task": main_task, "tasks": tasks, "seed": seed, "args": all_args,
                   "versions": {}, "git_commit": None}, handle)
    key = "accuracy" if main_task == "pos" else "f1"
    extra = "micro_f1 = 0.5\nmacro_f1 = 0.4\n" if main_task == "pos" else "precision = 0.5\nrecall = 0.5\n"
    for split, score in (("eval", dev_score), ("test", test_score)):
        with open(os.path.join(directory, f"{main_task}_{split}_results.txt"), "w") as handle:
            handle.write(f"loss = 0.3\n{key} = {score!r}\n{extra}")
    if predicted is not None:
        with open(os.path.join(directory, f"{main_task}_test_predictions.txt"), "w") as handle:
            handle.write(prediction_file_text(os.path.join(data_dir, f"test_{main_task}.txt"), predicted))
    if weights is not None:
        weighted_tasks = sources if paradigm == "weighted_pretraining" else tasks
        history = [{"stage": "initial", "epoch": 0, "weights": weights[0], "cosine_similarities": None}] + [
            {"stage": "epoch", "epoch": epoch, "weights": w, "cosine_similarities": [0.1] * len(w)}
            for epoch, w in enumerate(weights[1:], start=1)
        ]
        with open(os.path.join(directory, "task_weights.json"), "w") as handle:
            json.dump({"tasks": weighted_tasks, "weighting": args.get("weighting", "fixed"), "history": history}, handle)
    return directory


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A grid of fake runs; returns (root, data_dir, the test scores written per configuration)."""
    data_dir = write_task_files(tmp_path_factory.mktemp("data"), sizes={"train": 4, "dev": 4, "test": 20}, seed=5)
    root = str(tmp_path_factory.mktemp("out"))
    rng = np.random.default_rng(0)
    written = {}
    for main_task in MAIN_TASKS:
        gold = read_sentences(os.path.join(data_dir, f"test_{main_task}.txt"))
        labels = read_labels(data_dir, main_task)
        for paradigm, args in GRID:
            for seed in SEEDS:
                test_score = float(rng.uniform(0.5, 0.9))
                # inv_constant 10 wins on dev for ner, 1 for pos: the table must pick by dev, not by test.
                dev_score = 0.7 + 0.1 * (args.get("inv_constant") == (10.0 if main_task == "ner" else 1.0))
                if paradigm == "weighted_joint":
                    predicted, test_score = [s.labels for s in gold], 0.95  # perfect: significantly better
                elif paradigm in ("joint", "normalized_joint", "weighted_normalized_joint"):
                    # Normalized joint and its weighted version predict the same: never significant.
                    rate = 0.5 if paradigm == "joint" else 0.2
                    predicted = corrupted_labels(gold, labels, rate, seed)
                else:
                    predicted = corrupted_labels(gold, labels, 0.3, seed + 100)
                weights = [[1 / 3] * 3, [0.2, 0.3, 0.5], [0.1, 0.3, 0.6]] if args.get("weighting") == "tawt" else None
                if paradigm == "weighted_pretraining":
                    weights = [[0.5, 0.5], [0.4, 0.6]]
                write_run(root, data_dir, paradigm, main_task, seed, test_score, dev_score, predicted, weights, **args)
                written.setdefault((paradigm, main_task, args.get("inv_constant")), []).append(test_score)
    # Ratio analysis and another main-task size: not Table 1.
    write_run(root, data_dir, "weighted_normalized_joint", "ner", 1, 0.61, 0.6, auxiliary_main_ratio=2, weighting="tawt")
    write_run(root, data_dir, "single_task", "ner", 1, 0.62, 0.6, main_task_train_sent_num=1000)
    # A run that has not finished: skipped with a warning.
    unfinished = os.path.join(root, "unfinished")
    os.makedirs(unfinished)
    with open(os.path.join(unfinished, "run_args.json"), "w") as handle:
        json.dump({"paradigm": "joint", "main_task": "ner", "tasks": ["ner"], "seed": 9, "args": {}}, handle)
    return root, data_dir, written


@pytest.fixture(scope="module")
def collected(tree, tmp_path_factory):
    root, _, _ = tree
    output_dir = str(tmp_path_factory.mktemp("summary"))
    collect_results.main([root, "--output_dir", output_dir])
    table = list(csv.DictReader(open(os.path.join(output_dir, "table1.csv"))))
    other = list(csv.DictReader(open(os.path.join(output_dir, "other_runs.csv"))))
    markdown = open(os.path.join(output_dir, "table1.md")).read()
    return output_dir, {(row["paradigm"], row["main_task"]): row for row in table}, other, markdown


def test_table_numbers_equal_the_results_files(tree, collected):
    _, _, written = tree
    _, table, _, markdown = collected
    for paradigm, args in GRID:
        if paradigm == "weighted_pretraining":
            continue
        for main_task in MAIN_TASKS:
            scores = written[paradigm, main_task, args.get("inv_constant")]
            row = table[paradigm, main_task]
            assert float(row["mean"]) == pytest.approx(np.mean(scores), abs=1e-12)
            assert float(row["std"]) == pytest.approx(np.std(scores, ddof=1), abs=1e-12)
            assert row["seeds"] == "1 2"
            cell = f"{100 * np.mean(scores):.2f} ± {100 * np.std(scores, ddof=1):.2f}"
            assert cell in markdown
        average = np.mean([np.mean(written[paradigm, task, args.get("inv_constant")]) for task in MAIN_TASKS])
        assert float(table[paradigm, "average"]["mean"]) == pytest.approx(average)
    # Columns in the paper's order.
    assert "| Method | POS | NER | Avg |" in markdown


def test_weighted_pretraining_row_shows_the_inv_constant_with_the_best_dev_score(tree, collected):
    _, _, written = tree
    _, table, other, markdown = collected
    for main_task, best in (("ner", 10.0), ("pos", 1.0)):
        assert float(table["weighted_pretraining", main_task]["mean"]) == pytest.approx(
            np.mean(written["weighted_pretraining", main_task, best])
        )
        assert f"inv_constant={best}" in table["weighted_pretraining", main_task]["settings"]
        assert f"Weighted pre-training, {main_task}: inv_constant={best}, chosen by mean dev score" in markdown
    # The losing inv_constant of each main task is listed among the other runs.
    losers = {(row["main_task"], row["settings"]) for row in other if row["paradigm"] == "weighted_pretraining"}
    assert {("ner", "inv_constant=1.0"), ("pos", "inv_constant=10.0")} <= losers


def test_paper_choice_of_inv_constant_overrides_the_dev_choice(tree, tmp_path, caplog):
    root, _, written = tree
    # The paper's choice per target, here against the dev score's (ner: 10, pos: 1); pos left to the table.
    collect_results.main([root, "--output_dir", str(tmp_path), "--no_plots", "--inv_constant_choice", "paper",
                          "--paper_inv_constant", "ner=1"])
    table = {(row["paradigm"], row["main_task"]): row for row in csv.DictReader(open(tmp_path / "table1.csv"))}
    markdown = (tmp_path / "table1.md").read_text()
    assert float(table["weighted_pretraining", "ner"]["mean"]) == pytest.approx(
        np.mean(written["weighted_pretraining", "ner", 1.0]))
    assert "Weighted pre-training, ner: inv_constant=1.0, the paper's choice for ner (mean dev scores" in markdown
    # pos: the paper's 30 was not run, so the dev choice stands, with a warning, and the footnote says so.
    assert float(table["weighted_pretraining", "pos"]["mean"]) == pytest.approx(
        np.mean(written["weighted_pretraining", "pos", 1.0]))
    assert "Weighted pre-training, pos: inv_constant=1.0, chosen by mean dev score" in markdown
    assert "no run with the paper's inv_constant 30" in caplog.text


@pytest.mark.parametrize("value", ["ner", "ner=", "=30", "ner=thirty", "ner=0", "ner=-1", "ner=nan", "ner=inf"])
def test_a_paper_inv_constant_that_is_not_task_equals_a_positive_number_is_refused(tree, tmp_path, capsys, value):
    root, _, _ = tree
    with pytest.raises(SystemExit):
        collect_results.main([root, "--output_dir", str(tmp_path), "--no_plots", "--paper_inv_constant", value])
    assert f"--paper_inv_constant {value!r}: write TASK=K with K > 0, e.g. brown_pos=30" in capsys.readouterr().err
    assert not (tmp_path / "table1.csv").exists()


def test_runs_with_the_original_optimizer_are_their_own_rows(tree, tmp_path):
    root, data_dir, _ = tree
    extra = tmp_path / "tree"
    import shutil

    shutil.copytree(root, extra)
    for seed in SEEDS:
        for paradigm, weighting in (("joint", "fixed"), ("weighted_joint", "tawt")):
            write_run(str(extra / "original"), data_dir, paradigm, "ner", seed, 0.11, 0.5, weighting=weighting,
                      zero_grad_in_place=True, legacy_adamw=True)
    collect_results.main([str(extra), "--output_dir", str(tmp_path / "torch"), "--no_plots"])
    table = {(row["paradigm"], row["main_task"]): row for row in csv.DictReader(open(tmp_path / "torch" / "table1.csv"))}
    assert float(table["joint", "ner"]["mean"]) != pytest.approx(0.11)
    other = list(csv.DictReader(open(tmp_path / "torch" / "other_runs.csv")))
    assert {(row["paradigm"], row["settings"]) for row in other if row["mean"] == "0.11"} == {
        ("joint", "zero_grad_in_place=True legacy_adamw=True"),
        ("weighted_joint", "inv_constant=10.0 zero_grad_in_place=True legacy_adamw=True"),
    }
    collect_results.main([str(extra), "--output_dir", str(tmp_path / "original"), "--no_plots",
                          "--table1_optimizer", "original"])
    table = {(row["paradigm"], row["main_task"]): row
             for row in csv.DictReader(open(tmp_path / "original" / "table1.csv"))}
    assert float(table["joint", "ner"]["mean"]) == pytest.approx(0.11)
    assert ("single_task", "ner") not in table  # only runs trained the original's way


def test_ratio_analysis_and_other_sizes_are_not_in_table_1(collected):
    _, table, other, _ = collected
    assert all(float(row["mean"]) not in (0.61, 0.62) for row in table.values())
    assert {(row["paradigm"], row["auxiliary_main_ratio"], row["main_train_size"], row["mean"]) for row in other} >= {
        ("weighted_normalized_joint", "2", "100", "0.61"), ("single_task", "", "1000", "0.62"),
    }


def test_significance_marks_are_the_method_level_test_over_seeds_after_holm(tree, collected):
    output_dir, table, _, markdown = collected
    comparisons = list(csv.DictReader(open(os.path.join(output_dir, "method_comparisons.csv"))))
    marks = [row for row in comparisons if row["family"] == "table 1 marks"]
    by_method = {(row["method"], row["task"]): row for row in marks}
    # Each compared cell: the paired t-test over seeds on the seeds' own test scores (the results files).
    for paradigm, baseline in (("weighted_joint", "joint"), ("joint_gcs", "joint"), ("joint_olaux", "joint")):
        for task in MAIN_TASKS:
            cell, baseline_cell = table[paradigm, task], table[baseline, task]
            row = by_method[cell["row"], task]
            assert row["baseline"] == baseline_cell["row"]
            scores = {name: tree[2][name, task, None] for name in (paradigm, baseline)}
            differences = 100 * (np.array(scores[paradigm]) - np.array(scores[baseline]))
            assert float(row["mean_difference"]) == pytest.approx(differences.mean())
            assert float(row["p_value"]) == pytest.approx(ttest_rel(scores[paradigm], scores[baseline]).pvalue)
            assert row["seeds_improved"] == f"{int(np.sum(differences > 0))}/2"
            assert float(cell["p_value"]) == pytest.approx(float(row["p_value"]))
    # Holm across the table's marked comparisons; the mark follows the corrected p and the sign.
    from tawt.testing.method_comparison import holm

    assert [float(row["p_holm"]) for row in marks] == pytest.approx(holm([float(row["p_value"]) for row in marks]))
    for row in marks:
        cell = next(cell for cell in table.values() if cell["row"] == row["method"] and cell["main_task"] == row["task"])
        assert cell["significant"] == str(float(row["p_holm"]) < 0.05 and float(row["mean_difference"]) > 0)
    # Fixed-weight rows carry no comparison; TAWT against GCS and OL-AUX is its own family.
    assert table["joint", "ner"]["p_value"] == "" and table["joint", "ner"]["mean_difference"] == ""
    others = {(row["method"], row["baseline"]) for row in comparisons if row["family"] == "table 1 other"}
    assert ("Weighted joint training", "OL-AUX (Lin et al. 2019)") in others
    assert ("Normalized joint training", "Weighted joint training") in others
    assert "| GCS (Du et al. 2018) | " in markdown
    assert "after Holm's correction across the table's" in markdown


def test_task_weight_plots_are_written_for_tawt_runs_only(collected):
    pytest.importorskip("matplotlib")
    output_dir, _, _, _ = collected
    plots = sorted(os.listdir(os.path.join(output_dir, "task_weights")))
    # weighted pre-training (2 inv_constants) and weighted joint, for 2 main tasks and 2 seeds; the weighted
    # normalized joint runs too; the ratio run has no task_weights.json.
    assert len(plots) == 4 * 2 * 2
    assert "weighted_joint__ner__weightingtawt__seed_1.png" in plots
    with open(os.path.join(output_dir, "task_weights", plots[0]), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_two_runs_of_one_configuration_and_seed_are_an_error(tmp_path):
    data_dir = write_task_files(tmp_path / "data", sizes={"train": 2, "dev": 2, "test": 2})
    root = tmp_path / "out"
    first = write_run(str(root / "a"), data_dir, "joint", "ner", 1, 0.5, 0.5)
    write_run(str(root / "b"), data_dir, "joint", "ner", 1, 0.6, 0.6)
    with pytest.raises(SystemExit, match=r"^error: .*seed 1 twice"):
        collect_results.main([str(root), "--no_plots"])
    assert os.path.isdir(first)
    with pytest.raises(OutputTreeError, match="no such directory"):
        collect_results.collect(collect_results.parse_args([str(tmp_path / "missing")]))


def test_results_file_score_follows_its_metric_family(tmp_path):
    from tawt.testing.output_tree import primary_score, read_results_file

    path = tmp_path / "predicate_test_results.txt"
    # A binary task writes both f1 and accuracy; its number is F1.
    path.write_text("precision = 0.5\nf1 = 0.4\naccuracy = 0.9\nloss = 0.1\nmetric_family = binary\n")
    assert primary_score(read_results_file(str(path)), str(path)) == 0.4
    path.write_text("accuracy = 0.9\nmicro_f1 = 0.9\nmacro_f1 = 0.3\n")  # no family line: tagging by its keys
    assert primary_score(read_results_file(str(path)), str(path)) == 0.9
    path.write_text("f1 = 0.4\nbroken line\n")
    with pytest.raises(OutputTreeError, match=r"predicate_test_results.txt line 2: 'broken line' is not"):
        read_results_file(str(path))


def test_single_task_size_series_does_not_outvote_the_multi_task_size(tmp_path):
    data_dir = write_task_files(tmp_path / "data", sizes={"train": 2, "dev": 2, "test": 2})
    root = str(tmp_path / "out")
    for size in (500, 1000, 2000, 4000):
        for seed in SEEDS:
            write_run(root, data_dir, "single_task", "ner", seed, size / 10000, 0.5, main_task_train_sent_num=size)
    write_run(root, data_dir, "joint", "ner", 1, 0.7, 0.5, main_task_train_sent_num=500)
    markdown, _ = collect_results.collect(collect_results.parse_args([root, "--no_plots"]))
    assert "| Single-task | 5.00 ± 0.00 | 5.00 |" in markdown
    markdown, _ = collect_results.collect(collect_results.parse_args([root, "--no_plots", "--main_train_size", "ner=2000"]))
    assert "| Single-task | 20.00 ± 0.00 | 20.00 |" in markdown


def test_significance_mark_compares_the_seeds_both_rows_ran(tmp_path):
    """A row run on fewer seeds than its baseline is marked by the shared seeds, not by the two row means."""
    data_dir = write_task_files(tmp_path / "data", sizes={"train": 4, "dev": 4, "test": 20}, seed=5)
    root = str(tmp_path / "out")
    gold = read_sentences(os.path.join(data_dir, "test_ner.txt"))
    labels = read_labels(data_dir, "ner")
    # Joint seed 1 is poor and seed 2 perfect; weighted joint ran seed 1 only, better than joint's seed 1
    # and below joint's mean over both seeds.
    write_run(root, data_dir, "joint", "ner", 1, 0.5, 0.5, corrupted_labels(gold, labels, 0.6, 1))
    write_run(root, data_dir, "joint", "ner", 2, 1.0, 1.0, [s.labels for s in gold])
    write_run(root, data_dir, "weighted_joint", "ner", 1, 0.7, 0.7, [s.labels for s in gold], weighting="tawt")
    output_dir = str(tmp_path / "summary")
    collect_results.main([root, "--output_dir", output_dir])
    table = {(row["paradigm"], row["main_task"]): row for row in csv.DictReader(open(os.path.join(output_dir, "table1.csv")))}
    weighted = table["weighted_joint", "ner"]
    assert float(weighted["mean"]) < float(table["joint", "ner"]["mean"])
    # One shared seed: its difference, and no test (a single seed has no spread).
    assert float(weighted["mean_difference"]) == pytest.approx(20.0) and weighted["seeds_improved"] == "1/1"
    assert weighted["p_value"] in ("", "nan") and weighted["significant"] == "False"
