"""Evaluation: predict a task's split, score it (sequence_metrics), write results and predictions.

The files written are those of the README's Outputs section: {task}_{eval|test}_results.txt and
{task}_test_predictions.txt.
"""

import logging

import torch
from tqdm.auto import tqdm

from modeling_multi_bert import dropout_off, token_classification_loss
from output_files import predictions_file, results_file, write_text_atomic
from sequence_metrics import compute_metrics, metric_family
from utils_cross_task import IGNORED_LABEL_ID, collate, prediction_file_text

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
    predicted, so every word gets a label and the output stays aligned with the input file.
    """
    labels = model.task_labels[task]
    predictions = [[default_label(labels)] * len(sentence.words) for sentence in split.sentences]
    order = sorted(range(len(split.features)), key=lambda index: len(split.features[index].input_ids))
    loss_sum, labelled_tokens = 0.0, 0
    with dropout_off(model):
        for start in tqdm(range(0, len(order), batch_size), desc=f"predicting {task} {split.split}", leave=False):
            features = [split.features[index] for index in order[start : start + batch_size]]
            batch = {name: tensor.to(device) for name, tensor in collate(features, pad_token_id).items()}
            with autocast():
                _, logits = model(task, batch["input_ids"], batch["attention_mask"])
            labelled = batch["labels"] != IGNORED_LABEL_ID
            count = int(labelled.sum())
            if count:
                loss_sum += token_classification_loss(logits, batch["labels"]).item() * count
                labelled_tokens += count
            predicted_ids = logits.argmax(dim=-1)[labelled].cpu().tolist()
            # Labelled positions come out row by row, in order: the same order as word_indices.
            position = 0
            for feature in features:
                sentence_predictions = predictions[feature.sentence_index]
                for word_index in feature.word_indices:
                    sentence_predictions[word_index] = labels[predicted_ids[position]]
                    position += 1
    return predictions, (loss_sum / labelled_tokens if labelled_tokens else float("nan"))


def format_results(results):
    return "".join(f"{key} = {value}\n" for key, value in results.items())


def evaluate_and_write(run, model, task, split, split_name):
    """Score `task` on `split`; write {task}_{eval|test}_results.txt, and for test the predictions file."""
    predictions, loss = predict(
        model, task, split, run.args.per_gpu_eval_batch_size, run.device, run.pad_token_id, run.autocast,
    )
    labels = model.task_labels[task]
    gold = [sentence.labels for sentence in split.sentences]
    results = {**compute_metrics(task, labels, gold, predictions), "loss": loss}
    results["metric_family"] = metric_family(task, labels)
    results["sentences"] = len(split.sentences)
    if split.report.split_sentences:
        results["sentences_predicted_in_windows"] = split.report.split_sentences
    write_text_atomic(run.path(results_file(task, split_name)), format_results(results))
    if split_name == "test":
        write_text_atomic(run.path(predictions_file(task)), prediction_file_text(split.path, predictions))
    logger.info("%s %s: %s", task, split_name,
                ", ".join(f"{key} {value:.4f}" for key, value in results.items() if isinstance(value, float)))
    return results
