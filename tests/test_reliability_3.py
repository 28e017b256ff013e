"""Reliability, third round: silent wrong results, shared output directories, the grid's idea of "done",
and the messages of damaged or unusual input (each case as a user or a hostile one would meet it)."""

import json
import os
import subprocess
import sys

import pytest

from scripts import experiment_grid
from tests.conftest import ROOT
from tests.test_scripts import TINY_TRAINING, common

QUICK = ["--num_train_epochs", "1"]  # after TINY_TRAINING's 2 epochs: given twice, the last is used


def single_task_command(data_dir, model_dir, output_dir, *extra):
    return [sys.executable, "run_single_task.py", "--task", "pos", *common(data_dir, model_dir, output_dir), *extra]


def run_args(output_dir):
    with open(os.path.join(output_dir, "run_args.json")) as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------------------
# 1. A user's EXTRA_ARGS adds to the preset's flags


@pytest.mark.parametrize("grid, preset_flags", [
    ("reduced", "--learning_rate 2e-4"),
    ("medium", "--learning_rate 5e-4 --per_gpu_eval_batch_size 64 --eval_main_task_only"),
])
def test_extra_args_add_to_the_presets_flags(grid, preset_flags):
    settings = experiment_grid.settings_from_environment({"GRID": grid, "EXTRA_ARGS": "--save_steps 5 --bf16"},
                                                         prepare_data=False)
    maker = experiment_grid.JobMaker(settings, echo=lambda message: None)
    # The grid's checkpoints, the preset's flags, then the user's: the user's --save_steps comes last and wins.
    assert maker.shared["EXTRA_ARGS"] == f"--save_steps 1000 {preset_flags} --save_steps 5 --bf16"
    job = experiment_grid.main_section_jobs(maker, settings)[0]
    assert preset_flags in job.command and "--bf16" in job.command


def test_a_flag_given_twice_takes_the_last_and_the_run_records_both(tiny_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "twice"
    completed = subprocess.run(single_task_command(tiny_data_dir, tiny_model_dir, output, *QUICK), cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "--num_train_epochs is given 2 times ('2', '1'): the last is used" in completed.stderr
    recorded = run_args(output)
    assert recorded["args"]["num_train_epochs"] == 1
    assert recorded["repeated_flags"] == {"--num_train_epochs": ["2", "1"]}
