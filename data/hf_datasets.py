"""Task files from a Hugging Face dataset: python data/process_data.py hf DATASET --output_dir DIR [...]

DATASET is one of
  - a name on the Hugging Face hub, loaded with datasets.load_dataset (needs a connection), e.g.
    conll2012_ontonotesv5 --config english_v4 (or its repository id, ontonotes/conll2012_ontonotesv5);
  - a directory written by save_to_disk (a DatasetDict, or a single Dataset: the train split);
  - data files: one parquet, JSON / JSON-lines or arrow file (its split is its name when that is a split
    name, test.parquet; otherwise train), or a folder of them named by split as datasets expects
    (train-00000-of-00001.parquet, validation.jsonl, test.arrow, ...).

Layouts known by name (--layout, or the last part of DATASET's name):
  conll2012_ontonotesv5   pos, ner, predicate   a row is a document: sentences of words, pos_tags,
                                                named_entities, predicate_framenet_ids (a predicate is a
                                                word with a PropBank frameset, as in the ontonotes command)
  conll2003               pos, chunking, ner    tokens, pos_tags, chunk_tags, ner_tags
  conll2000               pos, chunking         tokens, pos_tags, chunk_tags (no dev split: --dev_from_train)
  wnut_17                 ner                   tokens, ner_tags
  universal_dependencies  upos, xpos            tokens, upos, xpos (--config: the treebank, e.g. en_ewt)
Any other dataset, one row a sentence: --tokens_column COLUMN --task_columns TASK=COLUMN [TASK=COLUMN ...].

Sentence-level datasets (one label per row: a class-label, string or integer column) give sentence-level
task files ({split}_{task}.tsv). The text columns are found by name, first match wins:
  premise, hypothesis     (MNLI, SNLI, ...)       sentence1, sentence2   (MRPC, RTE, ...)
  question1, question2    (QQP)                   sentence               (SST-2, CoLA, ...)
  text                    (AG News, IMDB, ...)
with the label column `label` and the task named after DATASET; --task_columns TASK=COLUMN [...] names
the task(s) and their label columns, --text_columns COLUMN [COLUMN] the text column(s) of any other layout.

Class-label columns are written as their label names, string columns as they are. Splits: train -> train,
validation (or dev, valid) -> dev, test -> test; --splits changes this.
"""

import os
import sys
from dataclasses import dataclass, field

from tqdm import tqdm

from tawt.data.conll_io import ONTONOTES_TASKS, SPLITS, LabelledText, TaggedSentence, predicate_label
from tawt.errors import UsageError
from utils_cross_task import TaskDataError


@dataclass(frozen=True)
class Layout:
    tasks: dict  # task -> the column of its labels (in a sentence)
    tokens: str = "tokens"
    sentences: str = None  # a row is a document holding this list of sentences; None: a row is a sentence
    derived: dict = field(default_factory=dict)  # task -> function of the column's raw value -> label


LAYOUTS = {
    "conll2012_ontonotesv5": Layout(
        dict(zip(ONTONOTES_TASKS, ("pos_tags", "named_entities", "predicate_framenet_ids"))), tokens="words",
        sentences="sentences", derived={"predicate": predicate_label},
    ),
    "conll2003": Layout({"pos": "pos_tags", "chunking": "chunk_tags", "ner": "ner_tags"}),
    "conll2000": Layout({"pos": "pos_tags", "chunking": "chunk_tags"}),
    "wnut_17": Layout({"ner": "ner_tags"}),
    "universal_dependencies": Layout({"upos": "upos", "xpos": "xpos"}),
}
DEFAULT_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid", "development"), "test": ("test",)}
DATA_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
WHITESPACE = " \t\n\r\v\f"  # what separates the columns of a task file


def add_arguments(command):
    command.add_argument("dataset", metavar="DATASET",
                         help="a hub name (online), a save_to_disk directory, or parquet/JSON/arrow files")
    command.add_argument("--config", help="the dataset's configuration on the hub (english_v4, english_v12, en_ewt...)")
    command.add_argument("--revision", help="the hub revision, e.g. refs/convert/parquet for a dataset whose loading "
                                            "script datasets 4 and later no longer run")
    command.add_argument("--layout", choices=sorted(LAYOUTS), help="the layout (default: by DATASET's name)")
    command.add_argument("--tasks", nargs="+", metavar="TASK", help="only these of the layout's tasks")
    command.add_argument("--tokens_column", help="the column of the words (default: the layout's, else 'tokens')")
    command.add_argument("--task_columns", nargs="+", metavar="TASK=COLUMN",
                         help="a dataset of no known layout: each task and the column of its labels")
    command.add_argument("--text_columns", nargs="+", metavar="COLUMN",
                         help="a sentence-level dataset: its text column, or the two of a pair (default: found by "
                              "name, see above)")
    command.add_argument("--splits", nargs="+", metavar="SPLIT=NAME",
                         help="which of the dataset's splits become train, dev and test, e.g. dev=validation "
                              "(default: train, validation/dev, test)")


def import_datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError("the hf command needs the datasets package: pip install datasets (tested with 5.2.0); "
                         "the other commands do without it") from None
    return datasets


def read_dataset(args):
    """(tasks, {split: [TaggedSentence]}, {split: where it came from}) of the dataset the command names."""
    datasets = import_datasets()
    splits = load_splits(datasets, args)
    columns = sorted(next(iter(splits.values())).column_names)
    sentence_layout = choose_sentence_layout(args, next(iter(splits.values())).features)
    if sentence_layout is not None:
        return read_sentence_dataset(args, splits, *sentence_layout)
    layout, tasks = choose_layout(args, columns)
    sentences, sources = {}, {}
    for ours, theirs in split_mapping(args.splits, list(splits)).items():
        sentences[ours] = read_split(splits[theirs], f"{args.dataset} split {theirs}", layout, tasks)
        sources[ours] = f"{args.dataset} split {theirs}"
    return tasks, sentences, sources


def load_splits(datasets, args):
    """{the dataset's split name: Dataset}."""
    path = args.dataset
    local = os.path.exists(path)
    if local and (args.config or args.revision):
        raise UsageError(f"{path} is on disk: --config and --revision choose what to load from the hub; leave them "
                         "out (a saved dataset holds one configuration)")
    try:
        if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name))
                                       for name in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(path)
        elif os.path.isdir(path):
            loaded = datasets.load_dataset(path)
        elif os.path.isfile(path):
            stem, extension = os.path.splitext(os.path.basename(path))
            if extension not in DATA_FILE_BUILDERS:
                raise UsageError(f"{path}: not a parquet, JSON (.json, .jsonl) or arrow file; give one of those, a "
                                 "save_to_disk directory or a hub name")
            split = stem if any(stem in names for names in DEFAULT_SPLITS.values()) else "train"
            loaded = datasets.load_dataset(DATA_FILE_BUILDERS[extension], data_files={split: path})
        else:
            loaded = datasets.load_dataset(path, args.config, revision=args.revision)
    except UsageError:
        raise
    except Exception as error:  # datasets raises many kinds; the first line says what went wrong
        problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if local:
            raise UsageError(f"{path}: cannot be read as a dataset ({problem}); give a save_to_disk directory or "
                             "parquet/JSON/arrow files") from None
        raise UsageError(
            f"{path}: cannot be loaded from the Hugging Face hub ({problem}). Online: check the name and --config "
            "(a dataset with a loading script may load with --revision refs/convert/parquet). Offline: save it with "
            "save_to_disk where the hub can be reached, and give that directory"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = {"train": loaded}
    return dict(loaded)


def choose_layout(args, columns):
    """(Layout, tasks to write) from --task_columns, or --layout / DATASET's name."""
    if args.task_columns:
        if args.layout or args.tasks:
            raise UsageError("--task_columns names every task's column itself: leave out --layout and --tasks")
        task_columns = task_columns_from_arguments(args.task_columns)
        return Layout(task_columns, tokens=args.tokens_column or "tokens"), list(task_columns)
    name = args.layout or os.path.basename(os.path.normpath(args.dataset)).lower()
    if name not in LAYOUTS:
        raise UsageError(
            f"{args.dataset}: no known layout by that name ({', '.join(sorted(LAYOUTS))}); give --layout NAME, or "
            f"name the columns: --tokens_column COLUMN --task_columns TASK=COLUMN ... (its columns: "
            f"{', '.join(columns)})"
        )
    layout = LAYOUTS[name]
    if args.tokens_column:
        layout = Layout(layout.tasks, args.tokens_column, layout.sentences, layout.derived)
    tasks = list(args.tasks or layout.tasks)
    unknown = [task for task in tasks if task not in layout.tasks]
    if unknown:
        raise UsageError(f"--tasks {' '.join(unknown)}: the {name} layout has {', '.join(layout.tasks)}")
    return layout, tasks


def split_mapping(requested, available):
    """{train/dev/test: the dataset's split}, from --splits or the usual names; says which splits are left."""
    mapping = {}
    if requested:
        for pair in requested:
            ours, equals, theirs = pair.partition("=")
            if not equals or ours not in SPLITS:
                raise UsageError(f"--splits {pair}: give SPLIT=NAME with SPLIT one of {', '.join(SPLITS)}, e.g. "
                                 "dev=validation")
            if theirs not in available:
                raise UsageError(f"--splits {pair}: the dataset has no split {theirs!r} (it has "
                                 f"{', '.join(available)})")
            mapping[ours] = theirs
    else:
        for ours, names in DEFAULT_SPLITS.items():
            found = [name for name in names if name in available]
            if found:
                mapping[ours] = found[0]
    if not mapping:
        raise UsageError(f"none of the dataset's splits ({', '.join(available)}) is train, validation or test; "
                         "map them with --splits, e.g. train=NAME")
    left = [name for name in available if name not in mapping.values()]
    if left:
        print(f"not converted: split{'s' if len(left) > 1 else ''} {', '.join(left)} (--splits maps a split)",
              file=sys.stderr)
    return mapping


def inner_feature(feature):
    """The feature of a list column's items (List, Sequence, LargeList, or a plain Python list of one)."""
    if isinstance(feature, list):
        return feature[0]
    return getattr(feature, "feature", None)


def column_kinds(features, layout, tasks, where):
    """For the tokens and each task column: the class-label names (a list), or None for a string column."""
    from datasets import ClassLabel, Value

    def item_feature(column):
        if column not in features:
            raise UsageError(f"{where}: no column {column!r} (its columns: {', '.join(sorted(features))}); name "
                             "the columns with --tokens_column and --task_columns, or choose another --layout")
        item = inner_feature(features[column])
        if item is None:
            raise UsageError(f"{where}: column {column!r} is {features[column]}, not a list with one item per word")
        return item

    kinds = {}
    for key, column in [("tokens", layout.tokens)] + [(task, layout.tasks[task]) for task in tasks]:
        item = item_feature(column)
        if isinstance(item, ClassLabel) and key != "tokens":
            kinds[key] = list(item.names)
        elif isinstance(item, Value) and item.dtype in ("string", "large_string"):
            kinds[key] = None
        else:
            raise UsageError(
                f"{where}: column {column!r} holds {item}, not class labels or strings"
                + (" (integers without label names: a JSON copy loses them; use the parquet files or a "
                   "save_to_disk directory, which keep the class-label names)" if isinstance(item, Value) else "")
            )
    return kinds


def read_split(dataset, where, layout, tasks):
    """Every sentence of one split, checked: one label per word, class-label ids within the names."""
    if layout.sentences is not None:
        if layout.sentences not in dataset.features:
            raise UsageError(f"{where}: no column {layout.sentences!r} of sentences (its columns: "
                             f"{', '.join(dataset.column_names)}); is it this layout?")
        features = inner_feature(dataset.features[layout.sentences])
        wanted = [layout.sentences] + [name for name in ("document_id",) if name in dataset.features]
    else:
        features = dataset.features
        wanted = list(dict.fromkeys([layout.tokens] + [layout.tasks[task] for task in tasks]))
    kinds = column_kinds(features, layout, tasks, where)
    sentences, skipped = [], 0
    rows = dataset.select_columns(wanted)
    for row_number, row in enumerate(tqdm(rows, desc=f"reading {where}", unit="row", leave=False)):
        if layout.sentences is None:
            parts = [(f"{where}, row {row_number}", row)]
        else:
            document = f" (document {row['document_id']})" if "document_id" in row else ""
            parts = [(f"{where}, row {row_number}{document}, sentence {number}", sentence)
                     for number, sentence in enumerate(row[layout.sentences] or [])]
        for place, sentence in parts:
            converted = tagged_sentence(sentence, place, layout, tasks, kinds)
            if converted is None:
                skipped += 1
            else:
                sentences.append(converted)
    if skipped:
        print(f"{where}: skipped {skipped} empty or -DOCSTART- sentence{'s' if skipped > 1 else ''}", file=sys.stderr)
    return sentences


def _fail(place, column, problem, fix):
    raise TaskDataError(f"{place}, column {column}: {problem}; {fix}")


def tagged_sentence(sentence, place, layout, tasks, kinds):
    """One sentence's words and labels; None for an empty one or a -DOCSTART- marker."""
    words = sentence[layout.tokens]
    if not words or words[0] == "-DOCSTART-":
        return None
    for number, word in enumerate(words):
        if not isinstance(word, str) or not word or any(c in word for c in WHITESPACE):
            _fail(place, layout.tokens, f"word {number} is {word!r}",
                  "a task file's word is one non-empty string without spaces or tabs: fix the row")
    labels = {}
    for task in tasks:
        column, names = layout.tasks[task], kinds[task]
        values = sentence[column]
        if values is None or len(values) != len(words):
            _fail(place, column, f"{0 if values is None else len(values)} labels for {len(words)} words",
                  "every word needs one label: fix the row")
        task_labels = []
        for number, value in enumerate(values):
            if names is not None:
                if not isinstance(value, int) or not 0 <= value < len(names):
                    missing = " (-1 marks a missing label: a split without gold labels)" if value == -1 else ""
                    _fail(place, column, f"word {number} has class label {value}{missing}, outside the column's "
                          f"{len(names)} names (0 to {len(names) - 1})",
                          "fix the row or the column's class-label names, or leave the split out (--splits)")
                value = names[value]
            if task in layout.derived:
                value = layout.derived[task](value)
            if not isinstance(value, str) or not value or any(c in value for c in WHITESPACE):
                _fail(place, column, f"word {number} has the label {value!r}",
                      "a label is one non-empty string without spaces: fix the row, or leave the task out (--tasks)")
            task_labels.append(value)
        labels[task] = task_labels
    return TaggedSentence(list(words), labels)


# ---------------------------------------------------------------------------------------------------------
# Sentence-level datasets: one label per row

# The text columns of common hub datasets, tried in this order; their label column is `label`.
SENTENCE_TEXT_COLUMNS = (("premise", "hypothesis"), ("sentence1", "sentence2"), ("question1", "question2"),
                         ("sentence",), ("text",))
SENTENCE_LABEL_COLUMN = "label"


def task_columns_from_arguments(pairs):
    """{task: column} from --task_columns TASK=COLUMN ..., checked."""
    task_columns = {}
    for pair in pairs:
        task, equals, column = pair.partition("=")
        if not equals or not task or not column or "/" in task or any(c in task for c in WHITESPACE):
            raise UsageError(f"--task_columns {pair}: give TASK=COLUMN, e.g. ner=ner_tags (the task names the "
                             "files train_TASK.txt...)")
        if task in task_columns:
            raise UsageError(f"--task_columns names the task {task} twice; name each task once")
        task_columns[task] = column
    return task_columns


def default_task_name(dataset):
    """A task name from DATASET: its last path part without a file extension, in safe characters."""
    name = os.path.splitext(os.path.basename(os.path.normpath(dataset)))[0].lower()
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "task"


def choose_sentence_layout(args, features):
    """(text columns, {task: label column}) when the dataset is sentence-level, else None (a tagging one).

    A dataset is sentence-level when --text_columns is given, or when its label columns (--task_columns',
    or `label` for a dataset of no tagging layout) hold one value per row rather than a list per word.
    """
    if args.tokens_column or args.layout or (not args.task_columns and not args.text_columns
                                             and default_task_name(args.dataset) in LAYOUTS):
        if args.text_columns:
            raise UsageError("--text_columns is for a sentence-level dataset: leave out --tokens_column and --layout")
        return None
    if args.task_columns:
        task_columns = task_columns_from_arguments(args.task_columns)
    else:
        task_columns = {default_task_name(args.dataset): SENTENCE_LABEL_COLUMN}
    scalar = [column for column in task_columns.values() if column in features
              and inner_feature(features[column]) is None]
    if not args.text_columns and len(scalar) < len(task_columns):
        return None  # label lists: a tagging dataset (choose_layout says what is missing)
    if args.text_columns:
        text_columns = tuple(args.text_columns)
        if len(text_columns) > 2:
            raise UsageError(f"--text_columns {' '.join(text_columns)}: give one text column, or the two of a pair")
    else:
        found = [columns for columns in SENTENCE_TEXT_COLUMNS if all(column in features for column in columns)]
        if not found:
            raise UsageError(f"{args.dataset}: one label per row, but none of the known text columns ("
                             f"{', '.join('/'.join(columns) for columns in SENTENCE_TEXT_COLUMNS)}) is there (its "
                             f"columns: {', '.join(sorted(features))}); name them with --text_columns COLUMN [COLUMN]")
        text_columns = found[0]
    if args.tasks:
        raise UsageError("--tasks chooses among a tagging layout's tasks; name a sentence-level dataset's tasks "
                         "with --task_columns TASK=COLUMN")
    return text_columns, task_columns


def sentence_label_names(features, column, where):
    """The class-label names of a label column, or None for a string or integer column."""
    from datasets import ClassLabel, Value

    if column not in features:
        raise UsageError(f"{where}: no column {column!r} (its columns: {', '.join(sorted(features))}); name the "
                         "label column with --task_columns TASK=COLUMN")
    feature = features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, Value) and (feature.dtype in ("string", "large_string") or feature.dtype.startswith(
            ("int", "uint"))):
        return None
    raise UsageError(f"{where}: column {column!r} is {feature}, not one class label, string or integer per row")


def read_sentence_dataset(args, splits, text_columns, task_columns):
    """(tasks, {split: [LabelledText]}, sources) of a sentence-level dataset, every row checked."""
    from datasets import Value

    examples, sources = {}, {}
    for ours, theirs in split_mapping(args.splits, list(splits)).items():
        where = f"{args.dataset} split {theirs}"
        dataset = splits[theirs]
        for column in text_columns:
            feature = dataset.features.get(column)
            if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
                problem = "no such column" if feature is None else f"it is {feature}"
                raise UsageError(f"{where}: text column {column!r}: {problem} (its columns: "
                                 f"{', '.join(sorted(dataset.features))}); name the text columns with --text_columns")
        names = {task: sentence_label_names(dataset.features, column, where) for task, column in task_columns.items()}
        rows = dataset.select_columns(list(dict.fromkeys([*text_columns, *task_columns.values()])))
        split_examples = []
        for row_number, row in enumerate(tqdm(rows, desc=f"reading {where}", unit="row", leave=False)):
            place = f"{where}, row {row_number}"
            texts = [one_line_text(row[column], place, column) for column in text_columns]
            labels = {task: [row_label(row[column], names[task], place, column)]
                      for task, column in task_columns.items()}
            split_examples.append(LabelledText(texts, labels))
        examples[ours], sources[ours] = split_examples, where
    return list(task_columns), examples, sources


def one_line_text(text, place, column):
    """A text as one line of a task file: its runs of spaces, tabs and line breaks made one space each."""
    if not isinstance(text, str) or not text.split():
        _fail(place, column, f"the text is {text!r}", "every example needs a non-empty text: fix or drop the row")
    return " ".join(text.split())


def row_label(value, names, place, column):
    """A row's label as written to the task file: the class-label name, or the string or integer itself."""
    if names is not None:
        if not isinstance(value, int) or not 0 <= value < len(names):
            missing = " (-1 marks a missing label: a split without gold labels, as GLUE's test splits)" if value == -1 else ""
            _fail(place, column, f"class label {value}{missing}, outside the column's {len(names)} names",
                  "leave the split out (--splits train=train dev=validation), or fix the row")
        value = names[value]
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(value, str) or not value or any(c in value for c in WHITESPACE):
        _fail(place, column, f"the label is {value!r}", "a label is one non-empty string without spaces: fix the row")
    return value
