"""An archived grid (testing/archive_results.py) rebuilds its tables from its small files alone."""

import gzip
import json
import os
import shutil

import pytest

from tawt.testing import archive_results, collect_results
from tests.conftest import ROOT

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "grid_archive")


def test_table_1_rebuilds_from_the_committed_archive_alone(tmp_path):
    # A tiny grid (single-task, joint and weighted joint pos, two seeds) archived: results, weights, gzipped
    # predictions and gold test file; no model. Its table, significance marks included, must come back.
    archive = tmp_path / "archive"
    shutil.copytree(FIXTURE, archive, ignore=shutil.ignore_patterns("summary"))
    collect_results.main([str(archive), "--data_dir", str(archive / "data"), "--no_plots", "--note", "A tiny fixture."])
    for name in ("table1.md", "table1.csv", "method_comparisons.csv"):
        with open(os.path.join(FIXTURE, "summary", name), encoding="utf-8") as committed:
            assert (archive / "summary" / name).read_text() == committed.read(), name


def test_archive_keeps_results_weights_and_compressed_predictions_only(tiny_data_dir, tiny_model_dir, tmp_path, capsys):
    import run_weighted_joint
    from tests.test_scripts import common

    output_root = tmp_path / "outputs"
    run_dir = output_root / "main" / "weighted_joint" / "ner" / "seed_1"
    run_weighted_joint.main(common(tiny_data_dir, tiny_model_dir, run_dir) + [
        "--auxiliary_task_list", "pos", "--main_task", "ner", "--main_task_train_sent_num", "6",
        "--num_train_epochs", "1", "--gradient_sampling_batch_size", "4", "--eval_strategy", "epoch"])
    log = output_root / "logs" / "main" / "weighted_joint" / "ner" / "seed_1.log"
    log.parent.mkdir(parents=True)
    log.write_text("# sh run.sh\n# exit status 0 after 42 s\n")
    # A run still training (its log and arguments written, no all_results.json yet) is left out, and named.
    running = output_root / "main" / "weighted_joint" / "ner" / "seed_2"
    running.mkdir()
    for name in ("run.log", "run_args.json"):
        shutil.copyfile(run_dir / name, running / name)
    archive = tmp_path / "archive"
    archive_results.main([str(output_root), str(archive)])
    assert f"skipping {running}: its run has not finished (no all_results.json)" in capsys.readouterr().err
    kept = sorted(path.relative_to(archive).as_posix() for path in archive.rglob("*") if path.is_file())
    assert kept == sorted([
        "data/ner_labels.txt", "data/test_ner.txt.gz", "run_times.csv",
        *(f"main/weighted_joint/ner/seed_1/{name}" for name in (
            "dev_curve.json", "ner_eval_results.txt", "ner_test_predictions.txt.gz", "ner_test_results.txt",
            "run_args.json", "run_cost.json", "task_weights.json")),
    ])
    cost = json.loads((archive / "main/weighted_joint/ner/seed_1/run_cost.json").read_text())
    assert cost["seconds"] > 0 and cost["resumed"] is False and cost["peak_memory_mib"]["cpu"] > 100
    assert "gpu" not in cost["peak_memory_mib"]  # trained on the CPU
    with gzip.open(archive / "main/weighted_joint/ner/seed_1/ner_test_predictions.txt.gz", "rt") as handle:
        assert handle.read() == (run_dir / "ner_test_predictions.txt").read_text()
    assert "main/weighted_joint/ner/seed_1,weighted_joint,ner,1,42" in (archive / "run_times.csv").read_text()

    # The archive grows: a later section (another output root) adds its runs' times to the ones already there.
    times = archive / "run_times.csv"
    times.write_text("run,paradigm,main_task,seed,seconds\nmain/joint/ner/seed_1,joint,ner,1,7\n"
                     "main/weighted_joint/ner/seed_1,weighted_joint,ner,1,1\n")
    archive_results.main([str(output_root), str(archive)])
    assert times.read_text() == ("run,paradigm,main_task,seed,seconds\nmain/joint/ner/seed_1,joint,ner,1,7\n"
                                 "main/weighted_joint/ner/seed_1,weighted_joint,ner,1,42\n")


@pytest.mark.parametrize("grid", ["medium", "large"])
def test_the_published_grids_rebuild_their_tables_from_their_archives(grid, tmp_path):
    # results/<grid> is what results/<grid>/README.md quotes; the grid's own summary flags and note
    # must give back its committed table1.md and table1.csv from the archived files alone.
    from tawt.scripts.grid_file import preset_grid

    archive = os.path.join(ROOT, "results", grid)
    settings = preset_grid(grid)
    collect_results.main([archive, "--data_dir", os.path.join(archive, "data"), "--output_dir", str(tmp_path),
                          "--no_plots", *settings.summary_args, "--note", settings.note])
    for name in ("table1.md", "table1.csv", "other_runs.csv", "method_comparisons.csv"):
        with open(os.path.join(archive, "summary", name), encoding="utf-8") as committed:
            assert (tmp_path / name).read_text() == committed.read(), name


def test_the_large_grids_method_comparisons_give_the_figures_its_readme_quotes():
    # results/large/README.md reads these: the mark rests on the comparison over the three seeds.
    import csv

    path = os.path.join(ROOT, "results", "large", "summary", "method_comparisons.csv")
    with open(path, encoding="utf-8") as handle:
        rows = {(row["task"], row["method"], row["baseline"]): row for row in csv.DictReader(handle)}
    expected = {  # mean difference, 95% t-interval over seeds, p over seeds
        ("ner", "Weighted joint training", "Joint training"): (4.64, -0.62, 9.90, 0.063),
        ("brown_pos", "Weighted joint training", "Joint training"): (1.48, 0.97, 1.99, 0.006),
        ("ner", "Weighted normalized joint training", "Normalized joint training"): (3.17, -1.59, 7.93, 0.103),
        ("ner", "GCS, gated joint training (earlier implementation)", "Joint training"): (1.08, -1.66, 3.83, 0.232),
        ("ner", "OL-AUX (Lin et al. 2019)", "Joint training"): (3.34, -2.66, 9.33, 0.139),
    }
    for key, (mean, low, high, p_value) in expected.items():
        # a gated GCS row that GCS as Du et al. define it replaced in Table 1 is among the other runs, its name
        # followed by its settings
        row = rows.get(key) or next(row for (task, method, baseline), row in rows.items()
                                    if (task, baseline) == (key[0], key[2]) and method.startswith(key[1] + " ("))
        assert [round(float(row[name]), 2) for name in ("mean_difference", "ci_low", "ci_high")] == [mean, low, high]
        assert float(row["p_value"]) == pytest.approx(p_value, abs=0.0005)
        assert row["seeds"] == "1 2 3" and row["significant"] == "False"  # none survives Holm's correction
