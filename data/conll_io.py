"""Reading column files line by line and writing task files atomically; shared by the data scripts.

Task files (see docs/data.md): one word per line, the word first and the label last, space- or
tab-separated, a blank line between sentences, ``-DOCSTART-`` lines ignored; ``{task}_labels.txt`` holds one
label a line.
"""

import os
import random
import shutil
import tempfile
from dataclasses import dataclass

import utils_cross_task
from utils_cross_task import TaskDataError

SPLITS = ("train", "dev", "test")
ONTONOTES_TASKS = ("pos", "ner", "predicate")


@dataclass
class TaggedSentence:
    words: list
    labels: dict  # task -> one label per word


@dataclass
class LabelledText:
    """An example of sentence-level tasks: its one or two texts, and for each task its one label."""

    words: list  # the texts
    labels: dict  # task -> [label]


def predicate_label(frameset_id):
    """OntoNotes' predicate task: a word with a PropBank frameset ('-' or None: none). The lemma alone is not
    enough: it is also given to words that only carry a word-sense annotation (many nouns)."""
    return "-" if frameset_id in (None, "-") else "predicate"


def read_text_lines(path):
    """The file's lines without their line ends, decoded as UTF-8; bad bytes are reported with the line."""
    return utils_cross_task.read_text_lines(path, missing_hint="check the path given on the command line")


def line_blocks(lines, is_comment=lambda line: False):
    """Group numbered lines into sentences: runs of non-blank lines; comment lines are skipped.

    Yields lists of (1-based line number, line) pairs.
    """
    block = []
    for line_number, line in enumerate(lines, start=1):
        if is_comment(line):
            continue
        if line.strip():
            block.append((line_number, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


def task_file_text(sentences):
    """Task-file text for (words, labels) pairs: 'word label' lines, a blank line after each sentence."""
    parts = []
    for words, labels in sentences:
        parts.extend(f"{word} {label}\n" for word, label in zip(words, labels))
        parts.append("\n")
    return "".join(parts)


def sentence_task_file_text(examples):
    """Sentence-level task-file text for (texts, [label]) pairs: 'label<TAB>text[<TAB>text]' lines."""
    return "".join("\t".join([labels[0], *texts]) + "\n" for texts, labels in examples)


def labels_file_text(labels):
    return "".join(f"{label}\n" for label in labels)


def sample_sentences(sentences, count, seed):
    """Shuffle with `seed` and keep the first `count` (all of them, shuffled, when count is None)."""
    shuffled = list(sentences)
    random.Random(seed).shuffle(shuffled)
    return shuffled if count is None else shuffled[:count]


def write_files_atomically(output_dir, contents):
    """Write {file name: text} into `output_dir` so that no file is ever left half written.

    Every file is first written in full into a temporary folder inside `output_dir` (same file system), and
    only then moved into place with os.replace, so a failure part way leaves the old files untouched.
    """
    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=output_dir)
    try:
        for name, text in contents.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
        for name in contents:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
