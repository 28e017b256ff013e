"""Grid files (scripts/grid_file.py, docs/grid_files.md): the presets of scripts/grids/ list the jobs the
Python presets listed (tests/grid_listings/, recorded from them), a bad file is refused naming the file, the key
and the fix, a grid of a user's own two tasks runs end to end on the tiny model, and a default-data slice made
for some tasks gets the tasks of a later grid added."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tawt.scripts import experiment_grid
from tawt.scripts.grid_file import SECTIONS, GridError, MainTaskSetting, preset_grid, read_grid_file
from tests.conftest import ROOT, write_task_files
from tests.test_experiment_scripts import clean_environment

LISTINGS = os.path.join(ROOT, "tests", "grid_listings")
EXPERIMENT_GRID = os.path.join(ROOT, "scripts", "experiment_grid.py")
RUN_EXPERIMENTS = os.path.join(ROOT, "scripts", "run_experiments.sh")


def write_listing_data(data_dir):
    """Every task of the presets: the tiny tagging tasks, brown_pos as a copy of pos, and the genre tasks as
    two-line sentence-level files (the listing only counts sentences)."""
    write_task_files(data_dir)
    for split in ("train", "dev", "test"):
        shutil.copy(os.path.join(data_dir, f"{split}_pos.txt"), os.path.join(data_dir, f"{split}_brown_pos.txt"))
        for task in ("brown_genre", "brown_genre_coarse"):
            with open(os.path.join(data_dir, f"{split}_{task}.tsv"), "w") as handle:
                handle.write("press\tthe dog runs .\nfiction\tjohn sees the dog .\n")
    shutil.copy(os.path.join(data_dir, "pos_labels.txt"), os.path.join(data_dir, "brown_pos_labels.txt"))
    for task in ("brown_genre", "brown_genre_coarse"):
        with open(os.path.join(data_dir, f"{task}_labels.txt"), "w") as handle:
            handle.write("fiction\npress\n")


def grid_listing(tmp_path, **settings):
    """`experiment_grid.py --list` of every section, its paths below tmp_path and this checkout normalised."""
    environment = clean_environment(OUTPUT_ROOT=tmp_path / "outputs", DATA_DIR=tmp_path / "data",
                                    BERT_MODEL="bert-base-cased", **settings)
    completed = subprocess.run([sys.executable, EXPERIMENT_GRID, "--list", *SECTIONS], capture_output=True,
                               text=True, env=environment, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.replace(str(tmp_path), "<TMP>").replace(ROOT, "<REPO>")


# The recorded listing of each file in tests/grid_listings/ and the settings it was made with.
RECORDED = {
    "paper": {"GRID": "paper"},
    "reduced": {"GRID": "reduced"},
    "medium": {"GRID": "medium"},
    "large": {"GRID": "large"},
    "genre": {"GRID": "genre"},
    # a preset also takes the paper's main tasks, with the paper's sources at its own size
    "reduced_main_tasks_pos_ner": {"GRID": "reduced", "MAIN_TASKS": "pos ner", "INV_CONSTANTS": "1 10"},
    "medium_ner_seeds_1_2": {"GRID": "medium", "MAIN_TASKS": "ner", "SEEDS": "1 2"},
}


@pytest.mark.parametrize("name", RECORDED)
def test_each_preset_file_lists_the_jobs_recorded_from_the_python_presets(name, tmp_path):
    write_listing_data(tmp_path / "data")
    with open(os.path.join(LISTINGS, f"{name}.txt"), encoding="utf-8") as handle:
        recorded = handle.read()
    assert grid_listing(tmp_path, **RECORDED[name]) == recorded
    if set(RECORDED[name]) == {"GRID"}:  # the same file given as one's own
        grid_file = os.path.join(ROOT, "scripts", "grids", f"{RECORDED[name]['GRID']}.toml")
        assert grid_listing(tmp_path, GRID_FILE=grid_file) == recorded


# ---------------------------------------------------------------------------------------------------------
# Bad grid files


GOOD = """\
seeds = [1]
[main_tasks.ner]
sources = ["pos"]
train_size = 10
"""


@pytest.mark.parametrize("text, key, fix", [
    ("seed = [1]\n" + GOOD, "seed", "unknown key; did you mean seeds?"),
    (GOOD + "sorces = [\"chunking\"]\n", "main_tasks.ner.sorces", "unknown key; did you mean sources?"),
    (GOOD.replace("train_size = 10", "train_size = \"10\""), "main_tasks.ner.train_size",
     "'10' is not a whole number >= 1; write e.g. train_size = 100"),
    (GOOD.replace("train_size = 10", "train_size = true"), "main_tasks.ner.train_size", "True is not a whole number"),
    (GOOD.replace('sources = ["pos"]\n', ""), "main_tasks.ner.sources", "missing (the tasks it learns from); add "
                                                                          'sources = ["pos"]'),
    (GOOD.replace('["pos"]', "[]"), "main_tasks.ner.sources", "is empty; give at least one source task"),
    (GOOD.replace('["pos"]', '["pos", "ner"]'), "main_tasks.ner.sources", "names the main task ner itself"),
    (GOOD.replace('["pos"]', '["pos", "pos"]'), "main_tasks.ner.sources", "names pos twice; name each source once"),
    (GOOD.replace('["pos"]', '["my pos"]'), "main_tasks.ner.sources", "is not a list of task names"),
    (GOOD + "normalized_weights = [0.5]\n", "main_tasks.ner.normalized_weights",
     "1 weights for 1 sources and the main task; give 2"),
    ("seeds = [1]\n", "main_tasks", "missing (the grid's main tasks); add a table per main task"),
    ('sections = ["main", "tables"]\n' + GOOD, "sections", "is not a list of sections out of main, normalized"),
    ('sections = ["analysis"]\n' + GOOD, "sections", "names analysis, but the file has no [analysis] table"),
    ("training = 5\n" + GOOD, "training", "5 is not a table; write [training] on a line of its own"),
    (GOOD + "[training]\nnum_epoch = 2\n", "training.num_epoch", "did you mean num_epochs?"),
    (GOOD + "[data_slice]\ntrain = 10\n", "data_slice.dev", "missing; give the sentences kept of each of train"),
    (GOOD + "[script_args]\n\"run_tawt.sh\" = [\"--bf16\"]\n", "script_args.run_tawt.sh",
     "not a paradigm script of scripts/; name one of run_joint_training_fixed_weights_multi.sh"),
    (GOOD + "[analysis]\nsources = [\"pos\"]\n", "analysis.main_task", "missing (the analysis' main task)"),
    ("inv_constants = [0]\n" + GOOD, "inv_constants", "[0] is not a list of positive numbers"),
])
def test_a_bad_grid_file_is_refused_naming_the_file_the_key_and_the_fix(tmp_path, text, key, fix):
    grid_file = tmp_path / "my_grid.toml"
    grid_file.write_text(text)
    with pytest.raises(GridError) as error:
        read_grid_file(str(grid_file))
    message = str(error.value)
    assert message.startswith(f"{grid_file}: {key}: ") and fix in message and "\n" not in message, message
    assert message.endswith("(docs/grid_files.md)")


def grid_error(tmp_path, capsys, **settings):
    """The one-line error with which `experiment_grid.py --list` refuses `settings`."""
    environ = {"OUTPUT_ROOT": str(tmp_path / "outputs"), "BERT_MODEL": "bert-base-cased", **settings}
    with pytest.raises(SystemExit) as exit:
        experiment_grid.main(["--list"], environ=environ)
    assert capsys.readouterr().out == ""  # refused before anything is listed
    return str(exit.value.code)


def test_grid_files_that_do_not_fit_their_data_or_the_settings_are_refused(tmp_path, capsys):
    data = write_task_files(tmp_path / "data")
    grid_file = tmp_path / "my_grid.toml"
    grid_file.write_text('data_dir = "data"\n' + GOOD.replace('["pos"]', '["pos", "tags"]'))
    message = grid_error(tmp_path, capsys, GRID_FILE=str(grid_file))
    assert message == (f"error: {data}/train_tags.txt: file not found (nor train_tags.tsv, a sentence-level task's); "
                       "my_grid.toml's main_tasks.ner.sources names tags: write its train, dev and test files and "
                       "tags_labels.txt there (data/process_data.py), correct the name, or give the folder that holds "
                       "them (DATA_DIR, WORKING_DIR/data or the grid file's data_dir)")
    grid_file.write_text('data_dir = "nowhere"\n' + GOOD)
    assert grid_error(tmp_path, capsys, GRID_FILE=str(grid_file)) == (
        f"error: {grid_file}: data_dir: {tmp_path / 'nowhere'} is not a folder; give the folder of your task files, "
        "absolute or relative to the grid file")
    grid_file.write_text('data_dir = "data"\n' + GOOD)
    assert grid_error(tmp_path, capsys, GRID_FILE=str(grid_file), MAIN_TASKS="pos") == (
        f"error: MAIN_TASKS: pos not in the main tasks of {grid_file}; choose from ner")
    assert "give one of them" in grid_error(tmp_path, capsys, GRID_FILE=str(grid_file), GRID="medium")
    assert grid_error(tmp_path, capsys, GRID_FILE=str(tmp_path / "none.toml")).startswith(
        f"error: {tmp_path / 'none.toml'}: no such grid file; give the path of a grid file, e.g. a copy of "
        "scripts/grids/medium.toml")
    grid_file.write_text("seeds = [1]\nsources = = 2\n")
    message = grid_error(tmp_path, capsys, GRID_FILE=str(grid_file))
    assert re.fullmatch(rf"error: {re.escape(str(grid_file))}: not valid TOML \(.* \(at line 2, column \d+\)\); fix "
                        r"the line it names \(docs/grid_files.md\)", message)
    assert not (tmp_path / "outputs").exists()


def test_the_presets_read_from_their_files():
    medium = preset_grid("medium")
    assert list(medium.main_tasks) == ["ner", "brown_pos"] and medium.seeds == ("1", "2", "3")
    assert medium.training["TARGET_GRADIENT_STEPS"] == "8" and medium.data_slice == {"train": 200, "dev": 500,
                                                                                      "test": 2000}
    assert medium.analysis_main_task is None and "analysis" not in medium.sections
    paper = preset_grid("paper")
    assert paper.main_tasks["predicate"] == MainTaskSetting(["pos", "chunking", "ner"], 300, [0.03, 0.03, 0.03, 0.91])
    assert paper.script_args == {"run_weighted_pre_training_multi.sh": ["--reseed_each_update"]}
    assert len(paper.analysis_settings) == 17 and preset_grid("large").random_train_slice


# ---------------------------------------------------------------------------------------------------------
# A grid of one's own tasks


def write_own_tasks(data_dir):
    """Two tasks of a user's own, under their own names: `mentions` (the tiny ner) and `tags` (the tiny pos)."""
    tiny = write_task_files(os.path.join(os.path.dirname(data_dir), "tiny"), sizes={"train": 16, "dev": 6, "test": 6})
    os.makedirs(data_dir)
    for own, tiny_task in (("mentions", "ner"), ("tags", "pos")):
        for split in ("train", "dev", "test"):
            shutil.copy(os.path.join(tiny, f"{split}_{tiny_task}.txt"), os.path.join(data_dir, f"{split}_{own}.txt"))
        shutil.copy(os.path.join(tiny, f"{tiny_task}_labels.txt"), os.path.join(data_dir, f"{own}_labels.txt"))


OWN_GRID = """\
description = "mentions from tags"
data_dir = "my_data"
sections = ["main", "normalized"]
seeds = [1]
inv_constants = [1]

[training]
max_length = 32
batch_size = 8
num_epochs = 1
gradient_sampling_batch_size = 8
bert_model = "{model}"

[summary]
note = "Two tasks of my own."

[main_tasks.mentions]
sources = ["tags"]
train_size = 12
"""


def test_a_grid_file_of_ones_own_two_tasks_runs_end_to_end_with_its_summary(tmp_path, tiny_model_dir):
    project = tmp_path / "project"
    write_own_tasks(str(project / "my_data"))
    (project / "my_grid.toml").write_text(OWN_GRID.format(model=tiny_model_dir))
    environment = clean_environment(GRID_FILE="my_grid.toml", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    completed = subprocess.run(["sh", RUN_EXPERIMENTS], capture_output=True, text=True, cwd=project,
                               env=environment, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "[grid] mentions from tags: sections main normalized, seeds 1" in completed.stdout
    outputs = project / "outputs"
    runs = ["main/single_task", "main/joint", "main/weighted_joint", "main/pretraining",
            "main/weighted_pretraining_ic1", "normalized/normalized_joint", "normalized/weighted_normalized_joint"]
    for run in runs:
        assert (outputs / run / "mentions" / "seed_1" / "all_results.json").is_file(), run
    run_args = json.loads((outputs / "main" / "weighted_joint" / "mentions" / "seed_1" / "run_args.json").read_text())
    assert run_args["tasks"] == ["tags", "mentions"] and run_args["main_task"] == "mentions"
    assert run_args["data_dir"] == str(project / "my_data") and run_args["model_name_or_path"] == tiny_model_dir
    table = (outputs / "summary" / "table1.md").read_text()
    assert "Two tasks of my own." in table and "| Method | mentions | Avg |" in table
    assert "| Weighted normalized joint training |" in table
    assert (outputs / "summary" / "significance.csv").is_file()

    # The same command again: every run is done, nothing runs again.
    listed = subprocess.run(["sh", RUN_EXPERIMENTS, "--list"], capture_output=True, text=True, cwd=project,
                            env=environment, timeout=120)
    jobs = [line for line in listed.stdout.splitlines() if "OUTPUT_DIR=" in line]
    assert len(jobs) == len(runs) and all(line.startswith("# done: ") for line in jobs), listed.stdout


# ---------------------------------------------------------------------------------------------------------
# The default data's slice


def write_sentence_level_tasks(data_dir, tasks=("topic", "same_verb")):
    """Sentence-level tasks (label<TAB>text, one example a line) of 24/8/8 examples beside the tagging tasks."""
    for task in tasks:
        for split, count in (("train", 24), ("dev", 8), ("test", 8)):
            with open(os.path.join(data_dir, f"{split}_{task}.tsv"), "w") as handle:
                handle.writelines(f"{('yes', 'no')[number % 2]}\t{task} example {split} {number} .\n"
                                  for number in range(count))
        with open(os.path.join(data_dir, f"{task}_labels.txt"), "w") as handle:
            handle.write("no\nyes\n")
    return data_dir


def sliced_grid(main_task):
    return experiment_grid._replace(preset_grid("genre"), main_tasks={main_task: MainTaskSetting(["pos"], 6)},
                                    data_slice={"train": 10, "dev": 4, "test": 4})


def test_a_slice_made_for_fewer_tasks_gets_the_missing_ones_added(tmp_path):
    source = write_sentence_level_tasks(write_task_files(tmp_path / "data"))
    first = experiment_grid.default_data_slice(sliced_grid("topic"), str(tmp_path / "outputs"), source=source)
    kept = {name: os.stat(os.path.join(first, name)).st_mtime_ns for name in os.listdir(first)}
    assert "train_topic.tsv" in kept and "train_same_verb.tsv" not in kept

    # A later grid with another main task (MAIN_TASKS=same_verb after MAIN_TASKS=topic): the same directory
    # gets same_verb, sliced as a slice made for it alone is, and the files already there stay untouched.
    later = experiment_grid.default_data_slice(sliced_grid("same_verb"), str(tmp_path / "outputs"), source=source)
    assert later == first
    for name, modified in kept.items():
        if name != "slice_info.json":
            assert os.stat(os.path.join(first, name)).st_mtime_ns == modified, name
    alone = experiment_grid.default_data_slice(sliced_grid("same_verb"), str(tmp_path / "alone"), source=source)
    for split in ("train", "dev", "test"):
        with open(os.path.join(first, f"{split}_same_verb.tsv")) as added, \
                open(os.path.join(alone, f"{split}_same_verb.tsv")) as fresh:
            assert added.read() == fresh.read()
    with open(os.path.join(first, "slice_info.json")) as handle:
        assert json.load(handle)["tasks"] == ["pos", "same_verb", "topic"]

    # A task the data lacks: refused, naming both spellings of its files, and the slice stays as it was.
    with pytest.raises(GridError, match=r"train_genre\.txt: file not found \(nor train_genre\.tsv, a sentence-level "
                                        r"task's\); genre\.toml's main_tasks\.genre names genre"):
        experiment_grid.default_data_slice(sliced_grid("genre"), str(tmp_path / "outputs"), source=source)
    with open(os.path.join(first, "slice_info.json")) as handle:
        assert json.load(handle)["tasks"] == ["pos", "same_verb", "topic"]
