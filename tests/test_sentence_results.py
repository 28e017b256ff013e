"""The results tools on sentence-level tasks: archive, Table 1, method comparisons and significance tests of
tiny real runs with a sentence-level target (and a tagging target beside it)."""

import csv
import gzip
import json
import os
import shutil

import numpy as np
import pytest

import run_single_task
import run_weighted_joint
from tawt.testing import archive_results, collect_results, significance_testing
from tests.conftest import write_task_files
from tests.test_sentence_tasks import TAGGING_SOURCES, run_paradigm, write_sentence_tasks
from tests.test_scripts import read_results
from utils_cross_task import read_sentence_examples, read_sentence_predictions

SEEDS = (1, 2)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_model_dir):
    """(output root, data dir) of a tiny grid: joint and weighted joint with the sentence-level target topic,
    two seeds each, and a single-task run of the tagging task ner."""
    data_dir = write_task_files(tmp_path_factory.mktemp("sentence_results_data"))
    write_sentence_tasks(data_dir, sizes={"train": 24, "dev": 8, "test": 16})
    root = tmp_path_factory.mktemp("sentence_results_out")
    for seed in SEEDS:
        for name, flags in (("joint", ["--weighting", "fixed"]),
                            ("weighted_joint", ["--weighting", "tawt", "--weight_update_steps", "3"])):
            run_paradigm(run_weighted_joint, flags + ["--seed", str(seed)], data_dir, tiny_model_dir,
                         root / name / "topic" / f"seed_{seed}", "topic", TAGGING_SOURCES)
    run_paradigm(run_single_task, [], data_dir, tiny_model_dir, root / "single_task" / "ner" / "seed_1", "ner", [])
    return root, data_dir


def predictions(root, paradigm, seed):
    return str(root / paradigm / "topic" / f"seed_{seed}" / "topic_test_predictions.txt")


def test_archive_then_table_and_comparisons_from_the_archive_alone(grid, tmp_path, monkeypatch):
    root, data_dir = grid
    archive = tmp_path / "archive"
    # An archive that already holds some of these runs' files (an earlier, interrupted archive) takes the rest.
    (archive / "joint" / "topic" / "seed_1").mkdir(parents=True)
    shutil.copyfile(root / "joint" / "topic" / "seed_1" / "run_args.json",
                    archive / "joint" / "topic" / "seed_1" / "run_args.json")
    archive_results.main([str(root), str(archive)])
    data = sorted(os.listdir(archive / "data"))
    assert data == ["ner_labels.txt", "test_ner.txt.gz", "test_topic.tsv.gz", "topic_labels.txt"]
    with gzip.open(archive / "data" / "test_topic.tsv.gz", "rt") as handle:
        assert handle.read() == open(os.path.join(data_dir, "test_topic.tsv")).read()

    # With the two-level bootstrap let in at two seeds, it resamples the archived .tsv gold file's examples.
    monkeypatch.setattr(collect_results, "BOOTSTRAP_MIN_SEEDS", 2)
    summary = tmp_path / "summary"
    collect_results.main([str(archive), "--data_dir", str(archive / "data"), "--output_dir", str(summary),
                          "--no_plots", "--samples", "200"])
    table = (summary / "table1.md").read_text()
    header, rule, *rows = table.split("\n\n")[1].splitlines()
    assert header == "| Method | NER | topic | Avg |"
    accuracy = {seed: float(read_results(root / "joint" / "topic" / f"seed_{seed}" / "topic_test_results.txt")
                            ["accuracy"]) for seed in SEEDS}
    joint = next(row for row in rows if row.startswith("| Joint training |"))
    assert joint.split(" | ")[2].startswith(collect_results.format_score(np.mean(list(accuracy.values())),
                                                                          np.std(list(accuracy.values()), ddof=1)))
    assert any(row.startswith("| Single-task |") for row in rows)
    assert "accuracy for tagging tasks, and for the sentence-level task topic, where it is the share" in table

    with open(summary / "method_comparisons.csv", encoding="utf-8") as handle:
        comparisons = list(csv.DictReader(handle))
    [comparison] = [row for row in comparisons if row["method"] == "Weighted joint training"]
    assert (comparison["task"], comparison["baseline"], comparison["seeds"]) == ("topic", "Joint training", "1 2")
    weighted = {seed: float(read_results(root / "weighted_joint" / "topic" / f"seed_{seed}" / "topic_test_results.txt")
                            ["accuracy"]) for seed in SEEDS}
    assert float(comparison["mean_difference"]) == pytest.approx(
        100 * np.mean([weighted[seed] - accuracy[seed] for seed in SEEDS]))
    assert comparison["bootstrap_note"] == "" and 0 < float(comparison["bootstrap_p"]) <= 1


def test_archive_checks_every_gold_file_before_writing(grid, tmp_path):
    root, data_dir = grid
    moved_data = tmp_path / "data"
    shutil.copytree(data_dir, moved_data)
    for split in ("train", "dev", "test"):  # no file left to tell the task is sentence-level: its results do
        os.remove(moved_data / f"{split}_topic.tsv")
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    for path in tree.rglob("run_args.json"):
        record = json.loads(path.read_text())
        record["data_dir"] = record["args"]["data_dir"] = str(moved_data)
        record.pop("training_data", None)
        path.write_text(json.dumps(record))
    archive = tmp_path / "archive"
    with pytest.raises(SystemExit, match=r"test_topic\.tsv: the gold test file of topic is gone"):
        archive_results.main([str(tree), str(archive)])
    assert not archive.exists()


def test_bootstrap_recomputes_the_corpus_metric_of_the_resampled_examples(grid):
    root, data_dir = grid
    gold_path = os.path.join(data_dir, "test_topic.tsv")
    family, baseline = significance_testing.system_counts("topic", gold_path, predictions(root, "joint", 1))
    _, weighted = significance_testing.system_counts("topic", gold_path, predictions(root, "weighted_joint", 1))
    assert family == "classification" and baseline.shape == (16, 7)
    gold, baseline_labels = read_sentence_predictions(predictions(root, "joint", 1))
    _, weighted_labels = read_sentence_predictions(predictions(root, "weighted_joint", 1))
    for metric in ("accuracy", "macro_f1"):
        differences = significance_testing.bootstrap_differences(
            family, baseline, weighted, 6, np.random.default_rng(4), metric=metric)
        drawn = np.random.default_rng(4).integers(0, len(gold), size=(6, len(gold)))  # the same draws
        expected = [by_hand(metric, [gold[i] for i in sample], [weighted_labels[i] for i in sample])
                    - by_hand(metric, [gold[i] for i in sample], [baseline_labels[i] for i in sample])
                    for sample in drawn]
        assert differences == pytest.approx(expected, abs=1e-12)


def by_hand(metric, gold, predicted):
    """Accuracy, or macro F1 over the classes in gold or predictions, of one resampled test set."""
    if metric == "accuracy":
        return np.mean([g == p for g, p in zip(gold, predicted)])
    f1 = []
    for label in set(gold) | set(predicted):
        true_positive = sum(g == p == label for g, p in zip(gold, predicted))
        precision = true_positive / max(predicted.count(label), 1)
        recall = true_positive / max(gold.count(label), 1)
        f1.append(2 * precision * recall / (precision + recall) if true_positive else 0.0)
    return np.mean(f1)


def test_significance_pair_and_batch_on_sentence_level_predictions(grid, tmp_path, capsys):
    root, data_dir = grid
    gold_path = os.path.join(data_dir, "test_topic.tsv")
    scores = {name: read_results(root / name / "topic" / "seed_1" / "topic_test_results.txt")
              for name in ("joint", "weighted_joint")}
    for metric in ("accuracy", "macro_f1"):
        output = tmp_path / f"{metric}.json"
        significance_testing.main(["pair", "--gold", gold_path, "--task", "topic", "--baseline",
                                   predictions(root, "joint", 1), "--weighted", predictions(root, "weighted_joint", 1),
                                   "--samples", "200", "--metric", metric, "--output_json", str(output)])
        result = json.loads(output.read_text())
        assert (result["metric"], result["sentences"]) == (metric, 16)
        assert result["baseline"] == pytest.approx(float(scores["joint"][metric]))
        assert result["weighted"] == pytest.approx(float(scores["weighted_joint"][metric]))
        assert 0 < result["bootstrap_p"] <= 1 and 0 < result["randomization_p"] <= 1
    assert "paired t-test on per-example accuracy (1 or 0" in capsys.readouterr().out

    # The t-test compares the examples' 1-or-0 correctness.
    gold = [example.labels[0] for example in read_sentence_examples(gold_path)]
    right = [np.array(predicted) == np.array(gold)
             for _, predicted in map(read_sentence_predictions, (predictions(root, "joint", 1),
                                                                 predictions(root, "weighted_joint", 1)))]
    assert result["ttest_p"] == pytest.approx(significance_testing.paired_t_test(*right)[1])

    # The predictions of another test file are refused, naming the line.
    shuffled = tmp_path / "shuffled.txt"
    lines = open(predictions(root, "weighted_joint", 1)).read().splitlines(keepends=True)
    shuffled.write_text("".join(lines[1:] + lines[:1]))
    with pytest.raises(SystemExit, match=r"shuffled\.txt line 1: example .* but .*test_topic\.tsv line 1 has"):
        significance_testing.main(["pair", "--gold", gold_path, "--task", "topic", "--baseline",
                                   predictions(root, "joint", 1), "--weighted", str(shuffled)])
    ner_predictions = str(root / "single_task" / "ner" / "seed_1" / "ner_test_predictions.txt")
    with pytest.raises(SystemExit, match=r"--metric macro_f1: this task is scored by f1"):
        significance_testing.main(["pair", "--gold", os.path.join(data_dir, "test_ner.txt"), "--task", "ner",
                                   "--baseline", ner_predictions, "--weighted", ner_predictions, "--metric", "macro_f1"])

    batch = tmp_path / "significance.csv"
    significance_testing.main(["batch", str(root), "--samples", "100", "--output_csv", str(batch)])
    with open(batch, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seed"], row["baseline_paradigm"], row["weighted_paradigm"], row["metric"]) for row in rows] == [
        (str(seed), "joint", "weighted_joint", "accuracy") for seed in SEEDS]
    assert float(rows[0]["weighted"]) == pytest.approx(float(scores["weighted_joint"]["accuracy"]))
