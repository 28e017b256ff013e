"""The tasks' metrics, on lists of label sequences (one list of labels per sentence).

Four families, chosen per task by `metric_family`:

* ``span`` (chunking, ner, any BIO task): span precision / recall / F1, conlleval-style, by seqeval.
  seqeval is right only here: it scores spans, so it is never used for token-level tasks.
* ``binary`` (predicate, any two-label task with a ``-`` or ``O`` class): F1 of the positive class and
  token accuracy.
* ``tagging`` (pos and everything else): token accuracy, micro F1 and macro F1 over the tags. For
  single-label tagging micro F1 equals accuracy; it is reported because the paper's tables used it.
* ``classification`` (every sentence-level task, one label per example): accuracy and macro F1 over the
  classes, and for two classes the F1 of the positive one (see `classification_positive_label`).

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


def metric_family(task, labels, sentence_level=False):
    """Which family of metrics scores `task`, whose label list is `labels` (`sentence_level`: one label per
    example rather than per word)."""
    if sentence_level:
        return "classification"
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


def check_labels_fit_metric(task, labels, sentence_level=False):
    """Raise ValueError, saying why, when `task`'s metric cannot score the label list `labels`."""
    family = metric_family(task, labels, sentence_level)
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
    return "accuracy" if family in ("tagging", "classification") else "f1"


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


def compute_metrics(task, labels, gold, predicted, sentence_level=False):
    """All metrics of `task`'s family for the sentence lists `gold` and `predicted` (for a sentence-level
    task, one one-label list per example)."""
    family = metric_family(task, labels, sentence_level)
    if family == "classification":
        return classification_metrics(gold, predicted, labels)
    if family == "span":
        return span_metrics(gold, predicted)
    if family == "binary":
        return binary_metrics(gold, predicted, positive_label(labels))
    return tagging_metrics(gold, predicted)


def classification_positive_label(labels):
    """The class whose F1 a two-class sentence-level task reports: the one that is not '-', 'O' or a usual
    name of the negative class, else the second of the label list (0/1, negative/positive)."""
    negatives = [label for label in labels if label.lower() in NEGATIVE_CLASS_NAMES]
    if len(labels) == 2 and len(negatives) == 1:
        return next(label for label in labels if label not in negatives)
    return labels[1]


NEGATIVE_CLASS_NAMES = {"-", "o", "0", "no", "false", "negative", "neg", "not_entailment", "non_entailment"}


def classification_counts(gold, predicted, labels):
    """Per example, the counts accuracy and macro F1 are made of, as a float array (examples, 1 + 3 * C):
    whether it is right, then for each of the C classes of `labels` its true positive, false positive and
    false negative (0 or 1). Summed over any set of examples, `classification_scores` gives their metrics:
    what a paired bootstrap resamples."""
    _check_aligned(gold, predicted)
    gold_flat, predicted_flat = _flatten(gold), _flatten(predicted)
    counts = np.zeros((gold_flat.size, 1 + 3 * len(labels)))
    counts[:, 0] = gold_flat == predicted_flat
    for index, label in enumerate(labels):
        is_gold, is_predicted = gold_flat == label, predicted_flat == label
        counts[:, 1 + 3 * index] = is_gold & is_predicted
        counts[:, 2 + 3 * index] = ~is_gold & is_predicted
        counts[:, 3 + 3 * index] = is_gold & ~is_predicted
    return counts


def classification_accuracy(summed_counts):
    """Accuracy of `classification_counts` summed over examples; leading axes (one row per resample) stay."""
    summed_counts = np.asarray(summed_counts, dtype=np.float64)
    # Every example is a true positive or a false negative of its gold class, once.
    examples = summed_counts[..., 1::3].sum(-1) + summed_counts[..., 3::3].sum(-1)
    return np.where(examples > 0, summed_counts[..., 0] / np.maximum(examples, 1), 0.0)


def classification_macro_f1(summed_counts):
    """Macro F1, over the classes seen in gold or predictions, of `classification_counts` summed over
    examples; leading axes stay. A class's F1 is 2 TP / (2 TP + FP + FN), which equals 2PR / (P + R)."""
    summed_counts = np.asarray(summed_counts, dtype=np.float64)
    true_positive, false_positive, false_negative = (summed_counts[..., start::3] for start in (1, 2, 3))
    seen = (true_positive + false_positive + false_negative) > 0
    class_f1 = np.where(seen, 2 * true_positive / np.maximum(2 * true_positive + false_positive + false_negative, 1), 0)
    classes = seen.sum(-1)
    return np.where(classes > 0, class_f1.sum(-1) / np.maximum(classes, 1), 0.0)


def classification_scores(summed_counts, labels):
    """Accuracy and macro F1 (over the classes seen in gold or predictions) from summed
    `classification_counts`; for two classes also the positive class's precision, recall and F1."""
    summed_counts = np.asarray(summed_counts, dtype=np.float64)
    scores = {"accuracy": float(classification_accuracy(summed_counts)),
              "macro_f1": float(classification_macro_f1(summed_counts))}
    if len(labels) == 2:
        positive = labels.index(classification_positive_label(labels))
        true_positive, false_positive, false_negative = summed_counts[1 + 3 * positive:4 + 3 * positive]
        precision = _safe_ratio(true_positive, true_positive + false_positive)
        recall = _safe_ratio(true_positive, true_positive + false_negative)
        scores.update(precision=precision, recall=recall, f1=_f1(precision, recall))
    return scores


def classification_metrics(gold, predicted, labels):
    """Accuracy and macro F1 of one-label-per-example predictions (and the positive class's F1 for two)."""
    unknown = sorted((set(_flatten(gold).tolist()) | set(_flatten(predicted).tolist())) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in the task's label list")
    return classification_scores(classification_counts(gold, predicted, labels).sum(axis=0), labels)
