"""Each metric family against values computed by hand."""

import pytest

from tawt.sequence_metrics import compute_metrics, metric_family
from tawt.testing.significance_testing import per_sentence_scores, sentence_counts


def test_families():
    assert metric_family("ner", ["O", "B-PER"]) == "span"
    assert metric_family("chunking", ["B-NP", "I-NP", "O"]) == "span"
    assert metric_family("pos", ["NN", "VB"]) == "tagging"
    assert metric_family("predicate", ["-", "predicate"]) == "binary"
    assert metric_family("my_entities", ["O", "B-X", "I-X"]) == "span"
    assert metric_family("brown_pos", ["NN", "VB", "O"]) == "tagging"  # no B- label: not spans
    assert metric_family("is_verb", ["O", "VERB"]) == "binary"


def test_span_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-PER"], ["B-ORG", "O"]]
    # gold spans: PER(0-1), LOC(3), ORG; predicted: PER(0-1), PER(3), ORG -> 2 correct of 3 and 3
    metrics = compute_metrics("ner", ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"], gold, predicted)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)


def test_span_boundaries_matter():
    metrics = compute_metrics("chunking", ["B-NP", "I-NP", "O"], [["B-NP", "I-NP"]], [["B-NP", "B-NP"]])
    assert metrics["f1"] == 0.0


def test_tagging_accuracy_micro_and_macro_f1_by_hand():
    gold = [["NN", "VB", "NN"], ["DT"]]
    predicted = [["NN", "NN", "NN"], ["DT"]]
    metrics = compute_metrics("pos", ["NN", "VB", "DT"], gold, predicted)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["micro_f1"] == pytest.approx(3 / 4)
    # NN: p 2/3 r 1 -> f1 0.8; VB: 0; DT: 1
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0 + 1) / 3)


def test_binary_f1_and_accuracy_by_hand():
    gold = [["-", "predicate", "-", "predicate"]]
    predicted = [["predicate", "predicate", "-", "-"]]
    metrics = compute_metrics("predicate", ["-", "predicate"], gold, predicted)
    assert metrics["precision"] == pytest.approx(0.5)
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(0.5)


def sentence_scores(family, gold, predicted, positive=None):
    return per_sentence_scores(family, sentence_counts(family, gold, predicted, positive))


def test_sentence_scores_use_the_primary_metric():
    scores = sentence_scores("tagging", [["A", "B"], ["A", "A"]], [["A", "B"], ["B", "A"]])
    assert scores.tolist() == [1.0, 0.5]


def test_sentence_with_nothing_to_find_scores_one():
    scores = sentence_scores("span", [["O", "O"], ["O", "O"], ["B-PER", "O"]],
                             [["O", "O"], ["B-PER", "O"], ["O", "O"]])
    assert scores.tolist() == [1.0, 0.0, 0.0]
    binary = sentence_scores("binary", [["-"], ["predicate"]], [["-"], ["-"]], positive="predicate")
    assert binary.tolist() == [1.0, 0.0]


def test_misaligned_sequences_are_rejected():
    with pytest.raises(ValueError, match="sentence 0"):
        compute_metrics("pos", ["A"], [["A", "A"]], [["A"]])
