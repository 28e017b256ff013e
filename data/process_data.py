"""Convert OntoNotes 5.0 (CoNLL-2012 column files), CoNLL-2000 files, any column file with label columns
(CoNLL-2003) and Hugging Face datasets into this project's task files.

    # pos, ner and predicate from OntoNotes 5.0, 2,000 sampled training sentences:
    python data/process_data.py ontonotes --train PATH/train --dev PATH/development --test PATH/test \
        --output_dir my_data --train_sentences 2000 --seed 42
    # chunking from CoNLL-2000 (it has no dev set: take 1,000 training sentences for one):
    python data/process_data.py conll2000 --train train.txt --test test.txt --output_dir my_data \
        --dev_from_train 1000
    # pos, chunking and ner from CoNLL-2003, or any tasks from any file of word and label columns:
    python data/process_data.py conll --columns pos=1 chunking=2 ner=3 --train eng.train --dev eng.testa \
        --test eng.testb --output_dir my_data
    # any of those from a Hugging Face dataset (the hub, or a save_to_disk / parquet / JSON copy):
    python data/process_data.py hf conll2012_ontonotesv5 --config english_v4 --output_dir my_data

Each run writes {split}_{task}.txt for the splits it is given and {task}_labels.txt (the labels seen in
those splits: convert all of a task's splits in one run). Paths may be files or folders; a folder is
searched recursively for files matching --file_pattern.
"""

import argparse
import fnmatch
import os
import re
import sys

from tqdm import tqdm

from tawt.data import conll_columns, hf_datasets
from tawt.errors import UsageError
from tawt.run_arguments import HelpFormatter
from tawt.data.conll_io import (
    ONTONOTES_TASKS,
    SPLITS,
    LabelledText,
    TaggedSentence,
    TaskDataError,
    labels_file_text,
    line_blocks,
    predicate_label,
    read_text_lines,
    sample_sentences,
    sentence_task_file_text,
    task_file_text,
    write_files_atomically,
)

CONLL2000_TASKS = ("chunking",)

# CoNLL-2012 (OntoNotes 5.0) *_conll columns, 0-based. After the named-entity column come one column per
# predicate of the sentence and the coreference column, so a line has at least 12 columns.
ONTONOTES_COLUMNS = (
    "0 document id, 1 part number, 2 word number, 3 word, 4 part-of-speech tag, 5 parse bit, "
    "6 predicate lemma ('-' when unset), 7 predicate frameset id, 8 word sense, 9 speaker, "
    "10 named entities ('(PERSON*', '*', '*)', '(GPE)' or BIO 'B-PERSON'/'I-PERSON'/'O'), "
    "11.. predicate arguments, last: coreference"
)
ONTONOTES_MIN_COLUMNS = 12
WORD_NUMBER, WORD, POS, PREDICATE_FRAMESET, NAMED_ENTITY = 2, 3, 4, 7, 10

CONLL2000_COLUMNS = "word, part-of-speech tag, chunk tag (B-NP, I-VP, O, ...)"
CHUNK_TAG = re.compile(r"^(O|[BI]-[A-Za-z_]+)$")
BIO_TAG = re.compile(r"^(O|[BI]-\S+)$")
# A bracketed entity opening: "(PERSON*", "(PERSON)" or "(PERSON*)" (the last two are one-word entities).
BRACKET_OPEN = re.compile(r"^\(([A-Za-z_][A-Za-z0-9_\-]*)(\*?)(\)?)$")


def _fail(path, line_number, problem, fix):
    raise TaskDataError(f"{path} line {line_number}: {problem}; {fix}")


def bracketed_ner_to_bio(tags, path, line_numbers):
    """OntoNotes named-entity column of one sentence -> BIO labels.

    Handles the CoNLL-2012 bracket notation ('(ORG*' opens, '*' continues, '*)' closes, '(GPE)' is a
    one-word entity) and passes BIO input ('B-ORG', 'I-ORG', 'O') through unchanged. Entities don't nest
    in OntoNotes, so an opening inside an open entity is an error, as is an entity never closed.
    """
    labels = []
    open_type, opened_at, notation = None, None, None
    for tag, line_number in zip(tags, line_numbers):
        if BIO_TAG.match(tag):
            kind = "bio"
        elif tag in ("*", "*)") or tag.startswith("("):
            kind = "bracket"
        else:
            _fail(path, line_number, f"named-entity column (11th) holds {tag!r}",
                  "expected '(TYPE*', '*', '*)', '(TYPE)' or BIO 'B-TYPE'/'I-TYPE'/'O'; check the columns are "
                  f"{ONTONOTES_COLUMNS}")
        if notation is not None and kind != notation:
            _fail(path, line_number, f"named-entity tag {tag!r} mixes BIO and bracket notation in one sentence",
                  "use one notation per file")
        notation = kind
        if kind == "bio":
            labels.append(tag)
            continue
        if tag == "*":
            labels.append(f"I-{open_type}" if open_type else "O")
        elif tag == "*)":
            if open_type is None:
                _fail(path, line_number, "'*)' closes a named entity that was never opened",
                      "add the matching '(TYPE*' on the entity's first word")
            labels.append(f"I-{open_type}")
            open_type = None
        else:
            match = BRACKET_OPEN.match(tag)
            if not match or not (match.group(2) or match.group(3)):
                _fail(path, line_number, f"named-entity tag {tag!r} is not '(TYPE*', '(TYPE)' or '(TYPE*)'",
                      "fix the bracket")
            if open_type is not None:
                _fail(path, line_number, f"entity {tag!r} opens inside the {open_type} entity opened on line "
                      f"{opened_at}", "close that entity first with '*)' (OntoNotes entities do not nest)")
            entity_type = match.group(1)
            labels.append(f"B-{entity_type}")
            if not match.group(3):  # no ')' yet: the entity goes on over the next words
                open_type, opened_at = entity_type, line_number
    if open_type is not None:
        _fail(path, opened_at, f"the {open_type} entity opened here is not closed by the end of the sentence",
              "add '*)' on its last word")
    return labels


def read_ontonotes(path):
    """Sentences of one CoNLL-2012 *_conll file with pos, ner and predicate labels (see ONTONOTES_COLUMNS)."""
    sentences = []
    lines = read_text_lines(path)
    for block in line_blocks(lines, is_comment=lambda line: line.startswith("#")):
        rows, line_numbers = [], []
        for line_number, line in block:
            columns = line.split()
            if len(columns) < ONTONOTES_MIN_COLUMNS:
                _fail(path, line_number, f"{len(columns)} columns where CoNLL-2012 has at least "
                      f"{ONTONOTES_MIN_COLUMNS}", f"the OntoNotes converter expects {ONTONOTES_COLUMNS}")
            if rows and len(columns) != len(rows[0]):
                _fail(path, line_number, f"{len(columns)} columns where the sentence's first line (line "
                      f"{line_numbers[0]}) has {len(rows[0])}", "every line of a sentence has the same columns")
            if not columns[WORD_NUMBER].isdigit() or int(columns[WORD_NUMBER]) != len(rows):
                _fail(path, line_number, f"word number (3rd column) is {columns[WORD_NUMBER]!r}, expected {len(rows)}",
                      f"a sentence's words count up from 0; the converter expects {ONTONOTES_COLUMNS}")
            if columns[WORD] == "[WORD]":
                _fail(path, line_number, "the word column holds the placeholder '[WORD]' (a *_skel file)",
                      "fill in the words with the CoNLL-2012 skeleton2conll script first")
            rows.append(columns)
            line_numbers.append(line_number)
        words = [columns[WORD] for columns in rows]
        labels = {
            "pos": [columns[POS] for columns in rows],
            "ner": bracketed_ner_to_bio([columns[NAMED_ENTITY] for columns in rows], path, line_numbers),
            "predicate": [predicate_label(columns[PREDICATE_FRAMESET]) for columns in rows],
        }
        sentences.append(TaggedSentence(words, labels))
    return sentences


def read_conll2000(path):
    """(words, chunk tags) sentences of a CoNLL-2000 file: 'word POS chunk' lines, blank between sentences."""
    sentences = []
    for block in line_blocks(read_text_lines(path), is_comment=lambda line: line.startswith("-DOCSTART-")):
        words, chunks = [], []
        for line_number, line in block:
            columns = line.split()
            if len(columns) != 3:
                _fail(path, line_number, f"{len(columns)} columns where CoNLL-2000 has 3",
                      f"the chunking converter expects: {CONLL2000_COLUMNS}")
            if not CHUNK_TAG.match(columns[2]):
                _fail(path, line_number, f"chunk tag (3rd column) {columns[2]!r} is not O, B-TYPE or I-TYPE",
                      f"the chunking converter expects: {CONLL2000_COLUMNS}")
            words.append(columns[0])
            chunks.append(columns[2])
        sentences.append((words, chunks))
    return sentences


def input_files(paths, pattern):
    """The files named by `paths`: files as given, folders searched recursively for `pattern`, sorted."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(path)
                for name in names
                if fnmatch.fnmatch(name, pattern)
            )
            if not found:
                raise TaskDataError(f"{path}: no file matching {pattern!r} in this folder; set --file_pattern")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise TaskDataError(f"{path}: no such file or folder; check the path")
    return files


def check_splits_apart(split_files, split_paths):
    """Refuse a file that two splits would both read: the same file given twice, or a test folder that lies
    inside the folder given for train (a recursive search of ONTO finds ONTO/test's files too)."""
    first_split = {}
    for split, files in split_files.items():
        for path in files:
            other = first_split.setdefault(os.path.realpath(path), split)
            if other != split:
                raise TaskDataError(
                    f"{path}: read for both --{other} ({' '.join(split_paths[other])}) and --{split} "
                    f"({' '.join(split_paths[split])}); give each split files or folders of its own (e.g. "
                    "ONTO/train, not ONTO, beside ONTO/test)"
                )


def read_split(files, reader, description):
    sentences = []
    for path in tqdm(files, desc=description, unit="file", leave=False):
        sentences.extend(reader(path))
    return sentences


def convert(args, tasks, reader, to_task_labels):
    """Read the splits given, sample, and write every task's files and label lists in one atomic step."""
    split_paths = {split: getattr(args, split) for split in SPLITS if getattr(args, split)}
    if not split_paths:
        raise TaskDataError("no input: give at least one of --train, --dev, --test")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):  # checked before the long read
        raise TaskDataError(f"--output_dir {args.output_dir} is a file; give the directory the task files go to "
                            "(it is created if missing)")
    split_files = {split: input_files(paths, args.file_pattern) for split, paths in split_paths.items()}
    check_splits_apart(split_files, split_paths)
    sentences = {split: read_split(files, reader, f"reading {split}") for split, files in split_files.items()}
    write_task_data(args, tasks, sentences, to_task_labels, {split: str(paths) for split, paths in split_paths.items()})


def write_task_data(args, tasks, sentences, to_task_labels, sources):
    """Cut a dev set from train (--dev_from_train), sample (--{split}_sentences, --seed), and write every
    task's files and label lists in one atomic step. `sentences` maps each split to its sentences,
    `sources` each split to where they came from (for the messages)."""
    for split, split_sentences in sentences.items():
        if not split_sentences:
            raise TaskDataError(f"{sources[split]}: holds no sentence; check the files")
    if args.dev_from_train is not None:
        if "train" not in sentences or "dev" in sentences:
            raise TaskDataError(f"--dev_from_train needs a train split and no dev split (this input has "
                                f"{', '.join(sentences)}); {'leave it out' if 'dev' in sentences else 'add train'}")
        shuffled = sample_sentences(sentences["train"], None, args.seed)
        if args.dev_from_train >= len(shuffled):
            raise TaskDataError(f"--dev_from_train {args.dev_from_train} leaves no training sentence "
                                f"(train has {len(shuffled)}); ask for fewer")
        sentences["dev"], sentences["train"] = shuffled[: args.dev_from_train], shuffled[args.dev_from_train:]
    contents, labels = {}, {task: set() for task in tasks}
    for split, split_sentences in sentences.items():
        count = getattr(args, f"{split}_sentences")
        if count is not None:
            if count > len(split_sentences):
                print(f"{split}: --{split}_sentences {count} asks for more than the {len(split_sentences)} "
                      "sentences there are: keeping them all", file=sys.stderr)
            split_sentences = sample_sentences(split_sentences, count, args.seed)
        for task in tasks:
            task_sentences = [to_task_labels(sentence, task) for sentence in split_sentences]
            if isinstance(split_sentences[0], LabelledText):  # a sentence-level task: one example a line
                contents[f"{split}_{task}.tsv"] = sentence_task_file_text(task_sentences)
            else:
                contents[f"{split}_{task}.txt"] = task_file_text(task_sentences)
            labels[task].update(label for _, task_labels in task_sentences for label in task_labels)
        print(f"{split}: {len(split_sentences)} sentences", file=sys.stderr)
    for task in tasks:
        contents[f"{task}_labels.txt"] = labels_file_text(sorted(labels[task]))
    write_files_atomically(args.output_dir, contents)
    print(f"wrote {', '.join(sorted(contents))} to {args.output_dir}", file=sys.stderr)


def tagged_sentence_labels(sentence, task):
    return sentence.words, sentence.labels[task]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="corpus", required=True)
    ontonotes = commands.add_parser(
        "ontonotes", help="OntoNotes 5.0 CoNLL-2012 *_conll files -> pos, ner, predicate",
        description=f"Expected columns (whitespace-separated, '#' lines skipped): {ONTONOTES_COLUMNS}",
    )
    ontonotes.set_defaults(file_pattern="*gold_conll")
    conll2000 = commands.add_parser(
        "conll2000", help="CoNLL-2000 chunking files -> chunking",
        description=f"Expected columns (whitespace-separated, blank line between sentences): {CONLL2000_COLUMNS}",
    )
    conll2000.set_defaults(file_pattern="*.txt")
    conll = commands.add_parser("conll", help="any column file with label columns (CoNLL-2003 ...) -> --columns' tasks",
                                description=conll_columns.__doc__, formatter_class=HelpFormatter)
    conll_columns.add_arguments(conll)
    conll.set_defaults(file_pattern="*")
    hf = commands.add_parser("hf", help="a Hugging Face dataset (hub name, save_to_disk folder, parquet/JSON/arrow "
                                        "files) -> its tasks", description=hf_datasets.__doc__,
                             formatter_class=HelpFormatter)
    hf_datasets.add_arguments(hf)
    for command in (ontonotes, conll2000, conll, hf):
        for split in SPLITS:
            if command is not hf:
                command.add_argument(f"--{split}", nargs="+", metavar="PATH", help=f"{split} files or folders")
            command.add_argument(f"--{split}_sentences", type=int, metavar="N",
                                 help=f"shuffle the {split} sentences with --seed and keep N (default: all, in order)")
        command.add_argument("--output_dir", required=True, help="data directory to write the task files into")
        command.add_argument("--seed", type=int, default=42, help="seed of the shuffles (default 42)")
        command.add_argument("--dev_from_train", type=int, metavar="N",
                             help="make the dev split from N shuffled training sentences (when there is no dev split)")
        if command is not hf:
            command.add_argument("--file_pattern", help="file names to take from a folder (default: %(default)s)")
    return parser.parse_args(argv)


def check_sentence_counts(args):
    """Counts of sentences must be positive: a negative one would slice from the end (--dev_from_train -3
    made train 3 sentences and dev the rest), and 0 would be taken as not given."""
    for flag in ("dev_from_train",) + tuple(f"{split}_sentences" for split in SPLITS):
        count = getattr(args, flag)
        if count is not None and count < 1:
            raise UsageError(f"--{flag} {count}: give a positive number of sentences, or leave the flag out")


def main(argv=None):
    args = parse_args(argv)
    try:
        check_sentence_counts(args)
        if args.corpus == "ontonotes":
            convert(args, ONTONOTES_TASKS, read_ontonotes, tagged_sentence_labels)
        elif args.corpus == "hf":
            tasks, sentences, sources = hf_datasets.read_dataset(args)
            write_task_data(args, tasks, sentences, tagged_sentence_labels, sources)
        elif args.corpus == "conll":
            layout = conll_columns.layout_from_arguments(args)
            convert(args, tuple(layout.task_columns), layout.read, tagged_sentence_labels)
        else:
            convert(args, CONLL2000_TASKS, read_conll2000, lambda sentence, task: sentence)
    except (TaskDataError, UsageError) as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # the output directory cannot be made or written
        sys.exit(f"error: {error.filename or args.output_dir}: {error.strerror}; choose another --output_dir")


if __name__ == "__main__":
    main()
