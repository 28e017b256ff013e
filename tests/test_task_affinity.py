"""The task-affinity probe on the tiny fixtures: it ranks a source labelled by the target's own rule first."""

import csv
import json
import shutil

import numpy as np
import pytest

from tests.conftest import write_task_files
from tests.test_scripts import common
from tawt.testing import task_affinity


@pytest.fixture(scope="module")
def affinity_data_dir(tmp_path_factory):
    """The four tiny tasks, and ner_rule: other sentences of the tiny language, labelled by ner's own rule."""
    data_dir = write_task_files(tmp_path_factory.mktemp("affinity_data"), sizes={"train": 48, "dev": 4, "test": 4})
    other = write_task_files(tmp_path_factory.mktemp("other_sentences"), sizes={"train": 48, "dev": 4, "test": 4},
                             seed=1)
    for split in ("train", "dev", "test"):
        shutil.copy(f"{other}/{split}_ner.txt", f"{data_dir}/{split}_ner_rule.txt")
    shutil.copy(f"{other}/ner_labels.txt", f"{data_dir}/ner_rule_labels.txt")
    return data_dir


def probe(data_dir, model_dir, output_dir, *extra):
    return task_affinity.main([
        "--main_task", "ner", "--candidate_tasks", "pos", "ner_rule", "--data_dir", data_dir,
        "--model_name_or_path", model_dir, "--output_dir", str(output_dir), "--gradient_sampling_batch_size", "8",
        "--head_fit_steps", "300", "--max_seq_length", "32", *extra])


def test_probe_ranks_the_targets_own_rule_above_a_shuffled_control(affinity_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "affinity"
    rows = probe(affinity_data_dir, tiny_model_dir, output, "--add_shuffled_control", "--control_source", "ner_rule",
                 "--gradient_sampling_batches", "3", "--matrix")
    ranked = [row["task"] for row in rows]
    assert ranked[0] == "ner_rule" and ranked.index("ner_rule") < ranked.index("shuffled_ner_rule")
    by_task = {row["task"]: row for row in rows}
    assert by_task["ner_rule"]["mean_cosine"] > by_task["shuffled_ner_rule"]["mean_cosine"] + 0.2
    assert all(row["cosine_std"] > 0 for row in rows)  # three batches: a spread
    # One TAWT update from uniform moves weight towards the best candidate; the paper's four move more.
    assert by_task["ner_rule"]["weight_after_4_updates"] > by_task["ner_rule"]["weight_after_1_update"] > 1 / 3

    # The files exist and parse, and agree with what was returned.
    with open(output / "task_affinity_ner.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [row["task"] for row in written] == ranked
    assert float(written[0]["mean_cosine"]) == pytest.approx(rows[0]["mean_cosine"])
    record = json.loads((output / "task_affinity_ner.json").read_text())
    assert record["candidates"] == rows and record["args"]["gradient_sampling_batches"] == 3
    assert record["cpu_seconds"] > 0 and record["main_task_head_fit_loss"] < 1.0
    matrix = json.loads((output / "task_affinity_matrix.json").read_text())
    tasks = matrix["tasks"]
    assert tasks == ["ner", "pos", "ner_rule", "shuffled_ner_rule"]
    values = np.array(matrix["mean_cosine"], dtype=float)
    assert np.allclose(np.diag(values), 1.0)
    # The same batches and heads for every main task: cos(a, b) = cos(b, a).
    assert np.allclose(values, values.T, atol=1e-5)
    assert values[0, 1:].tolist() == pytest.approx([by_task[task]["mean_cosine"] for task in tasks[1:]])
    with open(output / "task_affinity_matrix.csv") as handle:
        assert [row["main_task"] for row in csv.DictReader(handle)] == tasks
    assert (output / "task_affinity_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_at_a_trained_runs_directory(affinity_data_dir, tiny_model_dir, tmp_path):
    import run_single_task

    trained = tmp_path / "trained"
    run_single_task.main(common(affinity_data_dir, tiny_model_dir, trained) + [
        "--task", "ner", "--train_sent_num", "16", "--num_train_epochs", "1"])
    rows = probe(affinity_data_dir, str(trained), tmp_path / "after", "--gradient_sampling_batches", "1")
    assert sorted(row["task"] for row in rows) == ["ner_rule", "pos"]
    assert all(row["cosine_std"] is None for row in rows)  # one batch: no spread
    record = json.loads((tmp_path / "after" / "task_affinity_ner.json").read_text())
    assert record["model_name_or_path"] == str(trained)


def test_shuffled_control_keeps_the_label_distribution_not_the_words(affinity_data_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    from utils_cross_task import IGNORED_LABEL_ID, load_task_split, read_labels

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = load_task_split(affinity_data_dir, "pos", "train", tokenizer, read_labels(affinity_data_dir, "pos"), 32)
    control = task_affinity.shuffled_control(split, seed=1)
    assert control.task == "shuffled_pos"

    def labelled(features):
        return [label for feature in features for label in feature.label_ids if label != IGNORED_LABEL_ID]

    assert sorted(labelled(control.features)) == sorted(labelled(split.features))
    changed = np.mean([a != b for a, b in zip(labelled(control.features), labelled(split.features))])
    assert changed > 0.5
    for original, shuffled in zip(split.features, control.features):
        assert shuffled.input_ids == original.input_ids
        assert [label == IGNORED_LABEL_ID for label in shuffled.label_ids] == \
            [label == IGNORED_LABEL_ID for label in original.label_ids]


def test_probe_usage_errors_are_one_line(affinity_data_dir, tiny_model_dir, tmp_path, capsys):
    from tawt.cross_task_training import run_main

    argv = ["--main_task", "ner", "--data_dir", affinity_data_dir, "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(tmp_path)]
    for candidates, message in (
        (["pos", "ner"], "--main_task ner is also in --candidate_tasks; name it once, as the main task"),
        (["pos", "absent"], "train_absent.txt"),
    ):
        with pytest.raises(SystemExit) as stopped:
            run_main(lambda: task_affinity.main(argv + ["--candidate_tasks", *candidates]))
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and message in error[0]
