"""testing/significance_testing.py: counts-based metrics, the three paired tests, file checks and the CLI."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy.stats import ttest_rel

from tests.conftest import corrupted_labels, sentence_scores_by_hand, write_task_files
from tawt.sequence_metrics import compute_metrics, metric_family, primary_metric
from tawt.testing import significance_testing as significance
from utils_cross_task import TaskDataError, prediction_file_text, read_labels, read_sentences


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("data"), sizes={"train": 4, "dev": 4, "test": 30}, seed=3)


def write_predictions(directory, gold_path, predicted, name):
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write(prediction_file_text(gold_path, predicted))
    return path


@pytest.mark.parametrize("task", ["ner", "chunking", "predicate", "pos"])
def test_metric_of_summed_counts_equals_compute_metrics_on_any_resample(data_dir, task):
    # The resampling tests rest on this: a sample's metric is the metric of its sentences' summed counts.
    gold = read_sentences(os.path.join(data_dir, f"test_{task}.txt"))
    labels = read_labels(data_dir, task)
    family = metric_family(task, labels)
    predicted = corrupted_labels(gold, labels, 0.3, seed=0)
    positive = "predicate" if family == "binary" else None
    counts = significance.sentence_counts(family, [s.labels for s in gold], predicted, positive)
    rng = np.random.default_rng(1)
    for _ in range(5):
        sample = rng.integers(0, len(gold), size=len(gold))
        expected = compute_metrics(
            task, labels, [gold[i].labels for i in sample], [predicted[i] for i in sample]
        )[primary_metric(family)]
        assert significance.corpus_scores(family, counts[sample].sum(0)) == pytest.approx(expected, abs=1e-12)


def test_per_sentence_f1_is_one_for_a_sentence_with_nothing_to_find_and_nothing_found():
    gold = [["B-PER", "O"], ["O", "O"], ["O", "O"], ["B-PER", "I-PER"]]
    predicted = [["B-PER", "O"], ["O", "O"], ["B-LOC", "O"], ["O", "O"]]
    counts = significance.sentence_counts("span", gold, predicted)
    scores = significance.per_sentence_scores("span", counts)
    # Sentence 2 has no span either side: 1.0 (seqeval's zero_division would give 0.0).
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0]
    reference = sentence_scores_by_hand("ner", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], gold, predicted)
    assert scores.tolist() == reference.tolist()


def test_empty_sentence_score_zero_gives_the_original_codes_t_test(tmp_path):
    # Sentences 2-4 have no gold entity; the weighted system invents one in sentence 3 only.
    gold = [["B-PER", "O"], ["O", "O"], ["O", "O"], ["O", "O"]]
    baseline = [["O", "O"], ["O", "O"], ["O", "O"], ["O", "O"]]
    weighted = [["B-PER", "O"], ["O", "O"], ["B-LOC", "O"], ["O", "O"]]
    paths = {}
    for name, sentences in (("gold", gold), ("baseline", baseline), ("weighted", weighted)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("\n\n".join("\n".join(f"w{i} {label}" for i, label in enumerate(sentence))
                                           for sentence in sentences) + "\n")
    results = {}
    for score in ("1", "0"):
        output = tmp_path / f"empty_{score}.json"
        significance.main(["pair", "--gold", str(paths["gold"]), "--task", "ner", "--baseline", str(paths["baseline"]),
                           "--weighted", str(paths["weighted"]), "--tests", "ttest", "--empty_sentence_score", score,
                           "--output_json", str(output)])
        results[score] = json.loads(output.read_text())
    # Scored 1, the invented span costs the weighted system sentence 3: per-sentence differences (1, 0, -1, 0).
    assert results["1"]["ttest_statistic"] == pytest.approx(0.0)
    # Scored 0 (the original's), empty sentences are 0 for both, the invented span goes unnoticed: (1, 0, 0, 0).
    expected = ttest_rel([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert results["0"]["ttest_statistic"] == pytest.approx(expected.statistic)
    assert results["0"]["ttest_p"] == pytest.approx(expected.pvalue)


def test_t_test_is_scipys_ttest_rel_on_per_sentence_scores(data_dir):
    gold_path = os.path.join(data_dir, "test_chunking.txt")
    gold = read_sentences(gold_path)
    labels = read_labels(data_dir, "chunking")
    baseline = corrupted_labels(gold, labels, 0.4, seed=2)
    weighted = corrupted_labels(gold, labels, 0.2, seed=3)
    gold_labels = [s.labels for s in gold]
    result = significance.compare_counts(
        "span", significance.sentence_counts("span", gold_labels, baseline),
        significance.sentence_counts("span", gold_labels, weighted), tests=("ttest",),
    )
    baseline_scores = sentence_scores_by_hand("chunking", labels, gold_labels, baseline)
    weighted_scores = sentence_scores_by_hand("chunking", labels, gold_labels, weighted)
    # Every test sentence of the tiny language has a chunk, so the 0/0 rule does not apply here.
    expected = ttest_rel(weighted_scores, baseline_scores)
    assert result["ttest_statistic"] == pytest.approx(expected.statistic)
    assert result["ttest_p"] == pytest.approx(expected.pvalue)


def test_t_test_known_answer():
    # Differences 1, 2, 3: t = mean / (sd / sqrt(n)) = 2 / (1 / sqrt(3)); with 2 degrees of freedom the
    # two-sided p has the closed form 1 - t / sqrt(2 + t^2).
    t, p = significance.paired_t_test([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert t == pytest.approx(2 * math.sqrt(3))
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert significance.paired_t_test([0.5, 0.2], [0.5, 0.2]) == (0.0, 1.0)


def test_randomization_known_answer_matches_exact_permutation_p():
    # Ten one-token sentences, the weighted system right on all, the baseline wrong on all. Only the two
    # assignments that swap none or all sentences give |difference| = 1, so the exact p is 2 / 2^10.
    baseline = np.array([[0.0, 1.0]] * 10)
    weighted = np.array([[1.0, 1.0]] * 10)
    p = significance.approximate_randomization("tagging", baseline, weighted, samples=20000, seed=0)
    assert p == pytest.approx(2 / 1024, abs=0.0008)
    # Same seed, same answer; identical systems are never different.
    assert p == significance.approximate_randomization("tagging", baseline, weighted, samples=20000, seed=0)
    assert significance.approximate_randomization("tagging", baseline, baseline, samples=500) == 1.0


def test_bootstrap_known_answers():
    counts = np.array([[3.0, 5.0, 4.0], [0.0, 1.0, 2.0], [2.0, 2.0, 2.0]])
    p, interval = significance.paired_bootstrap("span", counts, counts, samples=300)
    assert (p, interval) == (1.0, (0.0, 0.0))
    # Each sentence gains exactly one correct token of two: every resample's difference is 0.5, none is
    # as far from the observed 0.5 as 0.5 is from 0, so only the +1 remains.
    baseline = np.array([[0.0, 2.0]] * 6)
    weighted = np.array([[1.0, 2.0]] * 6)
    p, interval = significance.paired_bootstrap("tagging", baseline, weighted, samples=999, seed=4)
    assert p == pytest.approx(1 / 1000)
    assert interval == pytest.approx((0.5, 0.5))


def test_bootstrap_interval_covers_the_observed_difference_and_p_is_small_for_a_real_gain(data_dir):
    gold_path = os.path.join(data_dir, "test_pos.txt")
    gold = read_sentences(gold_path)
    labels = read_labels(data_dir, "pos")
    gold_labels = [s.labels for s in gold]
    baseline = significance.sentence_counts("tagging", gold_labels, corrupted_labels(gold, labels, 0.5, seed=5))
    weighted = significance.sentence_counts("tagging", gold_labels, corrupted_labels(gold, labels, 0.05, seed=6))
    result = significance.compare_counts("tagging", baseline, weighted, samples=2000, seed=0)
    assert result["bootstrap_low"] <= result["difference"] <= result["bootstrap_high"]
    assert result["bootstrap_p"] < 0.01 and result["randomization_p"] < 0.01 and result["ttest_p"] < 0.01


def test_misaligned_predictions_name_the_line(data_dir, tmp_path):
    gold_path = os.path.join(data_dir, "test_ner.txt")
    lines = open(gold_path).read().splitlines()
    # Line 3 is the first word line (line 1 is -DOCSTART-, line 2 blank).
    changed = lines[:2] + ["zebra " + lines[2].split()[-1]] + lines[3:]
    path = tmp_path / "changed.txt"
    path.write_text("\n".join(changed) + "\n")
    with pytest.raises(TaskDataError, match=r"changed.txt line 3: word 'zebra' but .*test_ner.txt line 3"):
        significance.read_aligned_predictions(gold_path, str(path))
    added = lines[:2] + [""] + lines[2:]  # a blank line added: every word moves down one line
    path = tmp_path / "added.txt"
    path.write_text("\n".join(added) + "\n")
    with pytest.raises(TaskDataError, match=r"added.txt line 4: word .* should be on line 3, .* line is added above"):
        significance.read_aligned_predictions(gold_path, str(path))
    path = tmp_path / "short.txt"
    path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(TaskDataError, match=r"short.txt: ends after .* goes on at line"):
        significance.read_aligned_predictions(gold_path, str(path))


def test_pair_command_reports_each_systems_metric(data_dir, tmp_path, capsys):
    gold_path = os.path.join(data_dir, "test_predicate.txt")
    gold = read_sentences(gold_path)
    labels = read_labels(data_dir, "predicate")
    baseline = corrupted_labels(gold, labels, 0.3, seed=7)
    baseline_path = write_predictions(tmp_path, gold_path, baseline, "baseline.txt")
    weighted_path = write_predictions(tmp_path, gold_path, [s.labels for s in gold], "weighted.txt")
    output = tmp_path / "result.json"
    significance.main([
        "pair", "--gold", gold_path, "--task", "predicate", "--baseline", baseline_path,
        "--weighted", weighted_path, "--samples", "200", "--output_json", str(output),
    ])
    result = json.loads(output.read_text())
    expected = compute_metrics("predicate", labels, [s.labels for s in gold], baseline)["f1"]
    assert result["baseline"] == pytest.approx(expected) and result["weighted"] == 1.0
    assert {"ttest_p", "bootstrap_p", "randomization_p"} <= set(result)
    assert "approximate randomization (200 shuffles)" in capsys.readouterr().out


def test_pair_command_fails_in_one_line_on_bad_input(data_dir, tmp_path):
    gold_path = os.path.join(data_dir, "test_pos.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("dog NN\n")
    with pytest.raises(SystemExit, match=r"^error: .*bad.txt line 1: word 'dog' should be on line 3, .* is missing above it"):
        significance.main(["pair", "--gold", gold_path, "--task", "pos", "--baseline", str(bad), "--weighted", str(bad)])


def write_run(root, paradigm, main_task, seed, data_dir, predicted, **args):
    """A run directory as the training scripts leave it, with only what significance testing reads."""
    directory = os.path.join(root, paradigm, main_task, f"seed_{seed}_{args.get('inv_constant', '')}")
    os.makedirs(directory)
    tasks = ["pos", "chunking", "ner"] if paradigm != "single_task" else [main_task]
    run_args = {"paradigm": paradigm, "main_task": main_task, "tasks": tasks, "seed": seed, "args": {
        "data_dir": data_dir, "main_task_train_sent_num": 100, "auxiliary_main_ratio": None, **args,
    }}
    with open(os.path.join(directory, "run_args.json"), "w") as handle:
        json.dump(run_args, handle)
    gold_path = os.path.join(data_dir, f"test_{main_task}.txt")
    write_predictions(directory, gold_path, predicted, f"{main_task}_test_predictions.txt")
    return directory


@pytest.mark.parametrize("with_labels_file", [True, False])
def test_pair_refuses_predictions_of_another_task(data_dir, tmp_path, with_labels_file):
    """pos predictions passed as ner predictions share every word: their labels give them away."""
    gold_path = os.path.join(data_dir, "test_ner.txt")
    if not with_labels_file:  # the gold file's labels are the label set
        gold_path = str(tmp_path / "test_ner.txt")
        with open(os.path.join(data_dir, "test_ner.txt")) as source, open(gold_path, "w") as target:
            target.write(source.read())
    pos_predictions = os.path.join(data_dir, "test_pos.txt")
    source = "the task's labels file" if with_labels_file else "the gold file"
    with pytest.raises(SystemExit, match=rf"test_pos.txt line \d+: label '\S+' is not one of the \d+ labels of "
                                         rf"{source}; is this a ner predictions file"):
        significance.main(["pair", "--gold", gold_path, "--task", "ner", "--baseline", gold_path,
                           "--weighted", pos_predictions, "--samples", "10"])


def test_batch_tests_every_weighted_run_against_its_baseline_of_the_same_seed(data_dir, tmp_path):
    gold = read_sentences(os.path.join(data_dir, "test_ner.txt"))
    labels = read_labels(data_dir, "ner")
    root = str(tmp_path / "out")
    for seed in (1, 2):
        write_run(root, "pretraining", "ner", seed, data_dir, corrupted_labels(gold, labels, 0.3, seed))
        for inv_constant in (1.0, 10.0):
            write_run(root, "weighted_pretraining", "ner", seed, data_dir,
                      corrupted_labels(gold, labels, 0.1, int(seed + 10 * inv_constant)), inv_constant=inv_constant)
    # A weighted joint run without its joint baseline is left out, not an error.
    write_run(root, "weighted_joint", "ner", 1, data_dir, corrupted_labels(gold, labels, 0.1, 99))
    output = tmp_path / "significance.csv"
    significance.main(["batch", root, "--samples", "100", "--output_csv", str(output)])
    rows = list(csv.DictReader(open(output)))
    assert sorted((row["seed"], row["inv_constant"]) for row in rows) == [
        ("1", "1.0"), ("1", "10.0"), ("2", "1.0"), ("2", "10.0")
    ]
    for row in rows:
        expected = significance.compare_files(
            "ner", os.path.join(data_dir, "test_ner.txt"),
            os.path.join(root, row["baseline_dir"], "ner_test_predictions.txt"),
            os.path.join(root, row["weighted_dir"], "ner_test_predictions.txt"), samples=100,
        )
        assert row["baseline_paradigm"] == "pretraining" and row["baseline_dir"].endswith(f"seed_{row['seed']}_")
        assert float(row["ttest_p"]) == pytest.approx(expected["ttest_p"])
        assert float(row["weighted"]) == pytest.approx(expected["weighted"])


def test_batch_tests_the_target_aware_baselines_against_joint_and_tawt_against_them(data_dir, tmp_path):
    gold = read_sentences(os.path.join(data_dir, "test_ner.txt"))
    labels = read_labels(data_dir, "ner")
    root = str(tmp_path / "out")
    error_rates = {"joint": 0.3, "weighted_joint": 0.1, "joint_gcs": 0.2, "joint_gcs_weighted": 0.25, "joint_olaux": 0.3}
    for position, (paradigm, rate) in enumerate(error_rates.items()):
        write_run(root, paradigm, "ner", 1, data_dir, corrupted_labels(gold, labels, rate, position))
    output = tmp_path / "significance.csv"
    significance.main(["batch", root, "--samples", "100", "--output_csv", str(output)])
    pairs = {(row["baseline_paradigm"], row["weighted_paradigm"]): row for row in csv.DictReader(open(output))}
    # GCS runs that record no gcs_variant were made with the gated update: rows of their own.
    baselines = ("joint_gcs_gated", "joint_gcs_weighted_gated", "joint_olaux")
    assert set(pairs) == ({("joint", "weighted_joint")} | {("joint", method) for method in baselines}
                          | {(method, "weighted_joint") for method in baselines})
    # TAWT (weighted joint) against GCS: the difference is TAWT's score minus GCS's.
    tawt_against_gcs = pairs["joint_gcs_gated", "weighted_joint"]
    assert float(tawt_against_gcs["difference"]) == pytest.approx(
        float(pairs["joint", "weighted_joint"]["weighted"]) - float(pairs["joint", "joint_gcs_gated"]["weighted"]))
    assert float(tawt_against_gcs["difference"]) > 0
