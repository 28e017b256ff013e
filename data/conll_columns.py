"""Task files from any whitespace-separated column file with one or more label columns.

    # CoNLL-2003: 'word POS chunk NER' lines, -DOCSTART- lines between documents:
    python data/process_data.py conll --columns pos=1 chunking=2 ner=3 --iob2 chunking ner \
        --train eng.train --dev eng.testa --test eng.testb --output_dir my_data

--columns names each task and the column of its labels, counted from 0; the word is column 0 unless
--word_column says otherwise. Columns are separated by spaces or tabs, a blank line ends a sentence, and
-DOCSTART- lines are skipped. Every word line of a file must have as many columns as its first one: a line
that does not stops the conversion, naming the file and the line, and nothing is written.
"""

import re
from dataclasses import dataclass

from tawt.data.conll_io import TaggedSentence, read_text_lines
from tawt.errors import TaskDataError, UsageError
from utils_cross_task import is_sentence_break, split_columns

COLUMN_ASSIGNMENT = re.compile(r"^([^=/\\\s]+)=(\d+)$")


def add_arguments(command):
    command.add_argument("--columns", nargs="+", required=True, metavar="TASK=COLUMN",
                         help="each task and the column of its labels, counted from 0 (CoNLL-2003: pos=1 "
                              "chunking=2 ner=3)")
    command.add_argument("--word_column", type=int, default=0, metavar="COLUMN",
                         help="the column of the words, counted from 0 (default: 0)")
    command.add_argument("--iob2", nargs="+", default=[], metavar="TASK",
                         help="rewrite these tasks' labels from IOB1 (CoNLL-2003's own files: an entity starts "
                              "with I- unless it follows one of its type) to IOB2 (every entity starts with B-)")


@dataclass
class ColumnLayout:
    """Where the word and each task's labels are on a line (0-based columns)."""

    word_column: int
    task_columns: dict  # task -> column
    iob2_tasks: tuple = ()

    @property
    def columns_needed(self):
        return max(self.word_column, *self.task_columns.values()) + 1

    def describe(self):
        named = {self.word_column: "word", **{column: task for task, column in self.task_columns.items()}}
        return ", ".join(f"{column} {named[column]}" for column in sorted(named))

    def read(self, path):
        """The sentences of one column file, each word with one label per task."""
        sentences, expected, first_line = [], None, None
        rows = []
        for line_number, line in enumerate(read_text_lines(path), start=1):
            if is_sentence_break(line):
                if rows:
                    sentences.append(self._sentence(rows))
                    rows = []
                continue
            columns = split_columns(line)
            if expected is None:
                if len(columns) < self.columns_needed:
                    raise TaskDataError(
                        f"{path} line {line_number}: {len(columns)} columns, but --columns and --word_column need "
                        f"{self.columns_needed} ({self.describe()}); check the column numbers (counted from 0)")
                expected, first_line = len(columns), line_number
            elif len(columns) != expected:
                raise TaskDataError(
                    f"{path} line {line_number}: {len(columns)} columns where the file's first word line (line "
                    f"{first_line}) has {expected}; every word line needs the same columns (a word or label with "
                    "a space in it? a missing label?): fix the line")
            rows.append(columns)
        if rows:
            sentences.append(self._sentence(rows))
        return sentences

    def _sentence(self, rows):
        labels = {}
        for task, column in self.task_columns.items():
            task_labels = [columns[column] for columns in rows]
            labels[task] = iob1_to_iob2(task_labels) if task in self.iob2_tasks else task_labels
        return TaggedSentence([columns[self.word_column] for columns in rows], labels)


def iob1_to_iob2(labels):
    """IOB1 labels (I-X starts an entity, B-X only between two adjacent entities of type X) -> IOB2
    (every entity starts with B-X). IOB2 input comes back unchanged."""
    converted, previous = [], "O"
    for label in labels:
        if label.startswith("I-") and previous[2:] != label[2:]:
            label = "B-" + label[2:]
        converted.append(label)
        previous = label
    return converted


def layout_from_arguments(args):
    """The ColumnLayout of --columns, --word_column and --iob2, checked before any file is read."""
    if args.word_column < 0:
        raise UsageError(f"--word_column {args.word_column}: give a column number counted from 0")
    task_columns = {}
    for assignment in args.columns:
        match = COLUMN_ASSIGNMENT.match(assignment)
        if not match or match.group(1) in (".", ".."):
            raise UsageError(f"--columns {assignment}: give TASK=COLUMN with the column counted from 0, e.g. ner=3 "
                             "(the task names the files train_TASK.txt...)")
        task, column = match.group(1), int(match.group(2))
        if task in task_columns:
            raise UsageError(f"--columns names the task {task} twice; name each task once")
        if column == args.word_column:
            raise UsageError(f"--columns {assignment}: column {column} holds the words (--word_column); give the "
                             "column of the labels")
        task_columns[task] = column
    unknown = [task for task in args.iob2 if task not in task_columns]
    if unknown:
        raise UsageError(f"--iob2 {' '.join(unknown)}: not a task of --columns ({', '.join(task_columns)})")
    return ColumnLayout(args.word_column, task_columns, tuple(args.iob2))
