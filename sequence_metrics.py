"""The tasks' metrics, on lists of label sequences (one list of labels per sentence).

Three families, chosen per task by `metric_family`:

* ``span`` (chunking, ner, any BIO task): span precision / recall / F1, conlleval-style, by seqeval.
  seqeval is right only here: it scores spans, so it is never used for token-level tasks.
* ``binary`` (predicate, any two-label task with a ``-`` or ``O`` class): F1 of the positive class and
  token accuracy.
* ``tagging`` (pos and everything else): token accuracy, micro F1 and macro F1 over the tags. For
  single-label tagging micro F1 equals accuracy; it is reported because the paper's tables used it.

The headline number of each family (what the paper's tables report) is `primary_metric(family)`.
"""

import re
import warnings

import numpy as np

SPAN_TASKS = {"chunking", "ner"}
BINARY_TASKS = {"predicate"}
NEGATIVE_LABELS = ("-", "O")
_BIO_LABEL = re.compile(r"^(O|[BIES]-.+)$")


def is_bio_label(label):
    """O, or a tag with a B-, I-, E- or S- prefix."""
    return bool(_BIO_LABEL.match(label))


def metric_family(task, labels):
    """Which family of metrics scores `task`, whose label list is `labels`."""
    if task in SPAN_TASKS:
        return "span"
    if task in BINARY_TASKS:
        return "binary"
    if labels and all(is_bio_label(label) for label in labels) and any(
        label.startswith("B-") for label in labels
    ):
        return "span"
    if len(labels) == 2 and any(label in NEGATIVE_LABELS for label in labels):
        return "binary"
    return "tagging"


def positive_label(labels):
    """The class whose F1 a binary task reports: the label that is not `-`/`O` (`predicate`)."""
    positives = [label for label in labels if label not in NEGATIVE_LABELS]
    if len(positives) != 1:
        raise ValueError(f"a binary task needs exactly one label besides '-' or 'O', got {labels}")
    return positives[0]


def check_labels_fit_metric(task, labels):
    """Raise ValueError, saying why, when `task`'s metric cannot score the label list `labels`."""
    family = metric_family(task, labels)
    if family == "span":
        not_bio = [label for label in labels if not is_bio_label(label)]
        if not_bio:
            raise ValueError(
                f"task {task} is scored by span F1, which needs BIO labels (O, B-X, I-X), but {not_bio[:5]} are not"
            )
    elif family == "binary":
        positive_label(labels)


def primary_metric(family):
    """The key of the number the paper reports for a family."""
    return "accuracy" if family == "tagging" else "f1"


def _safe_ratio(numerator, denominator):
    return float(numerator) / float(denominator) if denominator else 0.0


def _f1(precision, recall):
    return _safe_ratio(2 * precision * recall, precision + recall)


def _flatten(sequences):
    return np.array([label for sequence in sequences for label in sequence], dtype=object)


def _check_aligned(gold, predicted):
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
    for index, (gold_sentence, predicted_sentence) in enumerate(zip(gold, predicted)):
        if len(gold_sentence) != len(predicted_sentence):
            raise ValueError(
                f"sentence {index}: {len(gold_sentence)} gold labels but {len(predicted_sentence)} predicted"
            )


def span_metrics(gold, predicted):
    """Span precision, recall and F1 (seqeval's default, conlleval-compatible, mode)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    _check_aligned(gold, predicted)
    with warnings.catch_warnings():
        # seqeval warns when a sentence set has no spans at all; 0.0 is the right score then.
        warnings.simplefilter("ignore")
        return {
            "precision": float(precision_score(gold, predicted, zero_division=0)),
            "recall": float(recall_score(gold, predicted, zero_division=0)),
            "f1": float(f1_score(gold, predicted, zero_division=0)),
        }


def binary_metrics(gold, predicted, positive):
    """F1 (with precision and recall) of the `positive` class, and token accuracy."""
    _check_aligned(gold, predicted)
    gold_flat, predicted_flat = _flatten(gold), _flatten(predicted)
    true_positive = np.sum((gold_flat == positive) & (predicted_flat == positive))
    precision = _safe_ratio(true_positive, np.sum(predicted_flat == positive))
    recall = _safe_ratio(true_positive, np.sum(gold_flat == positive))
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "accuracy": _safe_ratio(np.sum(gold_flat == predicted_flat), gold_flat.size),
    }


def tagging_metrics(gold, predicted):
    """Token accuracy, micro F1 and macro F1 over the tags seen in gold or predictions."""
    _check_aligned(gold, predicted)
    gold_flat, predicted_flat = _flatten(gold), _flatten(predicted)
    correct = gold_flat == predicted_flat
    per_tag_f1 = []
    for tag in sorted(set(gold_flat.tolist()) | set(predicted_flat.tolist())):
        true_positive = np.sum(correct & (gold_flat == tag))
        precision = _safe_ratio(true_positive, np.sum(predicted_flat == tag))
        recall = _safe_ratio(true_positive, np.sum(gold_flat == tag))
        per_tag_f1.append(_f1(precision, recall))
    # Every token has exactly one gold and one predicted tag, so micro precision = micro recall = accuracy.
    accuracy = _safe_ratio(np.sum(correct), gold_flat.size)
    return {
        "accuracy": accuracy,
        "micro_f1": accuracy,
        "macro_f1": float(np.mean(per_tag_f1)) if per_tag_f1 else 0.0,
    }


def compute_metrics(task, labels, gold, predicted):
    """All metrics of `task`'s family for the sentence lists `gold` and `predicted`."""
    family = metric_family(task, labels)
    if family == "span":
        return span_metrics(gold, predicted)
    if family == "binary":
        return binary_metrics(gold, predicted, positive_label(labels))
    return tagging_metrics(gold, predicted)
