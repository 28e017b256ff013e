"""Task data: reading CoNLL-style task files and label lists, tokenisation, one-task batches.

A data directory holds, for each task, ``{train,dev,test}_{task}.txt`` (one word per line, the word first
and the label last, space- or tab-separated, a blank line between sentences, ``-DOCSTART-`` lines
ignored) and ``{task}_labels.txt`` (one label per line). Task names are free strings.
"""

import gzip
import json
import logging
import os
import queue
import re
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np

from tawt.errors import TaskDataError, UsageError

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
    """`{split}_{task}.txt` for a tagging task, `{split}_{task}.tsv` for a sentence-level one."""
    extension = SENTENCE_TASK_EXTENSION if is_sentence_task(data_dir, task) else ".txt"
    return os.path.join(data_dir, f"{split}_{task}{extension}")


def labels_file(data_dir, task):
    return os.path.join(data_dir, f"{task}_labels.txt")


def task_files_hint(path):
    """What to check when a task file is missing: the task files its directory does hold."""
    directory = os.path.dirname(path) or "."
    present = sorted(name for name in os.listdir(directory) if name.endswith((".txt", SENTENCE_TASK_EXTENSION))
                     ) if os.path.isdir(directory) else []
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
    """Read a task file into `Sentence`s (at most `max_sentences`, the file's first ones).

    A sentence-level task file (.tsv) gives one `Sentence` per example (see `read_sentence_examples`)."""
    if is_sentence_file(path):
        return read_sentence_examples(path, max_sentences)
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
    # A sentence-level example: label_ids holds its one label, which the task's head predicts from the
    # whole input (see MultiTaskTagger.task_states); token_type_ids tell the two texts of a pair apart.
    sentence_level: bool = False
    token_type_ids: list = None


@dataclass
class EncodingReport:
    sentences: int = 0
    truncated_sentences: int = 0
    truncated_words: int = 0  # words dropped by --max_seq_length (training only)
    split_sentences: int = 0  # sentences evaluated in several windows so no word is lost
    words: int = 0
    words_without_tokens: int = 0  # words the tokenizer maps to nothing (e.g. lone control characters)
    unknown_words: int = 0  # words the tokenizer maps to its unknown token only
    unusable_examples: list = field(default_factory=list)  # a few of the words of these two kinds
    truncated_examples: int = 0  # sentence-level examples cut by --max_seq_length

    def describe(self, name):
        parts = [f"{name}: {self.sentences} sentences"]
        if self.truncated_words:
            parts.append(
                f"{self.truncated_words} words in {self.truncated_sentences} sentences cut by --max_seq_length "
                "(they are not trained on; split long sentences with data/preprocess_max_len.py)"
            )
        if self.truncated_examples:
            parts.append(f"{self.truncated_examples} examples cut to --max_seq_length sub-tokens (their label is "
                         "predicted from the part kept)")
        if self.split_sentences:
            parts.append(f"{self.split_sentences} sentences longer than --max_seq_length predicted in windows")
        if self.words_without_tokens:
            parts.append(
                f"{self.words_without_tokens} words have no sub-token and get the task's default label"
            )
        if self.unknown_words:
            parts.append(f"{self.unknown_words} words are only the tokenizer's unknown token")
        return "; ".join(parts)

    def count_words(self, words, token_counts, known):
        """Add one sentence's words, with each word's number of sub-tokens and whether it has one other
        than the unknown token (as `encode_words` gives them)."""
        self.words += len(words)
        for word, count, is_known in zip(words, token_counts, known):
            if not is_known:
                if count:
                    self.unknown_words += 1
                else:
                    self.words_without_tokens += 1
                if len(self.unusable_examples) < 5 and word not in self.unusable_examples:
                    self.unusable_examples.append(word)

    def check_coverage(self, path, tokenizer):
        """Refuse a file most of whose words the tokenizer cannot encode: a run on it would end normally,
        having learnt and predicted from the unknown token alone."""
        unusable = self.words_without_tokens + self.unknown_words
        if self.words and unusable * 2 > self.words:
            raise UsageError(
                f"{path}: {unusable} of {self.words} words get no sub-token or only the unknown token from the "
                f"tokenizer of {tokenizer.name_or_path} (e.g. {', '.join(map(repr, self.unusable_examples))}); "
                "--model_name_or_path must hold its encoder's own tokenizer files (tokenizer.json, or vocab.txt, "
                "or vocab.json and merges.txt), for the data's language"
            )


# Words whose sub-tokens tell whether a word given alone is encoded as it is in running text.
PROBE_WORDS = ["the", "words", "of", "a", "sentence"]


def load_word_tokenizer(model_name_or_path):
    """The model's tokenizer, set to encode each word of a pre-split sentence as the pretrained model saw it
    in running text.

    A byte-level BPE tokenizer (RoBERTa, GPT-2) marks a word's start by the space before it ('Ġdog'); given
    words one by one it sees no space, and without add_prefix_space 'the dog sees' becomes 't h e do g se
    es': sub-tokens the model never saw at a word's start. A tokenizer that still encodes words otherwise
    than in text is refused, as is one without a vocabulary (a model folder lacking its tokenizer files).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    check_tokenizer_vocabulary(tokenizer, model_name_or_path)
    if not tokenizer.is_fast or encodes_words_as_in_text(tokenizer):
        return tokenizer
    # transformers' own switch (RoBERTa, GPT-2, BART...), which the tokenizer saved with a run's model records.
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, add_prefix_space=True)
    if not encodes_words_as_in_text(tokenizer):
        add_prefix_space_to_byte_level(tokenizer.backend_tokenizer)  # a generic tokenizer ignores the switch
    if not encodes_words_as_in_text(tokenizer):
        raise UsageError(
            f"--model_name_or_path {model_name_or_path}: its tokenizer encodes a word given alone otherwise than "
            f"in running text ({' '.join(PROBE_WORDS[1:])!r} become {tokens_of_words(tokenizer)} as words), so "
            "tagging would read sub-tokens the model never saw; use an encoder whose tokenizer marks word starts "
            "(WordPiece, SentencePiece, byte-level BPE)"
        )
    return tokenizer


def check_tokenizer_vocabulary(tokenizer, model_name_or_path):
    """Refuse a tokenizer that holds nothing but its special tokens (what transformers builds for a model
    folder without tokenizer files): every word would be the unknown token, or nothing at all."""
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise UsageError(
            f"--model_name_or_path {model_name_or_path}: its tokenizer holds only its {len(tokenizer)} special "
            "tokens, no vocabulary (the tokenizer files are missing); copy its encoder's tokenizer files "
            "(tokenizer.json and tokenizer_config.json, or vocab.txt, or vocab.json and merges.txt) into it"
        )


def tokens_of_words(tokenizer):
    """The sub-tokens of PROBE_WORDS after the first, the words encoded as a pre-split sentence."""
    encoded = tokenizer([PROBE_WORDS], is_split_into_words=True, add_special_tokens=False)
    return [token for token, word_id in zip(encoded.tokens(0), encoded.word_ids(0)) if word_id]


def encodes_words_as_in_text(tokenizer):
    """Whether the words of a pre-split sentence get the sub-tokens they have in the sentence written out
    (the first word aside: it starts the text)."""
    in_words = tokens_of_words(tokenizer)
    in_text = tokenizer(" ".join(PROBE_WORDS), add_special_tokens=False).tokens()
    return bool(in_words) and in_text[-len(in_words):] == in_words


def add_prefix_space_to_byte_level(backend):
    """Turn on add_prefix_space in the byte-level pre-tokenizer(s) of a `tokenizers.Tokenizer`, in place."""
    from tokenizers import Tokenizer

    def switch_on(node):
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
                node["add_prefix_space"] = True
            for value in node.values():
                switch_on(value)
        elif isinstance(node, list):
            for value in node:
                switch_on(value)

    state = json.loads(backend.to_str())
    if state.get("pre_tokenizer") is not None:
        switch_on(state["pre_tokenizer"])
        backend.pre_tokenizer = Tokenizer.from_str(json.dumps(state)).pre_tokenizer


def encode_words(tokenizer, sentences_words, **options):
    """Tokenise pre-split sentences as training does. Returns the encoding and, per sentence, each word's
    number of sub-tokens and whether it has one other than the unknown token."""
    encoded = tokenizer(sentences_words, is_split_into_words=True, **options)
    unknown = tokenizer.unk_token_id
    counts, known = [], []
    for index, words in enumerate(sentences_words):
        word_counts, word_known = [0] * len(words), [False] * len(words)
        for word_id, token_id in zip(encoded.word_ids(index), encoded["input_ids"][index]):
            if word_id is not None:
                word_counts[word_id] += 1
                word_known[word_id] = word_known[word_id] or token_id != unknown
        counts.append(word_counts)
        known.append(word_known)
    return encoded, counts, known


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
    encoded, counts, known = encode_words(tokenizer, [sentence.words for sentence in sentences])
    features_by_sentence = [[] for _ in sentences]
    windows_to_encode = []  # (sentence_index, word indices)
    for sentence_index, sentence in enumerate(sentences):
        word_ids = encoded.word_ids(sentence_index)
        token_counts = counts[sentence_index]
        report.count_words(sentence.words, token_counts, known[sentence_index])
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
    if is_sentence_file(path):
        features, report = encode_sentence_examples(tokenizer, sentences, label_to_id, max_seq_length)
    else:
        features, report = encode_sentences(
            tokenizer, sentences, label_to_id, max_seq_length, keep_all_words=(split != "train")
        )
    report.check_coverage(path, tokenizer)
    logger.info(report.describe(path))
    return TaskSplit(task, split, path, sentences, features, report)


def training_order_seed(data_seed, task):
    """The seed of `task`'s training-file order: each task gets its own order.

    The original's data converter shuffled every training file once, each independently, so the main
    task's first N sentences were a random N, and in the ratio analysis they were not simply the first
    sentences of the cut sources. A seed of its own per task keeps both true here.
    """
    return [data_seed, zlib.crc32(task.encode("utf-8"))]


def collate(features, pad_token_id, pad_to_multiple_of=None, max_length=None, rows=None):
    """Pad a list of features to the longest one in the batch (not to --max_seq_length).

    `pad_to_multiple_of` rounds that length up (to at most `max_length`, when given, or the longest
    feature if that is longer); `rows` adds rows up to that many. An added row is one padding token that
    may be attended to (a row attending to nothing would be NaN in attention) and carries no label.
    """
    length = max(len(feature.input_ids) for feature in features)
    if pad_to_multiple_of:
        rounded = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        length = max(length, min(rounded, max_length or rounded))
    import torch  # here, not at the top: the data tools that only read task files start without torch

    row_count = max(len(features), rows or 0)
    input_ids = torch.full((row_count, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((row_count, length), dtype=torch.long)
    # A batch holds one task: sentence-level examples have one label each (a [rows, 1] label tensor).
    label_ids = torch.full((row_count, 1 if features[0].sentence_level else length), IGNORED_LABEL_ID,
                           dtype=torch.long)
    paired = any(feature.token_type_ids is not None for feature in features)
    token_type_ids = torch.zeros((row_count, length), dtype=torch.long) if paired else None
    for row, feature in enumerate(features):
        size = len(feature.input_ids)
        input_ids[row, :size] = torch.tensor(feature.input_ids)
        attention_mask[row, :size] = 1
        label_ids[row, : len(feature.label_ids)] = torch.tensor(feature.label_ids)
        if paired and feature.token_type_ids is not None:
            token_type_ids[row, :size] = torch.tensor(feature.token_type_ids)
    attention_mask[len(features):, 0] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}
    if paired:
        batch["token_type_ids"] = token_type_ids
    return batch


def prefetched(items, make_batch, device, depth=2):
    """`make_batch(item)` for each item, on `device`: made by a background thread up to `depth` batches
    ahead (in pinned memory when the device is a GPU), so collation is off the training step's path, and
    copied without waiting (non_blocking). The batches are the same, in the same order, as made inline.
    """
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pin = device.type == "cuda"

    def offer(entry):
        """Put `entry` in the queue unless the consumer has stopped; whether it went in."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                batch = make_batch(item)
                if pin:
                    batch = {name: tensor.pin_memory() for name, tensor in batch.items()}
                if not offer((batch, None)):
                    return
        except BaseException as error:  # raised again where the batch is taken
            offer((None, error))
            return
        offer((None, None))

    producer = threading.Thread(target=produce, name="tawt-batch-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
    finally:
        stop.set()
        producer.join()


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
    import torch  # as in collate

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


# ---------------------------------------------------------------------------------------------------------
# Sentence-level tasks
#
# A task whose files are {split}_{task}.tsv has one label per example rather than per word: one example a
# line, 'label<TAB>text', or 'label<TAB>text_a<TAB>text_b' for a pair (entailment, paraphrase). An example
# is held as a `Sentence` whose words are its one or two texts and whose labels are its one label, so
# everything that counts, checks or fingerprints sentences serves both kinds of task.

SENTENCE_TASK_EXTENSION = ".tsv"
SPLITS = ("train", "dev", "test")


def _exists(path):
    return os.path.isfile(path) or os.path.isfile(path + ".gz")


def is_sentence_file(path):
    return os.fspath(path).removesuffix(".gz").endswith(SENTENCE_TASK_EXTENSION)


def is_sentence_task(data_dir, task):
    """Whether `task`'s files in `data_dir` are sentence-level (.tsv); a task with both kinds is refused."""
    sentence_files = [f"{split}_{task}{SENTENCE_TASK_EXTENSION}" for split in SPLITS
                      if _exists(os.path.join(data_dir, f"{split}_{task}{SENTENCE_TASK_EXTENSION}"))]
    if not sentence_files:
        return False
    tagging_files = [f"{split}_{task}.txt" for split in SPLITS if _exists(os.path.join(data_dir, f"{split}_{task}.txt"))]
    if tagging_files:
        raise TaskDataError(
            f"{data_dir}: task {task} has tagging files ({', '.join(tagging_files)}) and sentence-level files "
            f"({', '.join(sentence_files)}); a task is one or the other: remove or rename one set"
        )
    return True


def read_sentence_examples(path, max_examples=None):
    """Read a sentence-level task file into `Sentence`s: words are the example's texts, labels its label.

    Blank lines are skipped. Every line has the same number of columns (a file holds single texts or pairs).
    """
    examples, columns_seen = [], None
    for line_number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.rstrip("\r").split("\t")
        if len(columns) not in (2, 3):
            raise TaskDataError(
                f"{path} line {line_number}: {len(columns)} tab-separated column(s); each line must be "
                "'label<TAB>text' or 'label<TAB>text_a<TAB>text_b' (replace tabs inside a text by spaces)"
            )
        empty = [name for name, column in zip(("label", "text", "second text"), columns) if not column.strip()]
        if empty:
            raise TaskDataError(f"{path} line {line_number}: the {empty[0]} is empty; write 'label<TAB>text' "
                                "(or 'label<TAB>text_a<TAB>text_b') with every column filled in")
        if columns_seen is None:
            columns_seen = (len(columns), line_number)
        elif len(columns) != columns_seen[0]:
            kinds = {2: "a single text", 3: "a pair of texts"}
            raise TaskDataError(
                f"{path} line {line_number}: {kinds[len(columns)]}, but line {columns_seen[1]} has "
                f"{kinds[columns_seen[0]]}; a task's examples are all single texts or all pairs"
            )
        examples.append(Sentence([column.strip() for column in columns[1:]], [columns[0].strip()], [line_number]))
        if max_examples is not None and len(examples) >= max_examples:
            break
    if not examples:
        raise TaskDataError(f"{path}: holds no example; it must have at least one 'label<TAB>text' line")
    return examples


def encode_sentence_examples(tokenizer, examples, label_to_id, max_seq_length):
    """Tokenise sentence-level examples (one text or a pair each); the label goes to the whole input.

    An example longer than `max_seq_length` sub-tokens is cut (the longer text first, for a pair): its
    label is still predicted, from what is kept, so nothing is lost from the prediction file.
    """
    report = EncodingReport(sentences=len(examples))
    first_texts = [example.words[0] for example in examples]
    second_texts = [example.words[1] for example in examples] if len(examples[0].words) == 2 else None
    encoded = tokenizer(first_texts, second_texts)
    too_long = [index for index, ids in enumerate(encoded["input_ids"]) if len(ids) > max_seq_length]
    cut = {}
    if too_long:
        report.truncated_examples = len(too_long)
        shortened = tokenizer([first_texts[index] for index in too_long],
                              None if second_texts is None else [second_texts[index] for index in too_long],
                              truncation=True, max_length=max_seq_length)
        cut = {index: position for position, index in enumerate(too_long)}
    features = []
    for index, example in enumerate(examples):
        source, row = (shortened, cut[index]) if index in cut else (encoded, index)
        token_types = source["token_type_ids"][row] if second_texts is not None and "token_type_ids" in source else None
        features.append(Feature(list(source["input_ids"][row]), [label_to_id[example.labels[0]]], index, [0],
                                sentence_level=True, token_type_ids=None if token_types is None else list(token_types)))
    return features, report


def sentence_prediction_file_text(sentences, predictions):
    """One line per example: gold label, predicted label and the example's text(s), tab-separated."""
    return "".join("\t".join([example.labels[0], predicted[0], *example.words]) + "\n"
                   for example, predicted in zip(sentences, predictions))


def read_sentence_prediction_lines(path):
    """Per example of a sentence-level task's prediction file: (line number, gold label, predicted label,
    [its text or texts])."""
    examples = []
    for line_number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 3:
            raise TaskDataError(f"{path} line {line_number}: not a sentence-level prediction line ('gold<TAB>"
                                "predicted<TAB>text'); give the {task}_test_predictions.txt of a sentence-level task")
        examples.append((line_number, columns[0], columns[1], columns[2:]))
    return examples


def read_sentence_predictions(path):
    """(gold labels, predicted labels) of a sentence-level task's prediction file, one of each per example."""
    examples = read_sentence_prediction_lines(path)
    return [gold for _, gold, _, _ in examples], [predicted for _, _, predicted, _ in examples]
