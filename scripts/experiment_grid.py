"""An experiment grid as jobs of scripts/job_queue.py; `sh scripts/run_experiments.sh` runs it.

A grid is a TOML file (docs/grid_files.md): its main tasks, each with its sources and size, its sections,
seeds, training settings and summary options. GRID=<name> runs a preset, scripts/grids/<name>.toml;
GRID_FILE=my_grid.toml runs one's own (a copy of a preset, edited).

Every job is one of the paradigm scripts of scripts/ with its positional arguments, e.g.
`SEED=1 OUTPUT_DIR=outputs/main/joint/ner/seed_1 sh scripts/run_joint_training_multi.sh pos chunking predicate ner 500`;
`--list` prints them all without running anything.

Sections (run in this order; final_weights after the others, since it reads their learned weights):
  main           per main task: single-task, joint, weighted joint, pre-training, weighted pre-training for
                 every inv_constant
  normalized     per main task: normalized joint and weighted normalized joint training
  baselines      per main task: the target-aware baselines GCS, weighted GCS and OL-AUX in joint training
                 (tawt/target_aware_baselines.py), beside joint and weighted joint training; GCS with
                 --gcs_variant gated (a source step applies the gated source gradient alone)
  analysis       main task ner, sources pos predicate (the reduced grid: pos from chunking predicate): the
                 ratio analysis, the main-task-size analysis, and single-task runs of the main task with the
                 same sizes and with as many sentences as main task plus sources
  ablation       per main task: weighted joint and weighted normalized joint training with
                 --ablate_source_cosines (every source's cosine taken as 0), beside their TAWT runs
  gcs_du         per main task: GCS and weighted GCS as Du et al. define them (--gcs_variant du: every update
                 is the main task's gradient plus the gated source gradient), the main task's gradient fresh
                 at every step from a batch of BATCH_SIZE sentences
  more_seeds     the grid's further seeds (GRID=large: 4 and 5) of single-task, joint, weighted joint,
                 normalized joint, weighted normalized joint and the ablation rows
  noise_source   per main task: joint and weighted joint training with --noise_source (the first source's
                 labels permuted across its words, trained as one more source)
  forkmerge      per main task: ForkMerge (Jiang et al. 2023; tawt/forkmerge.py) in joint training, its branches
                 target and all merged once per epoch by the main task's dev score
  final_weights  the weighted runs re-run with their final weights held fixed (the mean over the seeds of
                 the weights in effect during the last epoch, the entry before the last of task_weights.json): weighted joint -> joint with fixed weights, weighted
                 pre-training -> pre-training with fixed weights, weighted normalized joint -> joint with
                 fixed weights. A re-run whose weighted runs have not finished is skipped with a message.

Output tree (OUTPUT_ROOT: $WORKING_DIR/outputs, or ./outputs with the embedded default data):
  main/<single_task|joint|weighted_joint|pretraining|weighted_pretraining_ic<k>>/<main task>/seed_<seed>/
  normalized/<normalized_joint|weighted_normalized_joint>/<main task>/seed_<seed>/
  baselines/<joint_gcs|joint_gcs_weighted|joint_olaux|joint_gcs_du|joint_gcs_weighted_du|joint_forkmerge>/
      <main task>/seed_<seed>/
  ablation/<weighted_joint_ablated|weighted_normalized_joint_ablated>/<main task>/seed_<seed>/
  noise_source/<joint|weighted_joint>_<first source>_noise/<main task>/seed_<seed>/
  final_weights/<joint_fixed_weights|pretraining_fixed_weights_ic<k>|normalized_joint_fixed_weights>/
      <main task>/seed_<seed>/
  analysis/<normalized_joint|weighted_normalized_joint>_n<n_main>_r<ratio>/<main task>/seed_<seed>/
  analysis/single_task_n<sentences>/<main task>/seed_<seed>/   (the main section's size: main/single_task)
  logs/<the run directory's path below OUTPUT_ROOT>.log         (the queue's log of each run)
  summary/                                (testing/collect_results.py: table1.md, plots; significance.csv)
  slurm/<date-time>/                      (with BACKEND=slurm: the job array's scripts, scripts/slurm_grid.py)

A job is skipped when its directory already holds `all_results.json`, the last file a run writes (a run
stopped after its main task's results but before its predictions is not done), so running the same command
again after an interruption (or with more SEEDS) runs only what is missing.

BACKEND=local (the default) runs the jobs here through scripts/job_queue.py; BACKEND=slurm submits those
not done as a Slurm job array, with the summary as a job after it (scripts/slurm_grid.py).

Without GRID or GRID_FILE: with WORKING_DIR, the paper's grid on $WORKING_DIR/data (bert-base-cased, 4 epochs,
length 128, batch 32); without, the reduced grid on a small slice of the embedded default data
(scripts/grids/reduced.toml), sized to finish in about 5 minutes on a 2-core CPU; its numbers show the
pipeline works, they are not the paper's.
"""

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tawt.output_files import ALL_RESULTS_FILE, TASK_WEIGHTS_FILE, holds_checkpoints, holds_results, write_text_atomic
from tawt.output_lock import DirectoryInUse, lock_directory
from tawt.scripts import slurm_grid
from tawt.scripts.grid_file import (SECTIONS, SPLITS, Grid, GridError, MainTaskSetting, preset_grid, preset_names,
                                    read_grid_file)
from tawt.scripts.job_queue import Job, detect_slots, run_jobs, say, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPTS_DIR = os.path.join(ROOT, "scripts")
# --ablate_source_cosines: TAWT's update with every source's cosine taken as 0 (weighted_training_basics.py).
ABLATION_FLAG = "--ablate_source_cosines"
GRID_SAVE_STEPS = 1000
# GCS as Du et al. define it (--gcs_variant du: every update holds the main task's gradient), in the gcs_du
# section; the baselines section runs GCS with --gcs_variant gated, as its archived runs were made.
GCS_METHODS = ("gcs", "gcs_weighted")
SCRIPT_BATCH_SIZE = "32"  # scripts/common.sh's BATCH_SIZE when neither the grid nor the user sets one
BACKENDS = ("local", "slurm")  # local: scripts/job_queue.py on this machine; slurm: scripts/slurm_grid.py


# What the original's optimizer did (docs/differences_from_the_original.md): gradients zeroed rather
# than cleared, so AdamW keeps stepping heads outside the batch, and transformers 2.8's AdamW step.
ORIGINAL_OPTIMIZER_FLAGS = ("--zero_grad_in_place", "--legacy_adamw")


@dataclass
class Settings:
    """What the environment chose: the grid, where the data and outputs are, and the shared script settings."""

    grid: Grid
    output_root: str
    data_dir: str
    seeds: list
    script_env: dict = field(default_factory=dict)  # DATA_DIR, BERT_MODEL, MAX_LENGTH, ... for every job
    embedded_data: bool = False  # data_dir is the embedded default data or the grid's slice of it


def words(environ, name):
    return environ.get(name, "").replace(",", " ").split()


# The script settings every run is given as a count; a bad one would fail every run of the grid alike.
WHOLE_NUMBER_SETTINGS = ("MAX_LENGTH", "BATCH_SIZE", "NUM_EPOCHS", "GRADIENT_SAMPLING_BATCH_SIZE")


def inv_constants_from(values):
    """INV_CONSTANTS' values, each a positive finite number, once each ("10 10.0" is one run, not two)."""
    seen = {}
    for value in values:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise GridError(f"INV_CONSTANTS: '{value}' is not a positive number; give e.g. INV_CONSTANTS=\"1 10\"")
        seen.setdefault(number, value)
    return list(seen.values())


def grid_from_environment(environ):
    """The grid GRID_FILE names, or the preset GRID names (default: paper with WORKING_DIR, else reduced)."""
    grid_file = environ.get("GRID_FILE", "").strip()
    grid_name = environ.get("GRID", "").strip()
    if grid_file and grid_name:
        raise GridError(f"GRID={grid_name} and GRID_FILE={grid_file}: give one of them (GRID names a preset of "
                        "scripts/grids/, GRID_FILE your own grid file)")
    if grid_file:
        return read_grid_file(grid_file)
    grid_name = grid_name or ("paper" if environ.get("WORKING_DIR", "").strip() else "reduced")
    if grid_name not in preset_names():
        raise GridError(f"GRID={grid_name}: no such grid; choose from {' '.join(preset_names())} (scripts/grids/), "
                        "or give your own file with GRID_FILE=my_grid.toml")
    return preset_grid(grid_name)


def chosen_main_tasks(grid, main_tasks, from_file):
    """The grid's main tasks cut to MAIN_TASKS. A preset also takes the paper's main tasks, with the paper's
    sources at the preset's size; a grid file only its own."""
    known = grid.main_tasks if from_file else {**preset_grid("paper").main_tasks, **grid.main_tasks}
    unknown = [task for task in main_tasks if task not in known]
    if unknown:
        where = f"the main tasks of {grid.source_file}" if from_file else "the grid"
        raise GridError(f"MAIN_TASKS: {' '.join(unknown)} not in {where}; choose from {' '.join(known)}")
    return {task: grid.main_tasks.get(task) or _reduced(known[task], grid) for task in main_tasks}


def settings_from_environment(environ=None, prepare_data=True, listing=False):
    """The grid and settings chosen by GRID or GRID_FILE, WORKING_DIR, SEEDS, MAIN_TASKS, INV_CONSTANTS and the
    script settings. `listing` (--list): name the embedded default data and its slice without building or
    writing anything."""
    environ = os.environ if environ is None else environ
    working_dir = environ.get("WORKING_DIR", "").strip()
    grid = grid_from_environment(environ)
    output_root = os.path.abspath(environ.get("OUTPUT_ROOT") or (os.path.join(working_dir, "outputs") if working_dir
                                                                   else "outputs"))
    main_tasks = words(environ, "MAIN_TASKS")
    if main_tasks:
        from_file = bool(environ.get("GRID_FILE", "").strip())
        grid = _replace(grid, main_tasks=chosen_main_tasks(grid, main_tasks, from_file))
    if words(environ, "INV_CONSTANTS"):  # these, for every main task and seed, and no sweep
        grid = _replace(grid, inv_constants=inv_constants_from(words(environ, "INV_CONSTANTS")), inv_constant_sweep=[],
                        main_tasks={task: _replace(setting, inv_constants=None)
                                    for task, setting in grid.main_tasks.items()})
    seeds = words(environ, "SEEDS") or list(grid.seeds)
    for seed in seeds:
        if not seed.isdigit():
            raise GridError(f"SEEDS: '{seed}' is not a whole number; give e.g. SEEDS=\"1 2 3\"")
    seeds = list(dict.fromkeys(str(int(seed)) for seed in seeds))  # "1 01": one seed, one run each
    for name in WHOLE_NUMBER_SETTINGS:
        value = environ.get(name, "").strip()
        if value and not (value.isdigit() and int(value) >= 1):
            raise GridError(f"{name}={value!r}: give a whole number >= 1 (the preset's: {grid.training.get(name)})")

    # A preset's variable holds one value, and the user's replaces it; EXTRA_ARGS holds flags, and the user's
    # add to the preset's, given after them so that a flag in both takes the user's value.
    script_env = {name: environ.get(name) or default for name, default in grid.training.items()}
    script_env["EXTRA_ARGS"] = " ".join(filter(None, [grid.training.get("EXTRA_ARGS", "").strip(),
                                                      environ.get("EXTRA_ARGS", "").strip()]))
    data_dir = environ.get("DATA_DIR") or grid.data_dir or (os.path.join(working_dir, "data") if working_dir else "")
    embedded_data = not data_dir
    if not data_dir and listing:
        from tawt.data.make_default_data import default_data_dir

        data_dir = data_slice_dir(grid, output_root) if grid.data_slice else default_data_dir()
    elif not data_dir and prepare_data:  # the embedded default data, or a slice of it in OUTPUT_ROOT
        from tawt.data.make_default_data import ensure_default_data

        if grid.data_slice:
            make_output_root(output_root)
        data_dir = default_data_slice(grid, output_root) if grid.data_slice else ensure_default_data()
    if prepare_data and grid.data_dir and data_dir == grid.data_dir and not os.path.isdir(data_dir):
        raise GridError(f"{grid.source_file}: data_dir: {data_dir} is not a folder; give the folder of your task "
                        "files, absolute or relative to the grid file")
    bert_model = environ.get("BERT_MODEL") or grid.bert_model or ("bert-base-cased" if working_dir else "")
    if bert_model:
        script_env["BERT_MODEL"] = bert_model
    elif prepare_data:
        from tawt.data.make_default_data import resolve_model_name_or_path

        resolve_model_name_or_path(None)  # fail now, with what to install, rather than in every run
    data_dir = os.path.abspath(data_dir) if data_dir else data_dir
    script_env["DATA_DIR"] = data_dir
    return Settings(grid=grid, output_root=output_root, data_dir=data_dir, seeds=seeds, script_env=script_env,
                    embedded_data=embedded_data)


def make_output_root(output_root):
    """Create OUTPUT_ROOT, or fail naming it (a path below /proc, an existing file, no permission)."""
    try:
        os.makedirs(output_root, exist_ok=True)
    except OSError as error:
        raise GridError(f"OUTPUT_ROOT={output_root}: cannot be created ({error.strerror}); give a directory you "
                        "can write") from None


def _replace(setting, **changes):
    """A copy of a Grid or MainTaskSetting with some fields changed."""
    return type(setting)(**{**setting.__dict__, **changes})


def _reduced(paper_setting, grid):
    """A main task the reduced grid has no setting for: the paper's sources, the reduced grid's size."""
    return MainTaskSetting(paper_setting.sources, next(iter(grid.main_tasks.values())).train_size)


# ---------------------------------------------------------------------------------------------------------
# Data


def count_sentences(path):
    """Sentences in a task file: blocks of non-blank lines, -DOCSTART- lines ignored (a sentence-level file:
    its non-blank lines)."""
    count, inside = 0, False
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not part of the first line
        if path.endswith(".tsv"):
            return sum(1 for line in handle if line.strip())
        for line in handle:
            if line.startswith("-DOCSTART-"):
                continue
            if line.strip():
                inside = True
            elif inside:
                count, inside = count + 1, False
    return count + inside


def first_sentences_text(path, limit):
    """The text of the first `limit` sentences of a task file, lines unchanged."""
    kept, sentences, inside = [], 0, False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("-DOCSTART-"):
                continue
            if line.strip():
                if sentences == limit:
                    break
                inside = True
                kept.append(line)
            elif inside:
                kept.append("\n")
                sentences, inside = sentences + 1, False
    if inside:
        kept.append("\n")
    return "".join(kept)


def random_sentences_text(path, limit, seed):
    """The text of `limit` sentences of a task file drawn at random (seeded), in the file's order.

    The permutation depends only on the seed and the number of sentences, so task files of the same text
    (the embedded default's tasks label the same Brown sentences) keep the same sentences."""
    import random

    blocks = [block + "\n" for block in first_sentences_text(path, None).split("\n\n") if block.strip()]
    chosen = sorted(random.Random(seed).sample(range(len(blocks)), min(limit, len(blocks))))
    return "".join(blocks[index] + "\n" for index in chosen)


RANDOM_SLICE_SEED = 42


def grid_task_file(data_dir, split, task):
    """`{split}_{task}.tsv` for a sentence-level task, else `{split}_{task}.txt`."""
    sentence_level = os.path.join(data_dir, f"{split}_{task}.tsv")
    return sentence_level if os.path.isfile(sentence_level) else os.path.join(data_dir, f"{split}_{task}.txt")


def random_lines_text(path, limit, seed):
    """`limit` lines of a sentence-level task file drawn at random (seeded), in the file's order."""
    import random

    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    chosen = sorted(random.Random(seed).sample(range(len(lines)), min(limit, len(lines))))
    return "".join(lines[index] for index in chosen)


def grid_tasks(grid, sections=SECTIONS):
    """The tasks `sections` of the grid train on, each with the grid file's key that names it."""
    tasks = {}
    if set(sections) - {"analysis"}:
        for main_task, setting in grid.main_tasks.items():
            tasks.setdefault(main_task, f"main_tasks.{main_task}")
            for source in setting.sources:
                tasks.setdefault(source, f"main_tasks.{main_task}.sources")
    if "analysis" in sections and grid.analysis_main_task:
        tasks.setdefault(grid.analysis_main_task, "analysis.main_task")
        for source in grid.analysis_sources:
            tasks.setdefault(source, "analysis.sources")
    return tasks


def missing_task_file(grid, data_dir, task, key, split):
    """The error for a task whose `split` file is not in `data_dir`: which file, which key names it, the fix."""
    return GridError(f"{os.path.join(data_dir, f'{split}_{task}.txt')}: file not found (nor {split}_{task}.tsv, "
                     f"a sentence-level task's); {os.path.basename(grid.source_file)}'s {key} names {task}: write its "
                     f"train, dev and test files and {task}_labels.txt there (data/process_data.py), correct the "
                     "name, or give the folder that holds them (DATA_DIR, WORKING_DIR/data or the grid file's "
                     "data_dir)")


def data_slice_dir(grid, output_root):
    """Where default_data_slice puts the grid's slice: its name says the sizes (and the random choice)."""
    name = "default_data_slice_" + "_".join(f"{split}{count}" for split, count in grid.data_slice.items())
    if grid.random_train_slice:
        name += f"_random{RANDOM_SLICE_SEED}"
    return os.path.join(output_root, name)


def default_data_slice(grid, output_root, source=None):
    """OUTPUT_ROOT/default_data_slice_...: the first sentences of every file of the embedded default data
    (with grid.random_train_slice, a seeded random choice of the training files' sentences); `source`: slice
    that data directory instead (benchmarks/gpu_session.py packs a slice of the user's data this way).

    A slice made before for fewer tasks (another MAIN_TASKS) gets the missing tasks added, sliced the same way;
    its files of the other tasks stay as they are."""
    from tawt.data.make_default_data import ensure_default_data

    source = source or ensure_default_data()
    sizes = grid.data_slice
    target = data_slice_dir(grid, output_root)
    marker = os.path.join(target, "slice_info.json")
    sliced = []
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            sliced = json.load(handle)["tasks"]
    needed = grid_tasks(grid)
    missing = sorted(set(needed) - set(sliced))
    if not missing:
        return target
    for task in missing:  # before any file is written: a task the data lacks leaves the slice as it was
        for split in sizes:
            if not os.path.isfile(grid_task_file(source, split, task)):
                raise missing_task_file(grid, source, task, needed[task], split)
    os.makedirs(target, exist_ok=True)
    for task in missing:
        for split, limit in sizes.items():
            path = grid_task_file(source, split, task)
            with open(os.path.join(target, os.path.basename(path)), "w", encoding="utf-8") as handle:
                if path.endswith(".tsv"):  # one example a line, in document order: a random slice of every split
                    handle.write(random_lines_text(path, limit, RANDOM_SLICE_SEED))
                else:
                    handle.write(random_sentences_text(path, limit, RANDOM_SLICE_SEED) if split == "train"
                                 and grid.random_train_slice else first_sentences_text(path, limit))
        with open(os.path.join(source, f"{task}_labels.txt"), encoding="utf-8") as labels:
            with open(os.path.join(target, f"{task}_labels.txt"), "w", encoding="utf-8") as handle:
                handle.write(labels.read())  # the full data's labels, so a label absent from the slice is fine
    # written last (replaced whole): marks a complete slice of these tasks
    write_text_atomic(marker, json.dumps({
        "source": source, "sentences_per_split": sizes, "tasks": sorted({*sliced, *missing}),
        "train_sentences": f"random, seed {RANDOM_SLICE_SEED}" if grid.random_train_slice else "first"}, indent=1))
    return target


def check_data(settings, sections):
    """Fail fast, naming the file and the grid's key, when a task the grid needs has no train/dev/test file."""
    if not settings.data_dir:
        return
    for task, key in sorted(grid_tasks(settings.grid, sections).items()):
        for split in SPLITS:
            if not os.path.isfile(grid_task_file(settings.data_dir, split, task)):
                raise missing_task_file(settings.grid, settings.data_dir, task, key, split)


# ---------------------------------------------------------------------------------------------------------
# Jobs


class JobMaker:
    """Turns (run directory, paradigm script, its arguments) into queue jobs with the shared settings."""

    def __init__(self, settings, echo=say):
        self.settings, self.echo = settings, echo
        self._sentences = {}
        shared = {name: value for name, value in settings.script_env.items() if value}
        # Every run checkpoints (after each epoch, and every SAVE_STEPS steps), so an interrupted grid resumes
        # each run where it stopped; the grid's flag comes first, so one in EXTRA_ARGS wins.
        shared["EXTRA_ARGS"] = " ".join(filter(None, [f"--save_steps {GRID_SAVE_STEPS}", shared.get("EXTRA_ARGS")]))
        self.shared = shared
        self.shared_settings = self.environment_text(shared)

    @staticmethod
    def environment_text(settings):
        return " ".join(f"{name}={shlex.quote(value)}" for name, value in settings.items())

    def job(self, run_path, main_task, script, arguments, seed, extra_args=(), environment=None):
        """The job of one run; `extra_args` (and the grid's flags for `script`) are added to EXTRA_ARGS;
        `environment` ({variable: value}) sets script settings of this job alone."""
        output_dir = os.path.join(self.settings.output_root, run_path, f"seed_{seed}")
        added = [*self.settings.grid.script_args.get(script, []), *extra_args]
        # A run with checkpoints resumes by itself; one interrupted before its first checkpoint left nothing
        # to resume from, and starts again.
        if holds_results(output_dir) and not holds_checkpoints(output_dir):
            added.append("--overwrite_output_dir")
        settings = self.shared_settings
        if added:  # a later assignment wins: the shared settings stay a prefix that --list leaves out
            settings += " " + self.environment_text({"EXTRA_ARGS": " ".join([self.shared["EXTRA_ARGS"], *added])})
        if environment:
            settings += " " + self.environment_text(environment)
        command = " ".join([settings, f"SEED={seed}", f"OUTPUT_DIR={shlex.quote(output_dir)}", "sh",
                            shlex.quote(os.path.join(SCRIPTS_DIR, script)), *map(shlex.quote, map(str, arguments))])
        return Job(command=command, log=os.path.join(self.settings.output_root, "logs", run_path, f"seed_{seed}.log"),
                   done_file=os.path.join(output_dir, ALL_RESULTS_FILE),
                   name=f"{run_path}/seed_{seed}")

    def sentences(self, task):
        """Training sentences of `task` in the data directory (None when it cannot be read)."""
        if task not in self._sentences:
            path = grid_task_file(self.settings.data_dir or "", "train", task)
            self._sentences[task] = count_sentences(path) if self.settings.data_dir and os.path.isfile(path) else None
        return self._sentences[task]

    def note_size(self, task, needed, what):
        """Say so when `what` asks for more training sentences of `task` than its file has: the run takes
        the whole file, as the original's `features[:n]` did, and its all_results.json records the size used."""
        available = self.sentences(task)
        if available is not None and needed > available:
            self.echo(f"[grid] {what} asks for {needed} training sentences of {task}; train_{task}.txt has "
                      f"{available}: it trains on all of them (all_results.json records the sizes used)")


def main_section_jobs(maker, settings):
    jobs = []
    for main_task, setting in settings.grid.main_tasks.items():
        tasks = [*setting.sources, main_task, setting.train_size]
        for seed in settings.seeds:
            jobs.append(maker.job(f"main/single_task/{main_task}", main_task, "run_single.sh",
                                  [main_task, setting.train_size], seed))
            jobs.append(maker.job(f"main/joint/{main_task}", main_task, "run_joint_training_multi.sh", tasks, seed))
            jobs.append(maker.job(f"main/weighted_joint/{main_task}", main_task, "run_weighted_joint_training_multi.sh",
                                  tasks, seed))
            if settings.grid.original_optimizer_rows:
                for paradigm, script in (("joint", "run_joint_training_multi.sh"),
                                         ("weighted_joint", "run_weighted_joint_training_multi.sh")):
                    jobs.append(maker.job(f"main/{paradigm}_original_optimizer/{main_task}", main_task, script, tasks,
                                          seed, ORIGINAL_OPTIMIZER_FLAGS))
            jobs.append(maker.job(f"main/pretraining/{main_task}", main_task, "run_pre_training_multi.sh", tasks, seed))
            inv_constants = list(setting.inv_constants or settings.grid.inv_constants)
            if seed == settings.seeds[0]:  # the sweep that chooses the inv_constant on dev
                inv_constants += [value for value in settings.grid.inv_constant_sweep if value not in inv_constants]
            for inv_constant in sorted(inv_constants, key=float):
                jobs.append(maker.job(f"main/weighted_pretraining_ic{inv_constant}/{main_task}", main_task,
                                      "run_weighted_pre_training_multi.sh", [inv_constant, *tasks], seed))
    return jobs


def normalized_arguments(setting, main_task):
    """The normalized scripts' arguments: SOURCE... MAIN [WEIGHT...] N_MAIN."""
    return [*setting.sources, main_task, *(setting.normalized_weights or []), setting.train_size]


def normalized_section_jobs(maker, settings):
    jobs = []
    for main_task, setting in settings.grid.main_tasks.items():
        arguments = normalized_arguments(setting, main_task)
        for seed in settings.seeds:
            jobs.append(maker.job(f"normalized/normalized_joint/{main_task}", main_task,
                                  "run_joint_training_multi_normalized.sh", arguments, seed))
            jobs.append(maker.job(f"normalized/weighted_normalized_joint/{main_task}", main_task,
                                  "run_weighted_joint_training_multi_normalized.sh", arguments, seed))
    return jobs


def baselines_section_jobs(maker, settings):
    jobs = []
    for seed in settings.seeds:  # seed by seed: an interrupted section leaves every method with the same seeds
        for method in settings.grid.baselines:
            for main_task, setting in settings.grid.main_tasks.items():
                jobs.append(maker.job(f"baselines/joint_{method}/{main_task}", main_task,
                                      "run_target_aware_baseline_multi.sh",
                                      [method, *setting.sources, main_task, setting.train_size], seed,
                                      ["--gcs_variant", "gated"] if method in GCS_METHODS else []))
    return jobs


def gcs_du_section_jobs(maker, settings):
    """GCS and weighted GCS as Du et al. define them (--gcs_variant du), in directories of their own
    (baselines/joint_<method>_du), so that the gated runs of the baselines section are not taken for them.

    As in Du et al.'s update and its reference code, every step's target gradient is fresh, from a main-task
    batch of the training batch's size (TARGET_GRADIENT_STEPS=1, GRADIENT_SAMPLING_BATCH_SIZE=BATCH_SIZE):
    the update adds it to every step, and one reused for several steps (the baselines section's R) pushes the
    encoder the same way at each of them (on the medium grid, R = 8 collapsed every run to the majority
    label; results/medium/README.md). --log_update_norms records in each run's training_log.jsonl how far the
    encoder and the main task's head moved between two log lines, so that a collapse can be read from it."""
    fresh = {"TARGET_GRADIENT_STEPS": "1",
             "GRADIENT_SAMPLING_BATCH_SIZE": maker.shared.get("BATCH_SIZE", SCRIPT_BATCH_SIZE)}
    jobs = []
    for seed in settings.seeds:
        for method in [method for method in GCS_METHODS if method in settings.grid.baselines]:
            for main_task, setting in settings.grid.main_tasks.items():
                jobs.append(maker.job(f"baselines/joint_{method}_du/{main_task}", main_task,
                                      "run_target_aware_baseline_multi.sh",
                                      [method, *setting.sources, main_task, setting.train_size], seed,
                                      ["--gcs_variant", "du", "--log_update_norms"], environment=fresh))
    return jobs


def forkmerge_section_jobs(maker, settings):
    """ForkMerge in joint training (its default branches and merge interval), beside joint training, TAWT and
    the other target-aware baselines: the baseline that chooses how much of the sources to keep by the main
    task's dev score itself."""
    jobs = []
    for seed in settings.seeds:
        for main_task, setting in settings.grid.main_tasks.items():
            jobs.append(maker.job(f"baselines/joint_forkmerge/{main_task}", main_task,
                                  "run_target_aware_baseline_multi.sh",
                                  ["forkmerge", *setting.sources, main_task, setting.train_size], seed))
    return jobs


def ablation_section_jobs(maker, settings):
    """Weighted joint and weighted normalized joint training with --ablate_source_cosines, beside their TAWT
    runs in main/ and normalized/: what TAWT would do if the similarities carried no information."""
    jobs = []
    for seed in settings.seeds:  # seed by seed: an interrupted section leaves both rows with the same seeds
        for main_task, setting in settings.grid.main_tasks.items():
            jobs.append(maker.job(f"ablation/weighted_joint_ablated/{main_task}", main_task,
                                  "run_weighted_joint_training_multi.sh",
                                  [*setting.sources, main_task, setting.train_size], seed, [ABLATION_FLAG]))
            jobs.append(maker.job(f"ablation/weighted_normalized_joint_ablated/{main_task}", main_task,
                                  "run_weighted_joint_training_multi_normalized.sh",
                                  normalized_arguments(setting, main_task), seed, [ABLATION_FLAG]))
    return jobs


# The rows the more_seeds section runs with the grid's more_seeds, besides the normalized and ablation sections.
MORE_SEEDS_MAIN_ROWS = ("main/single_task/", "main/joint/", "main/weighted_joint/")


def more_seeds_section_jobs(maker, settings):
    """More seeds (grid.more_seeds) of single-task, joint, weighted joint, normalized joint, weighted normalized
    joint and the ablation rows: enough to tell smaller differences between them apart."""
    if not settings.grid.more_seeds:
        maker.echo("[grid] more_seeds: this grid has no further seeds (GRID=large runs 4 and 5)")
        return []
    more = _replace(settings, seeds=list(settings.grid.more_seeds))
    return ([job for job in main_section_jobs(maker, more) if job.name.startswith(MORE_SEEDS_MAIN_ROWS)]
            + normalized_section_jobs(maker, more) + ablation_section_jobs(maker, more))


def noise_source_section_jobs(maker, settings):
    """Joint and weighted joint training with --noise_source (the first source's labels permuted, as one more
    source): whether TAWT gives a useless source less weight than the real ones, and whether it hurts TAWT
    less than joint training."""
    jobs = []
    for seed in settings.seeds:
        for main_task, setting in settings.grid.main_tasks.items():
            source = setting.sources[0]
            arguments = [*setting.sources, main_task, setting.train_size]
            for paradigm, script in (("joint", "run_joint_training_multi.sh"),
                                     ("weighted_joint", "run_weighted_joint_training_multi.sh")):
                jobs.append(maker.job(f"noise_source/{paradigm}_{source}_noise/{main_task}", main_task, script,
                                      arguments, seed, ["--noise_source", source]))
    return jobs


def single_task_path(settings, task, size):
    """The single-task run of `task` with `size` sentences: the main section's when it is that size."""
    setting = settings.grid.main_tasks.get(task)
    if setting is not None and setting.train_size == size:
        return f"main/single_task/{task}"
    return f"analysis/single_task_n{size}/{task}"


ANALYSIS_SCRIPTS = (("normalized_joint", "run_joint_training_multi_normalized_analysis.sh"),
                    ("weighted_normalized_joint", "run_weighted_joint_training_multi_normalized_analysis.sh"))


def analysis_section_jobs(maker, settings):
    grid = settings.grid
    main_task, sources = grid.analysis_main_task, grid.analysis_sources
    jobs, single_task_sizes = [], list(grid.single_task_sizes)
    for n_main, ratio in grid.analysis_settings:
        single_task_sizes.append(n_main * (1 + len(sources) * ratio))  # as many sentences as main plus sources
        what = f"the ratio analysis n_main={n_main} ratio={ratio}"
        maker.note_size(main_task, n_main, what)
        for source in sources:
            maker.note_size(source, n_main * ratio, what)
        for seed in settings.seeds:
            for paradigm, script in ANALYSIS_SCRIPTS:
                jobs.append(maker.job(f"analysis/{paradigm}_n{n_main}_r{ratio}/{main_task}", main_task, script,
                                      [n_main, ratio, *sources, main_task], seed))
    for size in sorted(set(single_task_sizes)):
        maker.note_size(main_task, size, f"single-task {main_task} with {size} sentences")
        for seed in settings.seeds:
            jobs.append(maker.job(single_task_path(settings, main_task, size), main_task, "run_single_analysis.sh",
                                  [size, main_task], seed))
    return jobs


def weights_of_last_epoch(history):
    """The weights in effect when training ended: those of the last update made before the optimizer step
    at which the run's last update was made (an update at step s trains steps s + 1 on).

    The last entry of a TAWT run's history is the update made after its last epoch (or after the step at
    which --max_steps stopped it), which no training step used: the original's published final weights,
    e.g. 0.87 = e^3 / (e^3 + 3) after four epochs, are those in effect during the fourth epoch. With
    --weight_update_steps, that is the last update within the last epoch. Choosing by step rather than by
    position stays right however the run ended.
    """
    if not all("step" in entry for entry in history):  # a history written before entries had their step
        return history[-2]["weights"] if len(history) >= 2 else history[-1]["weights"]
    final_step = history[-1]["step"]
    earlier = [entry for entry in history if entry["step"] < final_step]
    return (earlier[-1] if earlier else history[0])["weights"]


def final_weights(settings, run_path):
    """The mean over the finished seeds of the weights that trained the last epoch (run_path/seed_*)."""
    collected = []
    for seed in settings.seeds:
        directory = os.path.join(settings.output_root, run_path, f"seed_{seed}")
        weights_path = os.path.join(directory, TASK_WEIGHTS_FILE)
        finished = os.path.isfile(os.path.join(directory, ALL_RESULTS_FILE))
        if not (finished and os.path.isfile(weights_path)):
            continue
        with open(weights_path, encoding="utf-8") as handle:
            history = json.load(handle)["history"]
        collected.append(weights_of_last_epoch(history))
    if not collected:
        return None
    mean = [sum(column) / len(collected) for column in zip(*collected)]
    return [float(f"{weight:.6g}") for weight in mean]


def final_weights_section_jobs(maker, settings):
    jobs, seen = [], set()
    rerun_of = []  # (weighted run, its fixed-weight re-run, the re-run's script)
    for main_task in settings.grid.main_tasks:
        rerun_of.append((f"main/weighted_joint/{main_task}", f"final_weights/joint_fixed_weights/{main_task}",
                         "run_joint_training_fixed_weights_multi.sh"))
        for inv_constant in settings.grid.inv_constants:
            rerun_of.append((f"main/weighted_pretraining_ic{inv_constant}/{main_task}",
                             f"final_weights/pretraining_fixed_weights_ic{inv_constant}/{main_task}",
                             "run_pre_training_fixed_weights_multi.sh"))
        rerun_of.append((f"normalized/weighted_normalized_joint/{main_task}",
                         f"final_weights/normalized_joint_fixed_weights/{main_task}",
                         "run_joint_training_fixed_weights_multi.sh"))
    for weighted_path, rerun_path, script in rerun_of:
        main_task = weighted_path.split("/")[-1]
        setting = settings.grid.main_tasks[main_task]
        weights = final_weights(settings, weighted_path)
        if weights is None:
            maker.echo(f"[grid] skipping {rerun_path}: no finished run in {weighted_path}/seed_* yet "
                       "(run the main and normalized sections first)")
            continue
        key = (script, main_task, tuple(weights))
        if key in seen:  # two weighted runs ended on the same weights: one re-run serves both
            maker.echo(f"[grid] skipping {rerun_path}: the same final weights {weights} as another re-run")
            continue
        seen.add(key)
        maker.echo(f"[grid] {rerun_path}: final weights of {weighted_path} {weights}")
        for seed in settings.seeds:
            jobs.append(maker.job(rerun_path, main_task, script,
                                  [*setting.sources, main_task, *weights, setting.train_size], seed))
    return jobs


SECTION_JOBS = {
    "main": main_section_jobs,
    "normalized": normalized_section_jobs,
    "baselines": baselines_section_jobs,
    "analysis": analysis_section_jobs,
    "ablation": ablation_section_jobs,
    "gcs_du": gcs_du_section_jobs,
    "more_seeds": more_seeds_section_jobs,
    "noise_source": noise_source_section_jobs,
    "forkmerge": forkmerge_section_jobs,
    "final_weights": final_weights_section_jobs,
}


def plan(maker, settings, sections):
    """The jobs of `sections`, in order; a run two sections share (single-task ner 500) is listed once."""
    jobs, seen = [], set()
    for section in sections:
        for job in SECTION_JOBS[section](maker, settings):
            if job.done_file not in seen:
                seen.add(job.done_file)
                jobs.append(job)
    return jobs


def summary_commands(settings):
    """The Table-1 summary with the weight plots, and the significance tests of every weighted run."""
    collect = [sys.executable, os.path.join(ROOT, "testing", "collect_results.py"), settings.output_root,
               *settings.grid.summary_args]
    if settings.grid.note:
        collect += ["--note", settings.grid.note]
    significance = [sys.executable, os.path.join(ROOT, "testing", "significance_testing.py"), "batch",
                    settings.output_root, "--output_csv", os.path.join(settings.output_root, "summary", "significance.csv")]
    return [collect, significance]


def run_summary(settings, echo=say):
    """Run summary_commands (each, even when one fails); return whether all succeeded."""
    succeeded = True
    for command in summary_commands(settings):
        echo("[grid] " + " ".join(map(shlex.quote, command)))
        succeeded = subprocess.run(command).returncode == 0 and succeeded
    return succeeded


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"any of {', '.join(SECTIONS)} (default: the grid file's sections, in that order)")
    parser.add_argument("--list", action="store_true", help="print the jobs (the commands) and run nothing")
    parser.add_argument("--no_summary", action="store_true",
                        help="skip the summary at the end (testing/collect_results.py, the significance batch)")
    parser.add_argument("--no_submit", action="store_true",
                        help="with BACKEND=slurm: write the job array and its submit.sh, submit nothing")
    parser.add_argument("--after_array", action="store_true", help=argparse.SUPPRESS)  # run by next.sh in Slurm
    args = parser.parse_args(argv)
    unknown = [section for section in args.sections if section not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {' '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [section for section in SECTIONS if section in args.sections]  # [] : the grid's own
    return args


def main(argv=None, environ=None):
    args = parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        backend = environ.get("BACKEND", "").strip() or "local"
        if backend not in BACKENDS:
            raise GridError(f"BACKEND={backend!r}: choose {' or '.join(BACKENDS)}")
        if args.no_submit and backend != "slurm":
            raise GridError("--no_submit writes a Slurm job array; give it with BACKEND=slurm")
        settings = settings_from_environment(environ, listing=args.list)
        args.sections = args.sections or [section for section in SECTIONS if section in settings.grid.sections]
        if not (args.list and settings.embedded_data and not os.path.isdir(settings.data_dir)):
            check_data(settings, args.sections)  # (--list builds no embedded default data to check)
        if not args.list:
            make_output_root(settings.output_root)
            try:  # held while this grid runs (or submits): a second grid on the same tree is refused
                lock_directory(settings.output_root)
            except DirectoryInUse as holder:
                raise GridError(f"OUTPUT_ROOT={settings.output_root} is in use by another grid ({holder}); wait "
                                "for it to end, or give another OUTPUT_ROOT") from None
        slots = detect_slots(environ) if backend == "local" else None
    except ValueError as error:  # GridError, JobListError, the default data's DefaultDataError: a message to show
        sys.exit(f"error: {error}")
    say(f"[grid] {settings.grid.description}: sections {' '.join(args.sections)}, seeds {' '.join(settings.seeds)}; "
          f"data {settings.data_dir or 'the embedded default'}; outputs {settings.output_root}")
    if environ.get("EXTRA_ARGS", "").strip():
        say(f"[grid] EXTRA_ARGS adds to the preset's flags: the preset's "
            f"'{settings.grid.training.get('EXTRA_ARGS', '')}', then yours '{environ['EXTRA_ARGS'].strip()}' "
            "(a flag in both takes your value; each run records both in run_args.json)")
    maker, began = JobMaker(settings), time.time()
    # final_weights reads what the other sections learned, so it is planned (and run) after them.
    if args.list:
        print(f"# every job runs with {maker.shared_settings}")
    stages = [stage for stage in ([section for section in args.sections if section != "final_weights"],
                                  [section for section in args.sections if section == "final_weights"]) if stage]
    if backend == "slurm" and not args.list:
        return submit_to_slurm(maker, settings, stages, args, environ)
    failed = False
    for stage in stages:
        if args.list and stage == ["final_weights"]:
            print("# final_weights: planned from the weighted runs' results once they exist")
        jobs = plan(maker, settings, stage)
        if args.list:
            for job in jobs:
                print(("# done: " if job.is_done() else "") + job.command.replace(maker.shared_settings + " ", "", 1))
            continue
        report = run_jobs(jobs, slots)
        summarize(report)
        failed = failed or not report.ok
        if report.not_started:
            return 130
    if args.list:
        return 0
    say(f"[grid] the runs took {(time.time() - began) / 60:.1f} min")
    if not args.no_summary and os.path.isdir(settings.output_root):
        failed = not run_summary(settings) or failed
    return 1 if failed else 0


def submit_to_slurm(maker, settings, stages, args, environ):
    """Submit the first stage with runs left as a Slurm job array (see scripts/slurm_grid.py)."""
    summary = [] if args.no_summary else summary_commands(settings)
    if not args.no_submit and shutil.which("squeue"):
        queued = slurm_grid.still_queued(settings.output_root, environ)
        if queued:
            job_ids = " ".join(job_id for job_id, _ in queued)
            sys.exit(f"error: job(s) {job_ids} of an earlier submission ({queued[0][1]}) are still queued or running: "
                     f"their runs would be submitted twice. Wait until they have left the queue (squeue --me), or "
                     f"cancel them (scancel {job_ids}), then give the command again")
    for position, stage in enumerate(stages):
        planned = plan(maker, settings, stage)
        jobs = [job for job in planned if not job.is_done()]
        say(f"[slurm] {' '.join(stage)}: {len(jobs)} run(s) to submit, {len(planned) - len(jobs)} done already")
        if jobs:
            later_sections = [section for later in stages[position + 1:] for section in later]
            try:
                submit_script = slurm_grid.write_submission(jobs, settings, summary, later_sections, environ)
            except ValueError as error:
                sys.exit(f"error: {error}")
            return slurm_grid.submit(submit_script, args.no_submit)
    if args.after_array:  # this is a Slurm job that follows an array: the summary is due now
        return 0 if args.no_summary or run_summary(settings) else 1
    say("[slurm] every run is done: nothing submitted. The summary: " + "; ".join(
        slurm_grid.command_line(command) for command in summary_commands(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
