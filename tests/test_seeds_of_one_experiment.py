"""Only seeds of one experiment are averaged: collect_results.py refuses rows whose runs differ in a setting
besides the seed, leaves evaluation-only runs out, keeps stage-1-only, ablated, noise-source and gated-GCS runs
in rows of their own, reads the sizes trained on, and resolves a relative data directory as the run did."""

import csv
import json
import os

import pytest

from tawt.testing import collect_results
from tawt.testing.output_tree import OutputTreeError, read_run
from tests.conftest import write_task_files
from tests.test_collect_results import write_run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("data"), sizes={"train": 2, "dev": 2, "test": 4}, seed=2)


def edit_record(directory, **changes):
    """Change run_args.json of a run directory: top-level keys, and `args` entries given as args={...}."""
    path = os.path.join(directory, "run_args.json")
    with open(path) as handle:
        record = json.load(handle)
    record["args"].update(changes.pop("args", {}))
    record.update(changes)
    with open(path, "w") as handle:
        json.dump(record, handle)


def collect(root, tmp_path, *flags):
    output_dir = str(tmp_path / "summary")
    collect_results.main([root, "--output_dir", output_dir, "--no_plots", *flags])
    tables = {}
    for name in ("table1", "other_runs", "method_comparisons"):
        path = os.path.join(output_dir, f"{name}.csv")
        tables[name] = list(csv.DictReader(open(path))) if os.path.isfile(path) else []
    return tables, open(os.path.join(output_dir, "table1.md")).read()


@pytest.mark.parametrize("setting, values, record_key", [
    ("learning_rate", (5e-4, 1e-3), None),
    ("num_train_epochs", (4.0, 2.0), None),
    ("max_seq_length", (128, 64), None),
    ("encoder", ("/models/minilm", "/models/bert-base"), "model_name_or_path"),
    ("load_best_model_at_end", (False, True), None),  # the last model tested, or the best on dev
])
def test_seeds_that_differ_in_a_setting_are_refused_naming_it_and_the_directories(data_dir, tmp_path, setting, values,
                                                                                  record_key):
    root = str(tmp_path / "out")
    directories = [write_run(root, data_dir, "weighted_joint", "ner", seed, 0.5, 0.5, weighting="tawt")
                   for seed in (1, 2)]
    for directory, value in zip(directories, values):
        edit_record(directory, **({record_key: value} if record_key else {"args": {setting: value}}))
    with pytest.raises(SystemExit) as raised:
        collect(root, tmp_path)
    error = str(raised.value.code)
    assert f"runs differ in {setting} ({values[0]!r} and {values[1]!r})" in error
    assert directories[0] in error and directories[1] in error and "weighted_joint ner" in error
    assert not os.path.exists(tmp_path / "summary" / "table1.md")  # nothing half-written


def test_a_setting_an_older_run_does_not_record_is_not_compared(data_dir, tmp_path):
    root = str(tmp_path / "out")
    first = write_run(root, data_dir, "joint", "ner", 1, 0.5, 0.5)
    write_run(root, data_dir, "joint", "ner", 2, 0.7, 0.7)
    edit_record(first, args={"learning_rate": 5e-4})
    tables, _ = collect(root, tmp_path)
    assert [row["seeds"] for row in tables["table1"] if row["main_task"] == "ner"] == ["1 2"]


def test_an_evaluation_only_run_is_no_seed_and_a_stage_1_only_run_no_pre_training(data_dir, tmp_path, caplog):
    root = str(tmp_path / "out")
    write_run(root, data_dir, "joint", "ner", 1, 0.19, 0.19)
    # The same trained model evaluated into another directory: run_args.json of seed 1 without --do_train.
    evaluation = write_run(root, data_dir, "joint", "ner", 2, 0.19, 0.19, do_train=False)
    write_run(root, data_dir, "pretraining", "ner", 1, 0.30, 0.3)
    write_run(root, data_dir, "pretraining", "ner", 2, 0.02, 0.0, pre_train_only=True)
    tables, markdown = collect(root, tmp_path)
    cells = {row["paradigm"]: row for row in tables["table1"] if row["main_task"] == "ner"}
    assert cells["joint"]["seeds"] == "1" and "19.00 ± " not in markdown
    assert f"skipping {evaluation}: it evaluated a saved model" in caplog.text
    assert cells["pretraining"]["seeds"] == "1" and float(cells["pretraining"]["mean"]) == pytest.approx(0.30)
    [other] = tables["other_runs"]
    assert (other["paradigm"], other["seeds"]) == ("pretraining_pre_train_only", "2")


def test_the_main_size_is_the_one_trained_on(data_dir, tmp_path):
    root = str(tmp_path / "out")
    for seed in (1, 2):
        directory = write_run(root, data_dir, "joint", "ner", seed, 0.5, 0.5, main_task_train_sent_num=500)
        edit_record(directory, training_data={"ner": {"file": os.path.join(data_dir, "train_ner.txt"), "sentences": 24,
                                                      "sha256": "f00"}})
    tables, _ = collect(root, tmp_path)
    assert {row["main_train_size"] for row in tables["table1"] if row["main_task"] == "ner"} == {"24"}


def test_a_relative_data_dir_is_resolved_as_the_run_resolved_it(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "project"
    directory = write_run(str(root / "out"), data_dir, "joint", "ner", 1, 0.5, 0.5)
    relative_output = os.path.relpath(directory, root)
    # Started from `project/` with --data_dir data: the training files' recorded paths say where that was.
    edit_record(directory, data_dir="data", args={"data_dir": "data", "output_dir": relative_output},
                training_data={"ner": {"file": os.path.join(data_dir, "train_ner.txt"), "sentences": 2}})
    monkeypatch.chdir(tmp_path)  # another directory, which has no data/
    assert read_run(directory).gold_file() == os.path.join(data_dir, "test_ner.txt")
    # Without the training files' record, a relative --output_dir that ends the run's path names the start.
    edit_record(directory, training_data={})
    assert read_run(directory).gold_file() == os.path.join(str(root), "data", "test_ner.txt")
    edit_record(directory, args={"output_dir": "elsewhere/seed_1"})
    with pytest.raises(OutputTreeError, match="records the relative data_dir 'data' and not the directory it was run "
                                              "from; pass --data_dir"):
        read_run(directory).gold_file()


def test_ablated_noise_and_gcs_variant_runs_are_rows_of_their_own(data_dir, tmp_path):
    root = str(tmp_path / "out")
    scores = {"joint": (0.50, 0.52), "weighted_joint": (0.60, 0.63), "weighted_joint_ablated": (0.55, 0.56),
              "joint_noise": (0.45, 0.48), "weighted_joint_noise": (0.58, 0.61), "joint_gcs_gated": (0.51, 0.50),
              "joint_gcs": (0.53, 0.56), "joint_forkmerge": (0.62, 0.60)}
    for seed in (1, 2):
        write_run(root, data_dir, "joint", "ner", seed, scores["joint"][seed - 1], 0.5)
        write_run(root, data_dir, "weighted_joint", "ner", seed, scores["weighted_joint"][seed - 1], 0.5, weighting="tawt")
        write_run(root, data_dir, "weighted_joint", "ner", seed, scores["weighted_joint_ablated"][seed - 1], 0.5,
                  weighting="tawt", ablate_source_cosines=True)
        for paradigm, weighting in (("joint", "fixed"), ("weighted_joint", "tawt")):
            noisy = write_run(root, data_dir, paradigm, "ner", seed, scores[paradigm + "_noise"][seed - 1], 0.5,
                              weighting=weighting, noise_source="pos")
            with open(os.path.join(noisy, "run_args.json")) as handle:
                record = json.load(handle)
            # As run_arguments records it: the control task TASK_noise joins the sources.
            edit_record(noisy, tasks=record["tasks"][:-1] + ["pos_noise", "ner"],
                        args={"auxiliary_task_list": record["tasks"][:-1] + ["pos_noise"]})
        # A GCS run without a recorded gcs_variant was made with the gated update.
        write_run(root, data_dir, "joint_gcs", "ner", seed, scores["joint_gcs_gated"][seed - 1], 0.5, weighting="gcs")
        write_run(root, data_dir, "joint_forkmerge", "ner", seed, scores["joint_forkmerge"][seed - 1], 0.5,
                  weighting="forkmerge")
    tables, markdown = collect(root, tmp_path)
    rows = {row["paradigm"]: row for row in tables["table1"] if row["main_task"] == "ner"}
    for row, (first, second) in scores.items():
        if row != "joint_gcs":
            assert float(rows[row]["mean"]) == pytest.approx((first + second) / 2), row
    assert "| GCS, gated joint training (earlier implementation) |" in markdown
    assert "| Weighted joint training + noise source |" in markdown
    compared = {(row["method"], row["baseline"]) for row in tables["method_comparisons"]}
    assert {
        ("Weighted joint training, source cosines ablated", "Joint training"),
        ("Weighted joint training", "Weighted joint training, source cosines ablated"),
        ("Joint training + noise source", "Joint training"),
        ("Weighted joint training + noise source", "Weighted joint training"),
        ("Weighted joint training + noise source", "Joint training + noise source"),
        ("GCS, gated joint training (earlier implementation)", "Joint training"),
        ("Weighted joint training", "GCS, gated joint training (earlier implementation)"),
        ("ForkMerge (Jiang et al. 2023)", "Weighted joint training, source cosines ablated"),
    } <= compared
    forkmerge_vs_ablation = next(row for row in tables["method_comparisons"]
                                 if row["baseline"] == "Weighted joint training, source cosines ablated"
                                 and row["method"].startswith("ForkMerge"))
    assert float(forkmerge_vs_ablation["mean_difference"]) == pytest.approx(100 * (0.61 - 0.555))
    # Once Du et al.'s update has runs, they are the GCS row, and the gated runs go to the other runs.
    for seed in (1, 2):
        write_run(root, data_dir, "joint_gcs", "ner", seed, scores["joint_gcs"][seed - 1], 0.5, weighting="gcs",
                  gcs_variant="du")
    tables, markdown = collect(root, tmp_path)
    rows = {row["paradigm"]: row for row in tables["table1"] if row["main_task"] == "ner"}
    assert "joint_gcs_gated" not in rows and float(rows["joint_gcs"]["mean"]) == pytest.approx(0.545)
    assert "| GCS (Du et al. 2018) |" in markdown
    assert [row["paradigm"] for row in tables["other_runs"]] == ["joint_gcs_gated"]
