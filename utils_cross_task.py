"""Task data: reading CoNLL-style task files and label lists, tokenisation, one-task batches.

A data directory holds, for each task, ``{train,dev,test}_{task}.txt`` (one word per line, the word first
and the label last, space- or tab-separated, a blank line between sentences, ``-DOCSTART-`` lines
ignored) and ``{task}_labels.txt`` (one label per line). Task names are free strings.
"""

import gzip
import logging
import os
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from errors import TaskDataError

logger = logging.getLogger(__name__)

# Label id of positions the loss ignores: sub-tokens after a word's first one, special tokens, padding.
# It is CrossEntropyLoss's default ignore_index.
IGNORED_LABEL_ID = -100
DOCSTART = "-DOCSTART-"
UTF8_BOM = b"\xef\xbb\xbf"
COLUMN_SEPARATOR = re.compile(r"[ \t]+")


@dataclass
class Sentence:
    words: list
    labels: list
    line_numbers: list = field(default_factory=list)  # 1-based line of each word in its file


def task_file(data_dir, split, task):
    return os.path.join(data_dir, f"{split}_{task}.txt")


def labels_file(data_dir, task):
    return os.path.join(data_dir, f"{task}_labels.txt")


def task_files_hint(path):
    """What to check when a task file is missing: the task files its directory does hold."""
    directory = os.path.dirname(path) or "."
    present = sorted(name for name in os.listdir(directory) if name.endswith(".txt")) if os.path.isdir(directory) else []
    shown = ", ".join(present[:12]) + (", ..." if len(present) > 12 else "")
    return (f"check --data_dir and the task name ({directory} holds {shown})" if present
            else f"check --data_dir ({directory} holds no .txt file)")


def read_text_lines(path, missing_hint=None):
    """The file's lines without line ends, decoded as UTF-8; an undecodable byte is reported with its line.

    A file may be stored gzip-compressed, as PATH.gz: archived results keep their test and prediction files so.
    A byte-order mark at the start of the file (some Windows editors write one) is dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path) and os.path.isfile(path + ".gz"):
        path += ".gz"
    if os.path.islink(path) and not os.path.exists(path):  # the listing of its directory would show it
        raise TaskDataError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; point it at "
                            "the file, or copy the file there")
    if os.path.isdir(path):
        raise TaskDataError(f"{path}: a directory, not a task file; {missing_hint or task_files_hint(path)}")
    if not os.path.isfile(path):
        raise TaskDataError(f"{path}: file not found; {missing_hint or task_files_hint(path)}")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as handle:
        raw_lines = handle.read().removeprefix(UTF8_BOM).splitlines()
    lines = []
    for line_number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TaskDataError(
                f"{path} line {line_number}: byte {raw[error.start]:#04x} is not UTF-8; "
                "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
    return lines


def split_columns(line):
    """A task-file line's columns, split at spaces and tabs only.

    A word may hold other Unicode spaces (a non-breaking space in "10\u00a0000"): str.split() would cut
    it in two, and the prediction file would no longer match the test file.
    """
    stripped = line.strip(" \t\r\n")
    return COLUMN_SEPARATOR.split(stripped) if stripped else []


def is_sentence_break(line):
    """True for the lines that separate sentences and carry no word: blank lines and -DOCSTART-."""
    columns = split_columns(line)
    return not columns or columns[0] == DOCSTART


def read_sentences(path, max_sentences=None):
    """Read a task file into `Sentence`s (at most `max_sentences`, the file's first ones)."""
    sentences = []
    words, labels, line_numbers = [], [], []
    for line_number, line in enumerate(read_text_lines(path), start=1):
        if is_sentence_break(line):
            if words:
                sentences.append(Sentence(words, labels, line_numbers))
                words, labels, line_numbers = [], [], []
                if max_sentences is not None and len(sentences) >= max_sentences:
                    return sentences
            continue
        columns = split_columns(line)
        if len(columns) < 2:
            raise TaskDataError(
                f"{path} line {line_number}: {line.strip()!r} has no label; each line must be "
                "'word ... label' (space- or tab-separated), with a blank line between sentences"
            )
        words.append(columns[0])
        labels.append(columns[-1])
        line_numbers.append(line_number)
    if words:
        sentences.append(Sentence(words, labels, line_numbers))
    if not sentences:
        raise TaskDataError(f"{path}: holds no sentence; it must have at least one 'word label' line")
    return sentences


def read_labels(data_dir, task, train_sentences=None):
    """The task's label list: `{task}_labels.txt`, or, when it is missing, the labels of the training file."""
    path = labels_file(data_dir, task)
    if os.path.isfile(path):
        labels = [line.strip() for line in read_text_lines(path) if line.strip()]
        if not labels:
            raise TaskDataError(f"{path}: holds no label; write one label per line")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise TaskDataError(f"{path}: label(s) {duplicates} appear more than once; keep one of each")
        return labels
    if train_sentences is None:
        train_sentences = read_sentences(task_file(data_dir, "train", task))
    labels = sorted({label for sentence in train_sentences for label in sentence.labels})
    logger.warning(
        "%s not found: using the %d labels of %s (write the file to fix the label set)",
        path, len(labels), task_file(data_dir, "train", task),
    )
    return labels


def check_labels(path, sentences, labels):
    """Fail on the first label of `sentences` that is not in the task's label list."""
    known = set(labels)
    for sentence in sentences:
        for label, line_number in zip(sentence.labels, sentence.line_numbers):
            if label not in known:
                raise TaskDataError(
                    f"{path} line {line_number}: label {label!r} is not in the task's label list "
                    f"({len(labels)} labels); add it to the labels file or fix the line"
                )


# ---------------------------------------------------------------------------------------------------------
# Tokenisation


@dataclass
class Feature:
    """One model input: a sentence, or a window of one for evaluation (see `encode_sentences`)."""

    input_ids: list
    label_ids: list  # IGNORED_LABEL_ID except at each word's first sub-token
    sentence_index: int
    word_indices: list  # for each labelled position, the index of its word in the sentence


@dataclass
class EncodingReport:
    sentences: int = 0
    truncated_sentences: int = 0
    truncated_words: int = 0  # words dropped by --max_seq_length (training only)
    split_sentences: int = 0  # sentences evaluated in several windows so no word is lost
    words_without_tokens: int = 0  # words the tokenizer maps to nothing (e.g. lone control characters)

    def describe(self, name):
        parts = [f"{name}: {self.sentences} sentences"]
        if self.truncated_words:
            parts.append(
                f"{self.truncated_words} words in {self.truncated_sentences} sentences cut by --max_seq_length "
                "(they are not trained on; split long sentences with data/preprocess_max_len.py)"
            )
        if self.split_sentences:
            parts.append(f"{self.split_sentences} sentences longer than --max_seq_length predicted in windows")
        if self.words_without_tokens:
            parts.append(
                f"{self.words_without_tokens} words have no sub-token and get the task's default label"
            )
        return "; ".join(parts)


def word_windows(token_counts, budget):
    """Split word indices into consecutive windows whose sub-token counts fit `budget`."""
    windows, current, used = [], [], 0
    for word_index, count in enumerate(token_counts):
        if current and used + count > budget:
            windows.append(current)
            current, used = [], 0
        current.append(word_index)
        used += count
    if current:
        windows.append(current)
    return windows


def _labelled_feature(input_ids, word_ids, window, labels, label_to_id, sentence_index):
    """A Feature whose label ids mark the first sub-token of each word of `window` (word indices)."""
    label_ids, word_indices = [], []
    previous = None
    for word_id in word_ids:
        if word_id is None or word_id == previous:
            label_ids.append(IGNORED_LABEL_ID)
        else:
            word_index = window[word_id]
            label_ids.append(label_to_id[labels[word_index]])
            word_indices.append(word_index)
        previous = word_id if word_id is not None else previous
    return Feature(list(input_ids), label_ids, sentence_index, word_indices)


def encode_sentences(tokenizer, sentences, label_to_id, max_seq_length, keep_all_words=False):
    """Tokenise pre-split sentences; label each word's first sub-token.

    A sentence longer than `max_seq_length` sub-tokens is cut (training: `keep_all_words=False`, the words
    past the limit are counted in the report), or split into consecutive windows that each fit
    (evaluation: `keep_all_words=True`, so every word gets a prediction and prediction files stay aligned).
    """
    report = EncodingReport(sentences=len(sentences))
    budget = max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise ValueError(f"--max_seq_length {max_seq_length} leaves no room for a word after the special tokens")
    # One pass over everything; only the (rare) sentences that do not fit are tokenised again, per window.
    encoded = tokenizer([sentence.words for sentence in sentences], is_split_into_words=True)
    features_by_sentence = [[] for _ in sentences]
    windows_to_encode = []  # (sentence_index, word indices)
    for sentence_index, sentence in enumerate(sentences):
        word_ids = encoded.word_ids(sentence_index)
        token_counts = [0] * len(sentence.words)
        for word_id in word_ids:
            if word_id is not None:
                token_counts[word_id] += 1
        report.words_without_tokens += token_counts.count(0)
        if len(word_ids) <= max_seq_length:
            features_by_sentence[sentence_index].append(_labelled_feature(
                encoded["input_ids"][sentence_index], word_ids, range(len(sentence.words)), sentence.labels,
                label_to_id, sentence_index))
            continue
        windows = word_windows(token_counts, budget)
        if keep_all_words:
            report.split_sentences += 1
            windows_to_encode.extend((sentence_index, window) for window in windows)
        else:
            report.truncated_sentences += 1
            report.truncated_words += len(sentence.words) - len(windows[0])
            windows_to_encode.append((sentence_index, windows[0]))
    if windows_to_encode:
        window_words = [[sentences[s].words[w] for w in window] for s, window in windows_to_encode]
        # A single word longer than the budget still fits after truncation: its first sub-token survives.
        windowed = tokenizer(window_words, is_split_into_words=True, truncation=True, max_length=max_seq_length)
        for position, (sentence_index, window) in enumerate(windows_to_encode):
            features_by_sentence[sentence_index].append(_labelled_feature(
                windowed["input_ids"][position], windowed.word_ids(position), window,
                sentences[sentence_index].labels, label_to_id, sentence_index))
    return [feature for features in features_by_sentence for feature in features], report


# ---------------------------------------------------------------------------------------------------------
# Task data sets and one-task batches


@dataclass
class TaskSplit:
    """One split of one task: the sentences as read, and their model inputs."""

    task: str
    split: str
    path: str
    sentences: list
    features: list
    report: EncodingReport

    def __len__(self):
        return len(self.features)


def load_task_split(data_dir, task, split, tokenizer, labels, max_seq_length, max_sentences=None, shuffle_seed=None):
    """Read, check and tokenise one task file: its first `max_sentences` sentences (None: all).

    With `shuffle_seed` the file's sentences are first put in an order drawn from that seed, so "the first
    N" are a random N (see `training_order_seed`).
    """
    path = task_file(data_dir, split, task)
    if shuffle_seed is None:
        sentences = read_sentences(path, max_sentences=max_sentences)
    else:
        sentences = read_sentences(path)
        order = np.random.default_rng(shuffle_seed).permutation(len(sentences))
        sentences = [sentences[index] for index in order[:max_sentences]]
    if max_sentences is not None and len(sentences) < max_sentences:
        logger.warning(
            "%s holds %d sentences, fewer than the %d asked for: using all of them", path, len(sentences), max_sentences
        )
    check_labels(path, sentences, labels)
    label_to_id = {label: index for index, label in enumerate(labels)}
    features, report = encode_sentences(
        tokenizer, sentences, label_to_id, max_seq_length, keep_all_words=(split != "train")
    )
    logger.info(report.describe(path))
    return TaskSplit(task, split, path, sentences, features, report)


def training_order_seed(data_seed, task):
    """The seed of `task`'s training-file order: each task gets its own order.

    The original's data converter shuffled every training file once, each independently, so the main
    task's first N sentences were a random N, and in the ratio analysis they were not simply the first
    sentences of the cut sources. A seed of its own per task keeps both true here.
    """
    return [data_seed, zlib.crc32(task.encode("utf-8"))]


def collate(features, pad_token_id):
    """Pad a list of features to the longest one in the batch (not to --max_seq_length)."""
    length = max(len(feature.input_ids) for feature in features)
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    label_ids = torch.full((len(features), length), IGNORED_LABEL_ID, dtype=torch.long)
    for row, feature in enumerate(features):
        size = len(feature.input_ids)
        input_ids[row, :size] = torch.tensor(feature.input_ids)
        attention_mask[row, :size] = 1
        label_ids[row, :size] = torch.tensor(feature.label_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


# --group_by_length sorts each run of this many batches' worth of shuffled sentences by length.
LENGTH_GROUP_BATCHES = 50


def epoch_batches(task_sizes, batch_size, generator, task_lengths=None):
    """The batches of one epoch: each a (task, feature indices) pair holding one task only.

    Every task's examples are shuffled and cut into batches, and all tasks' batches are shuffled together,
    so each task contributes batches in proportion to its size. With `task_lengths` (task ->
    each example's length; --group_by_length), each run of LENGTH_GROUP_BATCHES batches' worth of the
    shuffled examples is sorted by length before it is cut, so a batch holds sentences of similar length
    and little padding is computed; the batches are still drawn at random.
    """
    batches = []
    for task, size in task_sizes.items():
        order = torch.randperm(size, generator=generator).tolist()
        if task_lengths is not None:
            lengths, group = task_lengths[task], batch_size * LENGTH_GROUP_BATCHES
            order = [index for start in range(0, size, group)
                     for index in sorted(order[start : start + group], key=lambda index: lengths[index])]
        batches.extend((task, order[start : start + batch_size]) for start in range(0, size, batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[index] for index in permutation]


def prediction_file_text(test_path, predictions):
    """The test file's lines with each word's label replaced by its prediction, blank lines kept.

    `predictions` holds one label list per sentence of the test file, in order.
    """
    lines = read_text_lines(test_path)
    output, sentence_index, word_index = [], 0, 0
    for line in lines:
        if is_sentence_break(line):
            if word_index:
                sentence_index, word_index = sentence_index + 1, 0
            output.append(line)
            continue
        columns = split_columns(line)
        separator = "\t" if "\t" in line else " "
        columns[-1] = predictions[sentence_index][word_index]
        output.append(separator.join(columns))
        word_index += 1
    return "\n".join(output) + "\n"
