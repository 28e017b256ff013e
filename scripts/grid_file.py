"""Grid files: an experiment grid as a small TOML file, read into a Grid (format: docs/grid_files.md).

scripts/grids/<name>.toml are the presets (`GRID=<name> sh scripts/run_experiments.sh`); a copy of one, edited,
is a grid of one's own tasks (`GRID_FILE=my_grid.toml sh scripts/run_experiments.sh`). A file that cannot make
a grid is refused with one line naming the file, the key and the fix.
"""

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
PRESETS_DIR = os.path.join(SCRIPTS_DIR, "grids")
FORMAT_DOC = "docs/grid_files.md"

# The paper's sections: what a grid runs when it names no others.
PAPER_SECTIONS = ("main", "normalized", "baselines", "analysis", "final_weights")
# Every section, in the order they run: the controls of what TAWT's gain is made of (GRID=large) come after
# the paper's, and final_weights last.
SECTIONS = ("main", "normalized", "baselines", "analysis", "ablation", "gcs_du", "more_seeds", "noise_source",
            "forkmerge", "final_weights")
# The METHODs of scripts/run_target_aware_baseline_multi.sh, run by the baselines section.
BASELINE_METHODS = ("gcs", "gcs_weighted", "olaux")
# [training]'s keys and the variables of scripts/common.sh they set, in the order every job's command lists them.
TRAINING_VARIABLES = {"max_length": "MAX_LENGTH", "batch_size": "BATCH_SIZE", "num_epochs": "NUM_EPOCHS",
                      "gradient_sampling_batch_size": "GRADIENT_SAMPLING_BATCH_SIZE", "extra_args": "EXTRA_ARGS",
                      "target_gradient_steps": "TARGET_GRADIENT_STEPS"}
SPLITS = ("train", "dev", "test")


class GridError(ValueError):
    """A setting that cannot make a grid; the message names the variable (or the file and key) and the fix."""


@dataclass
class MainTaskSetting:
    sources: list
    train_size: int  # n_main: the main task's training sentences
    normalized_weights: list = None  # sources..., main; None: the script computes 1/size weights
    inv_constants: list = None  # weighted pre-training's for this main task; None: the grid's


@dataclass
class Grid:
    main_tasks: dict  # main task -> MainTaskSetting, in the order the jobs are queued
    inv_constants: list  # weighted pre-training's
    training: dict  # MAX_LENGTH, BATCH_SIZE, NUM_EPOCHS, GRADIENT_SAMPLING_BATCH_SIZE, EXTRA_ARGS, ... of every run
    analysis_main_task: str = None  # None: the analysis section has nothing to run
    analysis_sources: list = field(default_factory=list)
    analysis_settings: list = field(default_factory=list)  # (n_main, ratio) of the ratio and size analyses
    # the analysis' single-task sizes, besides n_main * (1 + sources * ratio)
    single_task_sizes: list = field(default_factory=list)
    data_slice: dict = None  # sentences kept per split ({"train": 400, ...}) of the embedded default data
    description: str = ""
    sections: tuple = PAPER_SECTIONS  # what runs when no section is named
    inv_constant_sweep: list = field(default_factory=list)  # weighted pre-training's, run with the first seed only
    note: str = ""  # printed with the summary and written into table1.md
    seeds: tuple = ("1",)  # the seeds when SEEDS is not set
    baselines: tuple = BASELINE_METHODS  # the target-aware baselines of the baselines section
    script_args: dict = field(default_factory=dict)  # script -> flags its runs add to EXTRA_ARGS
    summary_args: list = field(default_factory=list)  # flags of testing/collect_results.py for the summary
    original_optimizer_rows: bool = False  # joint and weighted joint also with the original's optimizer
    random_train_slice: bool = False  # data_slice's training sentences drawn at random, not the first ones
    more_seeds: tuple = ()  # the more_seeds section's seeds, beside `seeds`
    data_dir: str = ""  # the task files' folder the file names ("": DATA_DIR, WORKING_DIR/data or the default)
    bert_model: str = ""  # the encoder the file names ("": BERT_MODEL or the default)
    source_file: str = ""  # the grid file this grid was read from


def preset_names():
    """The presets GRID may name: the files of scripts/grids/."""
    return sorted(name[:-len(".toml")] for name in os.listdir(PRESETS_DIR) if name.endswith(".toml"))


@cache
def preset_grid(name):
    """The preset scripts/grids/<name>.toml (read once; callers copy it before changing it)."""
    return read_grid_file(os.path.join(PRESETS_DIR, f"{name}.toml"))


def paradigm_scripts():
    """The paradigm scripts a grid's jobs run, which [script_args] may name."""
    return sorted(name for name in os.listdir(SCRIPTS_DIR)
                  if name.startswith("run_") and name.endswith(".sh") and name != "run_experiments.sh")


# ---------------------------------------------------------------------------------------------------------
# The values a key may hold: each a test, what it is in words, and an example.


def _is_whole(value, least=1):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_number(value, positive=True):
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value > 0 if positive else value >= 0))


def _is_task_name(value):
    # a task name is part of its files' names: {split}_{task}.txt
    return isinstance(value, str) and value != "" and not any(character.isspace() or character in "/\\"
                                                              for character in value)


def _list_of(test):
    return lambda value: isinstance(value, list) and all(test(item) for item in value)


TEXT = (lambda value: isinstance(value, str), "a text in quotes", '"..."')
FLAG = (lambda value: isinstance(value, bool), "true or false", "true")
WHOLE = (_is_whole, "a whole number >= 1", "100")
WHOLES = (_list_of(_is_whole), "a list of whole numbers >= 1", "[500, 1000]")
SEED_LIST = (_list_of(lambda value: _is_whole(value, least=0)), "a list of whole numbers", "[1, 2, 3]")
POSITIVES = (_list_of(_is_number), "a list of positive numbers", "[1, 10]")
WEIGHTS = (_list_of(lambda value: _is_number(value, positive=False)), "a list of numbers >= 0",
           "[0.05, 0.05, 0.9]")
TASKS = (_list_of(_is_task_name), "a list of task names (no spaces or slashes)", '["pos", "chunking"]')
TASK = (_is_task_name, "a task name (no spaces or slashes)", '"ner"')
FLAGS = (_list_of(lambda value: isinstance(value, str)), "a list of texts", '["--learning_rate", "5e-4"]')
SECTION_LIST = (_list_of(lambda value: value in SECTIONS), f"a list of sections out of {', '.join(SECTIONS)}",
                '["main", "normalized"]')
BASELINE_LIST = (_list_of(lambda value: value in BASELINE_METHODS),
                 f"a list out of {', '.join(BASELINE_METHODS)} (or [])", '["gcs", "olaux"]')
PAIRS = (_list_of(lambda value: isinstance(value, list) and len(value) == 2 and _is_whole(value[0])
                  and _is_number(value[1])),
         "a list of [n_main, ratio] pairs", "[[500, 1], [500, 4]]")
TABLE = (lambda value: isinstance(value, dict), "a table", None)

TOP_LEVEL_KEYS = {
    "description": TEXT, "data_dir": TEXT, "sections": SECTION_LIST, "seeds": SEED_LIST, "more_seeds": SEED_LIST,
    "inv_constants": POSITIVES, "inv_constant_sweep": POSITIVES, "baselines": BASELINE_LIST,
    "original_optimizer_rows": FLAG, "training": TABLE, "data_slice": TABLE, "script_args": TABLE,
    "summary": TABLE, "main_tasks": TABLE, "analysis": TABLE,
}
TRAINING_KEYS = {**{key: WHOLE for key in TRAINING_VARIABLES}, "extra_args": TEXT, "bert_model": TEXT}
DATA_SLICE_KEYS = {**{split: WHOLE for split in SPLITS}, "random_train": FLAG}
SUMMARY_KEYS = {"args": FLAGS, "note": TEXT}
MAIN_TASK_KEYS = {"sources": TASKS, "train_size": WHOLE, "normalized_weights": WEIGHTS, "inv_constants": POSITIVES}
ANALYSIS_KEYS = {"main_task": TASK, "sources": TASKS, "n_main_ratio": PAIRS, "single_task_sizes": WHOLES}


class _GridFileReader:
    """Takes a grid file's tables apart key by key; the first key that cannot make a grid ends it."""

    def __init__(self, path):
        self.path = path

    def fail(self, key, problem, fix):
        raise GridError(f"{self.path}: {key}: {problem}; {fix} ({FORMAT_DOC})")

    def table(self, values, known, where=""):
        """`values` once every key is one of `known` and holds what it should."""
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.fail(where + key, "unknown key", f"{hint}the keys here are {', '.join(known)}")
            test, what, example = known[key]
            if not test(value):
                fix = (f"write [{where}{key}] on a line of its own, its keys below it" if known[key] is TABLE
                       else f"write e.g. {key} = {example}")
                self.fail(where + key, f"{value!r} is not {what}", fix)
        return values

    def required(self, values, key, where, why, fix):
        if key not in values:
            self.fail(where + key, f"missing ({why})", fix)
        return values[key]

    def not_empty(self, values, key, where, why):
        if key in values and not values[key]:
            self.fail(where + key, "is empty", f"give {why}")

    def grid(self, document):
        top = self.table(document, TOP_LEVEL_KEYS)
        training = self.table(top.get("training", {}), TRAINING_KEYS, "training.")
        data_slice = self.table(top.get("data_slice", {}), DATA_SLICE_KEYS, "data_slice.")
        summary = self.table(top.get("summary", {}), SUMMARY_KEYS, "summary.")
        for script, flags in top.get("script_args", {}).items():
            if script not in paradigm_scripts():
                self.fail(f"script_args.{script}", "not a paradigm script of scripts/",
                          f"name one of {', '.join(paradigm_scripts())}")
            self.table({script: flags}, {script: FLAGS}, "script_args.")
        for key, why in (("seeds", "at least one seed"), ("sections", "at least one section"),
                         ("inv_constants", "at least one inv_constant of weighted pre-training")):
            self.not_empty(top, key, "", why)
        missing_splits = [split for split in SPLITS if split not in data_slice]
        if data_slice and missing_splits:
            self.fail(f"data_slice.{missing_splits[0]}", "missing",
                      "give the sentences kept of each of train, dev and test, e.g. train = 200")

        analysis = top.get("analysis")
        if analysis is not None:
            self.table(analysis, ANALYSIS_KEYS, "analysis.")
            self.required(analysis, "main_task", "analysis.", "the analysis' main task", 'add main_task = "ner"')
            self.required(analysis, "sources", "analysis.", "the analysis' sources", 'add sources = ["pos"]')
            self.not_empty(analysis, "sources", "analysis.", "at least one source")
        sections = tuple(top.get("sections") or [section for section in PAPER_SECTIONS
                                                 if section != "analysis" or analysis is not None])
        if "analysis" in sections and analysis is None:
            self.fail("sections", "names analysis, but the file has no [analysis] table",
                      "add one, or remove analysis from sections")

        main_tasks = {}
        add_one = 'add a table per main task, e.g. [main_tasks.ner] with sources = ["pos"] and train_size = 500'
        tables = self.required(top, "main_tasks", "", "the grid's main tasks", add_one)
        if not tables:
            self.fail("main_tasks", "no main task", add_one)
        for main_task, values in tables.items():
            where = f"main_tasks.{main_task}."
            if not _is_task_name(main_task):
                self.fail(f"main_tasks.{main_task!r}", "not a task name",
                          "name the task as its files are named, {split}_<task>.txt, without spaces or slashes")
            if not isinstance(values, dict):
                self.fail(f"main_tasks.{main_task}", "not a table",
                          f"write [main_tasks.{main_task}] with sources and train_size below it")
            self.table(values, MAIN_TASK_KEYS, where)
            sources = self.required(values, "sources", where, "the tasks it learns from", 'add sources = ["pos"]')
            train_size = self.required(values, "train_size", where, "its training sentences", "add train_size = 500")
            self.not_empty(values, "sources", where, "at least one source task")
            if main_task in sources:
                self.fail(where + "sources", f"names the main task {main_task} itself", "name only its sources")
            repeated = [source for position, source in enumerate(sources) if source in sources[:position]]
            if repeated:
                self.fail(where + "sources", f"names {repeated[0]} twice", "name each source once")
            weights = values.get("normalized_weights")
            if weights is not None and len(weights) != len(sources) + 1:
                self.fail(where + "normalized_weights", f"{len(weights)} weights for {len(sources)} sources and "
                          "the main task", f"give {len(sources) + 1}: one per source, then the main task's, or "
                          "leave the key out (weights from the sizes)")
            self.not_empty(values, "inv_constants", where, "at least one inv_constant, or leave the key out")
            main_tasks[main_task] = MainTaskSetting(list(sources), train_size, weights,
                                                    _once_each(values.get("inv_constants")))

        folder = os.path.dirname(self.path)
        data_dir = top.get("data_dir", "")
        bert_model = training.get("bert_model", "")
        if bert_model and os.path.exists(os.path.join(folder, os.path.expanduser(bert_model))):
            bert_model = os.path.join(folder, os.path.expanduser(bert_model))  # a folder beside the grid file
        return Grid(
            main_tasks=main_tasks,
            inv_constants=_once_each(top.get("inv_constants", [1])),
            training={variable: str(training[key]) for key, variable in TRAINING_VARIABLES.items() if key in training},
            analysis_main_task=analysis and analysis["main_task"],
            analysis_sources=list(analysis["sources"]) if analysis else [],
            analysis_settings=[tuple(pair) for pair in analysis.get("n_main_ratio", [])] if analysis else [],
            single_task_sizes=list(analysis.get("single_task_sizes", [])) if analysis else [],
            data_slice={split: data_slice[split] for split in SPLITS} if data_slice else None,
            description=top.get("description") or f"the grid of {os.path.basename(self.path)}",
            sections=sections,
            inv_constant_sweep=_once_each(top.get("inv_constant_sweep", [])),
            note=summary.get("note", ""),
            seeds=tuple(str(seed) for seed in dict.fromkeys(top.get("seeds", [1]))),
            baselines=tuple(top.get("baselines", BASELINE_METHODS)),
            script_args={script: list(flags) for script, flags in top.get("script_args", {}).items()},
            summary_args=list(summary.get("args", [])),
            original_optimizer_rows=top.get("original_optimizer_rows", False),
            random_train_slice=data_slice.get("random_train", False),
            more_seeds=tuple(str(seed) for seed in dict.fromkeys(top.get("more_seeds", []))),
            data_dir=os.path.normpath(os.path.join(folder, os.path.expanduser(data_dir))) if data_dir else "",
            bert_model=bert_model,
            source_file=self.path,
        )


def _once_each(numbers):
    """`numbers` with a value given twice in two spellings (10 and 10.0) kept once: one run, not two."""
    if numbers is None:
        return None
    seen = {}
    for number in numbers:
        seen.setdefault(float(number), number)
    return list(seen.values())


def read_grid_file(path):
    """The Grid of the TOML file at `path`; a GridError naming the file, the key and the fix if it makes none."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise GridError(f"{path}: no such grid file; give the path of a grid file, e.g. a copy of "
                        f"scripts/grids/medium.toml ({FORMAT_DOC})") from None
    except IsADirectoryError:
        raise GridError(f"{path}: a folder, not a grid file; give the path of a .toml file") from None
    except tomllib.TOMLDecodeError as error:
        raise GridError(f"{path}: not valid TOML ({error}); fix the line it names ({FORMAT_DOC})") from None
    except UnicodeDecodeError as error:
        raise GridError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None
    return _GridFileReader(path).grid(document)
