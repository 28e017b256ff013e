"""Evaluation: predict a task's split, score it (sequence_metrics), write results and predictions.

The files written are those of docs/outputs.md: {task}_{eval|test}_results.txt and
{task}_test_predictions.txt.
"""

import contextlib
import logging

import torch
from tqdm.auto import tqdm

from modeling_multi_bert import dropout_off, token_classification_loss
from tawt.output_files import predictions_file, results_file, write_text_atomic
from tawt.sequence_metrics import compute_metrics, metric_family
from utils_cross_task import IGNORED_LABEL_ID, prediction_file_text, prefetched, sentence_prediction_file_text

logger = logging.getLogger("tawt")


def default_label(labels):
    """The label given to a word the tokenizer maps to no sub-token (it cannot be predicted)."""
    for candidate in ("O", "-"):
        if candidate in labels:
            return candidate
    return labels[0]


@torch.no_grad()
def predict(model, task, split, batch_size, device, pad_token_id, autocast):
    """Predicted labels for every sentence of `split` (one list per sentence) and the mean loss.

    Features are batched by length so little padding is computed; every window of a long sentence is
    predicted, so every word gets a label and the output stays aligned with the input file. The batches
    are collated ahead on a background thread, and the predictions and losses stay on the device until
    the last batch is queued: the host reads them once, at the end.
    """
    labels = model.task_labels[task]
    # One label per word of a tagging sentence, one per example of a sentence-level task.
    predictions = [[default_label(labels)] * len(sentence.labels) for sentence in split.sentences]
    order = sorted(range(len(split.features)), key=lambda index: len(split.features[index].input_ids))
    batches = [[split.features[index] for index in order[start : start + batch_size]]
               for start in range(0, len(order), batch_size)]
    loss_sums, predicted = [], []
    collated = prefetched(batches, lambda features: model.collate_batch(features, pad_token_id, rows=batch_size),
                          device)
    with dropout_off(model), contextlib.closing(collated) as loaded:
        for batch in tqdm(loaded, total=len(batches), desc=f"predicting {task} {split.split}", leave=False):
            with autocast():
                _, logits = model(task, batch["input_ids"], batch["attention_mask"], token_index=batch.get("token_index"),
                                  token_type_ids=batch.get("token_type_ids"))
            loss_sums.append(token_classification_loss(logits, batch["labels"], reduction="sum"))
            predicted.append(logits.argmax(dim=-1))
    labelled_tokens = sum(label != IGNORED_LABEL_ID for feature in split.features for label in feature.label_ids)
    loss_sum = float(torch.stack(loss_sums).sum()) if loss_sums else 0.0
    for features, predicted_ids in zip(batches, predicted):
        predicted_ids = predicted_ids.cpu()
        for row, feature in enumerate(features):
            labelled = [position for position, label in enumerate(feature.label_ids) if label != IGNORED_LABEL_ID]
            # Labelled positions come in order: the same order as word_indices.
            sentence_predictions = predictions[feature.sentence_index]
            for word_index, label_id in zip(feature.word_indices, predicted_ids[row, labelled].tolist()):
                sentence_predictions[word_index] = labels[label_id]
    return predictions, (loss_sum / labelled_tokens if labelled_tokens else float("nan"))


def format_results(results):
    return "".join(f"{key} = {value}\n" for key, value in results.items())


def split_results(model, task, split, predictions, loss):
    """The metrics of `task`'s family for `predictions` of `split`, the mean loss and the sentence counts."""
    labels = model.task_labels[task]
    gold = [sentence.labels for sentence in split.sentences]
    sentence_level = task in model.sentence_tasks
    results = {**compute_metrics(task, labels, gold, predictions, sentence_level), "loss": loss}
    results["metric_family"] = metric_family(task, labels, sentence_level)
    results["sentences"] = len(split.sentences)
    if split.report.split_sentences:
        results["sentences_predicted_in_windows"] = split.report.split_sentences
    return results


def score(run, model, task, split):
    """(results, predictions) of the model on `task`'s `split` (see `split_results`)."""
    predictions, loss = predict(
        model, task, split, run.args.per_gpu_eval_batch_size, run.device, run.pad_token_id, run.autocast,
    )
    return split_results(model, task, split, predictions, loss), predictions


def evaluate_and_write(run, model, task, split, split_name):
    """Score `task` on `split`; write {task}_{eval|test}_results.txt, and for test the predictions file."""
    results, predictions = score(run, model, task, split)
    write_text_atomic(run.path(results_file(task, split_name)), format_results(results))
    if split_name == "test":
        sentence_level = task in model.sentence_tasks
        text = (sentence_prediction_file_text(split.sentences, predictions) if sentence_level
                else prediction_file_text(split.path, predictions))
        write_text_atomic(run.path(predictions_file(task)), text)
    logger.info("%s %s: %s", task, split_name,
                ", ".join(f"{key} {value:.4f}" for key, value in results.items() if isinstance(value, float)))
    return results
