"""Are two trained models different on this test set? Three paired significance tests on one test set.

Given the gold test file and two prediction files (the test file with the predicted label in place of the
gold one), this reports each system's metric (the task's, as in `sequence_metrics`) and three paired tests
of the difference `weighted - baseline`, all two-sided. They answer a question about two trained models, one
seed each: the test sentences are their only source of chance. Whether a method beats another is a question
over seeds, which testing/method_comparison.py answers (collect_results.py's marks and method_comparisons.csv).

* **paired t-test** on per-sentence scores (the original's test, the one the paper ran): `scipy.stats.ttest_rel`
  between the two systems' scores of each sentence alone. A mean of sentence scores is not the corpus metric
  (span F1 is not an average over sentences), so the two resampling tests below are the ones on the table's
  metric.
* **paired bootstrap** (Berg-Kirkpatrick et al. 2012; Koehn 2004): resample the test sentences with
  replacement, recompute the corpus-level metric of both systems on each sample, and count the samples
  whose difference strays from the observed one by at least the observed difference itself (the bootstrap
  distribution shifted to the null). Also reports the 95% percentile interval of the difference.
* **approximate randomization** (Noreen 1989; Riezler and Maxwell 2005; Dror et al. 2018): swap the two
  systems' outputs of each sentence with probability 1/2, recompute both corpus-level metrics, and count the
  shuffles whose absolute difference is at least the observed one.

Both resampling tests report (count + 1) / (samples + 1), so an estimated p-value is never 0.

The resampling tests recompute the corpus metric, not a mean of sentence scores: span F1 is not an average
over sentences. To make 10,000 samples cheap, each sentence is reduced once to the counts its metric is made
of (true positives, predicted and gold spans for F1; correct and total tokens for accuracy); a sample's
metric is then the metric of summed counts, one matrix product per batch of samples.

A sentence-level task (gold file test_{task}.tsv, one label per example; its predictions file has one
'gold<TAB>predicted<TAB>text' line per example) is tested the same way with examples in place of sentences:
each example's counts are whether it is right and, per class, its true positive, false positive and false
negative, so a sample's accuracy (summed right / examples) and macro F1 (per-class F1 of summed counts) are
both recomputed exactly; accuracy is the default metric, `--metric macro_f1` the other. Its t-test scores each
example 1 if classified right, else 0.

Per-sentence score (for the t-test): the task's primary metric on the sentence alone, accuracy for tagging
tasks and F1 for span and binary tasks. A sentence with no gold and no predicted span (or, for binary
tasks, no gold and no predicted positive label) scores 1.0: nothing was there to find and nothing was
wrongly found. (Scoring it 0.0, as seqeval's zero_division does and as the original code's tests did, would
not penalise a system that invents a span there, and would count every empty sentence as a failure of both
systems; `--empty_sentence_score 0` gives those tests.) A sentence with gold spans
and no prediction, or with predictions and no gold span, scores 0.0, as F1 does.

Usage:
  python testing/significance_testing.py pair --gold data/test_ner.txt --task ner \\
      --baseline out/joint/ner/seed_1/ner_test_predictions.txt \\
      --weighted out/weighted_joint/ner/seed_1/ner_test_predictions.txt
  python testing/significance_testing.py pair --gold data/test_brown_genre.tsv --task brown_genre --metric macro_f1 \\
      --baseline out/joint/brown_genre/seed_1/brown_genre_test_predictions.txt \\
      --weighted out/weighted_joint/brown_genre/seed_1/brown_genre_test_predictions.txt
  python testing/significance_testing.py batch out/ --output_csv out/significance.csv   # every pair, per seed
"""

import argparse
import json
import logging
import os
import sys
import warnings

import numpy as np

from tawt.run_arguments import HelpFormatter
from tawt.sequence_metrics import (
    classification_accuracy, classification_counts, classification_macro_f1, is_bio_label, metric_family,
    positive_label, primary_metric,
)
from tawt.testing.output_tree import (
    BASELINE_OF, COMPARISONS, OutputTreeError, csv_text, find_runs, write_text_atomic,
)
from utils_cross_task import (
    Sentence, TaskDataError, is_sentence_file, labels_file, read_sentence_examples, read_sentence_prediction_lines,
    read_sentences, read_text_lines,
)

logger = logging.getLogger(__name__)

TESTS = ("ttest", "bootstrap", "randomization")
DEFAULT_SAMPLES = 10000
DEFAULT_SEED = 1
# The metrics the resampling tests recompute, per family: the primary one (what the table reports), and for
# sentence-level tasks also macro F1, which per-class counts give as well.
RESAMPLED_METRICS = {"classification": ("accuracy", "macro_f1")}
# Rows of the sample x sentence matrices built at once: bounds memory at about 8 MB per matrix.
MAX_MATRIX_CELLS = 1_000_000
# Scores are ratios of integer counts, so ties are exact in principle; this absorbs float rounding.
TIE_TOLERANCE = 1e-12


# ---------------------------------------------------------------------------------------------------------
# Reading a gold file and a predictions file that must be aligned with it


def read_aligned_predictions(gold_path, predictions_path):
    """The gold and the predicted sentences, after checking the two files share every word line.

    A predictions file is the gold file with labels replaced, so each word must sit on the same line as in
    the gold file; the first line where that breaks is named in the error. A sentence-level task's (a .tsv
    gold file) is checked example by example instead (`read_aligned_sentence_predictions`).
    """
    if is_sentence_file(gold_path):
        return read_aligned_sentence_predictions(gold_path, predictions_path)
    gold = read_sentences(gold_path)
    predicted = read_sentences(predictions_path)
    gold_words = [(line, word) for sentence in gold for line, word in zip(sentence.line_numbers, sentence.words)]
    predicted_words = [
        (line, word) for sentence in predicted for line, word in zip(sentence.line_numbers, sentence.words)
    ]
    fix = "a predictions file must be the gold test file with only the labels replaced (same words, same blank lines)"
    for (gold_line, gold_word), (predicted_line, predicted_word) in zip(gold_words, predicted_words):
        if predicted_line != gold_line:
            change = "added above it" if predicted_line > gold_line else "missing above it"
            raise TaskDataError(
                f"{predictions_path} line {predicted_line}: word {predicted_word!r} should be on line {gold_line}, "
                f"where {gold_path} has {gold_word!r}; a line is {change}; {fix}"
            )
        if predicted_word != gold_word:
            raise TaskDataError(
                f"{predictions_path} line {predicted_line}: word {predicted_word!r} but {gold_path} line "
                f"{gold_line} has {gold_word!r}; {fix}"
            )
    if len(predicted_words) < len(gold_words):
        raise TaskDataError(
            f"{predictions_path}: ends after {len(predicted_words)} words but {gold_path} goes on at line "
            f"{gold_words[len(predicted_words)][0]}; the predictions file is truncated; {fix}"
        )
    if len(predicted_words) > len(gold_words):
        line, word = predicted_words[len(gold_words)]
        raise TaskDataError(
            f"{predictions_path} line {line}: word {word!r} is past the end of {gold_path}; {fix}"
        )
    # Same word lines and same breaks in between, so the sentences correspond one to one.
    return gold, predicted


def read_aligned_sentence_predictions(gold_path, predictions_path):
    """The gold examples of a sentence-level task and its predictions (one `Sentence` each, its one label the
    predicted one), after checking that the predictions file holds the gold file's examples, in order, with
    their gold labels: the k-th prediction line is the k-th example of the gold file."""
    gold = read_sentence_examples(gold_path)
    lines = read_sentence_prediction_lines(predictions_path)
    fix = ("a sentence-level predictions file has one 'gold<TAB>predicted<TAB>text' line per example of the gold "
           "test file, in its order; give the predictions of a run on this test file")
    for example, (line_number, gold_label, _, texts) in zip(gold, lines):
        if texts != example.words or gold_label != example.labels[0]:
            raise TaskDataError(
                f"{predictions_path} line {line_number}: example {gold_label!r} {texts[0][:40]!r} but {gold_path} line "
                f"{example.line_numbers[0]} has {example.labels[0]!r} {example.words[0][:40]!r}; {fix}"
            )
    if len(lines) != len(gold):
        where = (f"ends after {len(lines)} examples but {gold_path} has {len(gold)}" if len(lines) < len(gold)
                 else f"line {lines[len(gold)][0]}: an example past the {len(gold)} of {gold_path}")
        raise TaskDataError(f"{predictions_path}: {where}; {fix}")
    predicted = [Sentence(texts, [label], [line_number]) for line_number, _, label, texts in lines]
    return gold, predicted


def task_labels(task, gold_path, gold_sentences, labels_path=None):
    """(the task's label list, whether it is complete): `labels_path`, else `{task}_labels.txt` beside the
    gold file (complete), else the labels of the gold file (which may miss a rare one).

    It chooses the family of the metric and the positive class of a binary task, and a prediction outside
    it means the file is not this task's predictions.
    """
    if labels_path and not os.path.isfile(labels_path):
        raise TaskDataError(f"{labels_path}: file not found; pass the task's {{task}}_labels.txt to --labels")
    labels_path = labels_path or labels_file(os.path.dirname(os.path.abspath(gold_path)), task)
    if os.path.isfile(labels_path):
        labels = [line.strip() for line in read_text_lines(labels_path) if line.strip()]
        if not labels:
            raise TaskDataError(f"{labels_path}: holds no label; write one label per line")
        return labels, True
    return sorted({label for sentence in gold_sentences for label in sentence.labels}), False


def check_predicted_labels(task, predictions_path, predicted_sentences, labels, complete, sentence_level=False):
    """Fail on the first predicted label that does not belong to the task (a file of another task).

    Without the task's labels file (`complete` False), a span task's prediction may also be any BIO label
    the gold file happens not to hold (B-X, I-X, ...).
    """
    span = metric_family(task, labels, sentence_level) == "span"
    known = set(labels)
    for sentence in predicted_sentences:
        for label, line_number in zip(sentence.labels, sentence.line_numbers):
            if label in known or (not complete and span and is_bio_label(label)):
                continue
            where = "the task's labels file" if complete else "the gold file"
            raise TaskDataError(
                f"{predictions_path} line {line_number}: label {label!r} is not one of the {len(labels)} labels of "
                f"{where}; is this a {task} predictions file? (--labels names the task's labels file)"
            )


# ---------------------------------------------------------------------------------------------------------
# Per-sentence counts, and metrics of summed counts


def sentence_counts(family, gold, predicted, positive=None, labels=None):
    """Per sentence, the counts the family's corpus metric is made of, as a float array (sentences, k).

    span:    [true positive spans, predicted spans, gold spans] (seqeval's spans, as span_metrics counts them)
    binary:  [true positive tokens, predicted positive tokens, gold positive tokens] of class `positive`
    tagging: [correct tokens, tokens]
    classification (one example a row): [correct, then per class of `labels` its TP, FP and FN]
             (sequence_metrics.classification_counts), which give accuracy and macro F1 alike
    """
    if family == "classification":
        return classification_counts(gold, predicted, labels)
    rows = []
    if family == "span":
        from seqeval.metrics.sequence_labeling import get_entities

        for gold_labels, predicted_labels in zip(gold, predicted):
            gold_spans, predicted_spans = set(get_entities(gold_labels)), set(get_entities(predicted_labels))
            rows.append((len(gold_spans & predicted_spans), len(predicted_spans), len(gold_spans)))
    elif family == "binary":
        for gold_labels, predicted_labels in zip(gold, predicted):
            gold_positive = np.array(gold_labels, dtype=object) == positive
            predicted_positive = np.array(predicted_labels, dtype=object) == positive
            rows.append((np.sum(gold_positive & predicted_positive), np.sum(predicted_positive), np.sum(gold_positive)))
    else:
        for gold_labels, predicted_labels in zip(gold, predicted):
            rows.append((sum(g == p for g, p in zip(gold_labels, predicted_labels)), len(gold_labels)))
    return np.array(rows, dtype=np.float64)


def corpus_scores(family, summed_counts, metric=None):
    """The primary metric (or `metric` of RESAMPLED_METRICS) of counts summed over sentences; `summed_counts`
    is (..., k), the result (...).

    F1 = 2 TP / (predicted + gold), which equals 2PR / (P + R), and is 0 with no span at all, as seqeval's
    zero_division=0 makes it.
    """
    summed_counts = np.asarray(summed_counts, dtype=np.float64)
    if family == "classification":
        return (classification_macro_f1 if metric == "macro_f1" else classification_accuracy)(summed_counts)
    if family == "tagging":
        numerator, denominator = summed_counts[..., 0], summed_counts[..., 1]
    else:
        numerator, denominator = 2 * summed_counts[..., 0], summed_counts[..., 1] + summed_counts[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 0.0)


def per_sentence_scores(family, counts, empty_sentence_score=1.0):
    """Each sentence's score alone; a sentence with nothing to find and nothing found scores
    `empty_sentence_score` (1.0, see above; the original code's tests gave it 0). An example of a
    sentence-level task scores 1 if classified right, else 0."""
    scores = corpus_scores(family, counts)
    if family in ("span", "binary"):
        nothing_there = (counts[:, 1] + counts[:, 2]) == 0
        scores = np.where(nothing_there, empty_sentence_score, scores)
    return scores


# ---------------------------------------------------------------------------------------------------------
# The three tests


def paired_t_test(baseline_scores, weighted_scores):
    """(t, two-sided p) of scipy.stats.ttest_rel(weighted, baseline); identical scores give (0, 1)."""
    from scipy.stats import ttest_rel

    baseline_scores, weighted_scores = np.asarray(baseline_scores), np.asarray(weighted_scores)
    if np.array_equal(baseline_scores, weighted_scores):
        # ttest_rel divides 0 by 0 here; no difference is no evidence of one.
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant nonzero differences: t is infinite, p is 0
        result = ttest_rel(weighted_scores, baseline_scores)
    return float(result.statistic), float(result.pvalue)


def _sample_batches(samples, sentences):
    """Sizes of the batches of samples drawn at once (rows of a samples x sentences matrix)."""
    batch = max(1, MAX_MATRIX_CELLS // max(sentences, 1))
    return [min(batch, samples - start) for start in range(0, samples, batch)]


def bootstrap_differences(family, baseline_counts, weighted_counts, samples, rng, metric=None):
    """`samples` corpus-metric differences weighted - baseline, each on the test sentences drawn with
    replacement (one draw per sample, shared by both systems: the pairing)."""
    both = np.concatenate([baseline_counts, weighted_counts], axis=1)
    width = baseline_counts.shape[1]
    sentences = len(both)
    differences = []
    for batch in _sample_batches(samples, sentences):
        drawn = rng.integers(0, sentences, size=(batch, sentences))
        # How often each sentence was drawn in each sample, from one bincount over all rows.
        offsets = drawn + sentences * np.arange(batch)[:, None]
        times_drawn = np.bincount(offsets.ravel(), minlength=batch * sentences).reshape(batch, sentences)
        summed = times_drawn.astype(np.float64) @ both
        differences.append(corpus_scores(family, summed[:, width:], metric)
                           - corpus_scores(family, summed[:, :width], metric))
    return np.concatenate(differences) if differences else np.empty(0)


def paired_bootstrap(family, baseline_counts, weighted_counts, samples=DEFAULT_SAMPLES, seed=DEFAULT_SEED, metric=None):
    """(two-sided p, (2.5%, 97.5%) interval of weighted - baseline) by resampling sentences with replacement.

    The null hypothesis is tested on the bootstrap distribution shifted to mean 0 (Berg-Kirkpatrick et al.
    2012 count samples whose difference exceeds twice the observed one; this is its two-sided form).
    """
    observed = (corpus_scores(family, weighted_counts.sum(0), metric)
                - corpus_scores(family, baseline_counts.sum(0), metric))
    differences = bootstrap_differences(family, baseline_counts, weighted_counts, samples, np.random.default_rng(seed),
                                        metric)
    as_extreme = np.sum(np.abs(differences - observed) >= abs(observed) - TIE_TOLERANCE)
    interval = tuple(float(value) for value in np.percentile(differences, [2.5, 97.5]))
    return float((as_extreme + 1) / (samples + 1)), interval


def approximate_randomization(family, baseline_counts, weighted_counts, samples=DEFAULT_SAMPLES, seed=DEFAULT_SEED,
                              metric=None):
    """Two-sided p of the difference by swapping the systems' outputs of each sentence with probability 1/2."""
    baseline_total, weighted_total = baseline_counts.sum(0), weighted_counts.sum(0)
    observed = corpus_scores(family, weighted_total, metric) - corpus_scores(family, baseline_total, metric)
    swap_gain = weighted_counts - baseline_counts  # what the baseline gains from a sentence that is swapped
    rng = np.random.default_rng(seed)
    as_extreme = 0
    for batch in _sample_batches(samples, len(swap_gain)):
        swapped = rng.integers(0, 2, size=(batch, len(swap_gain))).astype(np.float64)
        moved = swapped @ swap_gain
        differences = (corpus_scores(family, weighted_total - moved, metric)
                       - corpus_scores(family, baseline_total + moved, metric))
        as_extreme += int(np.sum(np.abs(differences) >= abs(observed) - TIE_TOLERANCE))
    return float((as_extreme + 1) / (samples + 1))


def compare_counts(family, baseline_counts, weighted_counts, tests=TESTS, samples=DEFAULT_SAMPLES, seed=DEFAULT_SEED,
                   empty_sentence_score=1.0, metric=None):
    """Both systems' corpus metrics (the family's primary one, or `metric`) and the requested tests, as a flat
    dict (the report and the CSV row). The t-test's per-sentence scores are the primary metric's."""
    metric = metric or primary_metric(family)
    if metric not in RESAMPLED_METRICS.get(family, (primary_metric(family),)):
        raise TaskDataError(f"--metric {metric}: this task is scored by {primary_metric(family)} ({family} family), "
                            "the one metric its tests recompute; macro_f1 is for sentence-level tasks; leave --metric "
                            "out")
    baseline_score = float(corpus_scores(family, baseline_counts.sum(0), metric))
    weighted_score = float(corpus_scores(family, weighted_counts.sum(0), metric))
    result = {
        "metric": metric,
        "sentences": len(baseline_counts),
        "baseline": baseline_score,
        "weighted": weighted_score,
        "difference": weighted_score - baseline_score,
    }
    if "ttest" in tests:
        baseline_scores = per_sentence_scores(family, baseline_counts, empty_sentence_score)
        weighted_scores = per_sentence_scores(family, weighted_counts, empty_sentence_score)
        result["ttest_statistic"], result["ttest_p"] = paired_t_test(baseline_scores, weighted_scores)
    if "bootstrap" in tests:
        result["bootstrap_p"], (result["bootstrap_low"], result["bootstrap_high"]) = paired_bootstrap(
            family, baseline_counts, weighted_counts, samples, seed, metric
        )
    if "randomization" in tests:
        result["randomization_p"] = approximate_randomization(family, baseline_counts, weighted_counts, samples, seed,
                                                              metric)
    return result


# ---------------------------------------------------------------------------------------------------------
# From files to counts


def system_counts(task, gold_path, predictions_path, labels_path=None):
    """(family, per-sentence counts) of one system's predictions file scored against the gold file."""
    gold, predicted_sentences = read_aligned_predictions(gold_path, predictions_path)
    labels, complete = task_labels(task, gold_path, gold, labels_path)
    sentence_level = is_sentence_file(gold_path)
    check_predicted_labels(task, predictions_path, predicted_sentences, labels, complete, sentence_level)
    predicted = [sentence.labels for sentence in predicted_sentences]
    family = metric_family(task, labels, sentence_level)
    positive = None
    if family == "binary":
        try:
            positive = positive_label(labels)
        except ValueError as error:
            raise TaskDataError(f"{gold_path}: {error}; pass --labels with the task's label file") from None
    return family, sentence_counts(family, [sentence.labels for sentence in gold], predicted, positive, labels)


def compare_files(task, gold_path, baseline_path, weighted_path, labels_path=None, **test_options):
    family, baseline_counts = system_counts(task, gold_path, baseline_path, labels_path)
    _, weighted_counts = system_counts(task, gold_path, weighted_path, labels_path)
    return compare_counts(family, baseline_counts, weighted_counts, **test_options)


def compare_runs(run_pairs, data_dir=None, **test_options):
    """The tests between baseline and weighted runs of the main task, sentences pooled over `run_pairs`.

    Each (baseline, weighted) pair is one seed: its two prediction files are paired sentence by sentence.
    More than one pair puts the pairs' sentences end to end, which tests those trained models together,
    not the method: seed-to-seed variation never enters (testing/method_comparison.py tests over seeds).
    """
    family, baseline_counts, weighted_counts = None, [], []
    for baseline, weighted in run_pairs:
        gold_path = baseline.gold_file(data_dir)
        family, counts = system_counts(baseline.main_task, gold_path, baseline.predictions_file())
        baseline_counts.append(counts)
        weighted_counts.append(system_counts(weighted.main_task, gold_path, weighted.predictions_file())[1])
    return compare_counts(family, np.concatenate(baseline_counts), np.concatenate(weighted_counts), **test_options)


def baseline_pairs(runs):
    """(baseline, tested) for every pair of COMPARISONS with runs of the same data and seed.

    Weighted runs without their BASELINE_OF baseline are logged and left out (a missing TAWT-against-GCS
    or OL-AUX partner is not: most grids run no target-aware baseline); two baselines for one run are an
    error, as the pairing would be a guess.
    """
    runs = [run for run in runs if run.trains]  # an evaluation of a saved model is no run of its own
    baseline_rows = {baseline for _, baseline in COMPARISONS}
    baselines = {}
    for run in runs:
        if run.row in baseline_rows:
            key = (run.row, run.pairing_key)
            if key in baselines:
                raise OutputTreeError(
                    f"{run.directory} and {baselines[key].directory}: two {run.row} runs of the same main "
                    "task, sources, sizes and seed; keep one, or point at a narrower output root"
                )
            baselines[key] = run
    pairs = []
    for run in runs:
        for tested, baseline_row in COMPARISONS:
            if run.row != tested:
                continue
            baseline = baselines.get((baseline_row, run.pairing_key))
            if baseline is not None:
                pairs.append((baseline, run))
            elif BASELINE_OF.get(tested) == baseline_row:
                logger.warning("%s: no %s run of the same data and seed; not tested", run.directory, baseline_row)
    return pairs


# ---------------------------------------------------------------------------------------------------------
# Command line


def format_report(task, result, samples, sentence_level=False):
    unit = "example" if sentence_level else "sentence"
    scored = "accuracy (1 or 0; the original's test)" if sentence_level else f"{result['metric']} (the original's test)"
    lines = [
        f"task {task}: {result['metric']} on {result['sentences']} test {unit}s",
        f"  baseline  {result['metric']} = {result['baseline']:.4f}",
        f"  weighted  {result['metric']} = {result['weighted']:.4f}",
        f"  difference (weighted - baseline) = {result['difference']:+.4f}",
    ]
    if "ttest_p" in result:
        lines.append(
            f"  paired t-test on per-{unit} {scored}: t = {result['ttest_statistic']:.3f}, "
            f"p = {result['ttest_p']:.4g}"
        )
    if "bootstrap_p" in result:
        lines.append(
            f"  paired bootstrap ({samples} samples): p = {result['bootstrap_p']:.4g}, 95% interval of the "
            f"difference [{result['bootstrap_low']:+.4f}, {result['bootstrap_high']:+.4f}]"
        )
    if "randomization_p" in result:
        lines.append(f"  approximate randomization ({samples} shuffles): p = {result['randomization_p']:.4g}")
    return "\n".join(lines)


def run_pair(args, test_options):
    result = compare_files(args.task, args.gold, args.baseline, args.weighted, args.labels, **test_options)
    print(format_report(args.task, result, args.samples, is_sentence_file(args.gold)))
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps({"task": args.task, **result}, indent=2) + "\n")


def run_batch(args, test_options):
    from tqdm import tqdm

    pairs = baseline_pairs(find_runs(args.output_root))
    if not pairs:
        raise OutputTreeError(f"{args.output_root}: no weighted run has a baseline run of the same data and seed")
    rows = []
    for baseline, weighted in tqdm(pairs, desc="pairs", unit="pair"):
        result = compare_runs([(baseline, weighted)], args.data_dir, **test_options)
        rows.append({
            "main_task": weighted.main_task, "seed": weighted.seed, "baseline_paradigm": baseline.row,
            "weighted_paradigm": weighted.row, "inv_constant": weighted.args.get("inv_constant"),
            "auxiliary_main_ratio": weighted.auxiliary_main_ratio, "main_train_size": weighted.main_train_size,
            "optimizer": weighted.optimizer_name, **result,
            "baseline_dir": os.path.relpath(baseline.directory, args.output_root),
            "weighted_dir": os.path.relpath(weighted.directory, args.output_root),
        })
    for row in rows:
        p_values = "  ".join(f"{test} p={row[test + '_p']:.4g}" for test in args.tests)
        print(
            f"{row['weighted_dir']} vs {row['baseline_dir']}: {row['metric']} {row['weighted']:.4f} vs "
            f"{row['baseline']:.4f} ({row['difference']:+.4f})  {p_values}"
        )
    if args.output_csv:
        write_text_atomic(args.output_csv, csv_text(rows))
        print(f"wrote {args.output_csv}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\nUsage:")[0], formatter_class=HelpFormatter,
        epilog="examples:" + __doc__.split("\nUsage:")[1],
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tests", nargs="+", choices=TESTS, default=list(TESTS), help="which tests to run")
    common.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES,
        help="bootstrap samples and randomization shuffles (10,000 is the usual choice)",
    )
    common.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the resampling tests")
    common.add_argument(
        "--metric", choices=("accuracy", "f1", "macro_f1"), default=None,
        help="the corpus metric compared and recomputed by the resampling tests (None: the task's own, the table's: "
        "accuracy for tagging and sentence-level tasks, F1 for span and binary ones); macro_f1 for sentence-level "
        "tasks only",
    )
    common.add_argument(
        "--empty_sentence_score", type=float, default=1.0, choices=(0.0, 1.0),
        help="t-test score of a sentence with no gold and no predicted span (or positive label): 1 (nothing to "
        "find, nothing invented), or 0 as in the original code's tests, which does not penalise a span invented there",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    pair = commands.add_parser(
        "pair", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="test two prediction files of one task against its gold test file",
    )
    pair.add_argument("--gold", required=True,
                      help="the gold test file, e.g. data/test_ner.txt (test_{task}.tsv for a sentence-level task)")
    pair.add_argument("--baseline", required=True, help="the baseline's {task}_test_predictions.txt")
    pair.add_argument("--weighted", required=True, help="the weighted system's {task}_test_predictions.txt")
    pair.add_argument("--task", required=True, help="task name; chooses the metric (see tawt/sequence_metrics.py)")
    pair.add_argument(
        "--labels", default=None,
        help="the task's label file (None: {task}_labels.txt beside --gold, else the gold file's labels); a "
        "predicted label outside it is refused",
    )
    pair.add_argument("--output_json", default=None, help="also write the numbers to this JSON file")

    batch = commands.add_parser(
        "batch", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="test every weighted run of an output tree against its baseline run of the same data and seed",
        description="Finds every run directory (one with run_args.json) below OUTPUT_ROOT and pairs "
        + ", ".join(f"{weighted} with {baseline}" for weighted, baseline in COMPARISONS)
        + " of the same main task, sources, main-task size, auxiliary/main ratio and seed; each weighted "
        "pre-training inv_constant is its own pair. Tests the main task's test predictions of each pair.",
    )
    batch.add_argument("output_root", help="the directory the runs were written below")
    batch.add_argument(
        "--data_dir", default=None,
        help="where test_{task}.txt (or .tsv) are (None: the data_dir each run's run_args.json records)"
    )
    batch.add_argument("--output_csv", default=None, help="also write one row per pair to this CSV file")

    args = parser.parse_args(argv)
    if args.samples < 1 and set(args.tests) & {"bootstrap", "randomization"}:
        parser.error("--samples must be at least 1 for the bootstrap and randomization tests")
    return args


def main(argv=None):
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    args = parse_args(argv)
    test_options = {"tests": tuple(args.tests), "samples": args.samples, "seed": args.seed,
                    "empty_sentence_score": args.empty_sentence_score, "metric": args.metric}
    try:
        if args.command == "pair":
            run_pair(args, test_options)
        else:
            run_batch(args, test_options)
    except (TaskDataError, OutputTreeError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
