"""The benchmark command runs end to end at a tiny size (one repetition); no timing is asserted."""

import json

from tawt.benchmarks import reference_original, run_benchmarks
from tawt.benchmarks.workloads import collate_padded_to_max_length
from utils_cross_task import Feature, collate


def test_original_padding_does_not_change_the_batch_content():
    features = [Feature([2, 5, 3], [-100, 1, -100], 0, [0]), Feature([2, 3], [-100, -100], 1, [])]
    per_batch, padded = collate(features, 0), collate_padded_to_max_length(features, 0)
    assert padded["input_ids"].shape == (2, 128)
    for name in per_batch:
        assert (padded[name][:, :3] == per_batch[name]).all()
    assert (padded["labels"][:, 3:] == -100).all() and (padded["attention_mask"][:, 3:] == 0).all()


def test_reference_cosine_matches_numpy_definition():
    assert abs(reference_original.get_cosine([1.0, 0.0], [1.0, 1.0]) - 2 ** -0.5) < 1e-12


def test_benchmark_command_runs_at_tiny_size(tmp_path):
    output = tmp_path / "results.json"
    suites = run_benchmarks.main(["--tiny", "--no_cuda", "--output", str(output)])
    figures = [entry["figure"] for entry in suites[0]["rows"]]
    for expected in ("weight update", "ceiling", "peak memory", "training throughput", "--padded_forward", "loop overhead",
                     "same loss", "TAWT overhead", "--weight_update_steps 100", "head fit", "task-affinity probe",
                     "evaluation time"):
        assert any(expected in figure for figure in figures), expected
    results = json.loads(output.read_text())
    rows = results["suites"][0]["rows"]
    assert all(entry["ours"] is not None for entry in rows)
    # Every figure has the original's approach beside it, except the probe: the original has no such tool.
    assert all(entry["reference"] is not None for entry in rows if "probe" not in entry["figure"])
    # Padding must not change results, and both implementations agree on the new weights.
    same_loss = next(entry for entry in rows if entry["figure"].startswith("same loss"))
    assert same_loss["met"]
    update = rows[0]
    assert update["max_weight_difference"] < 1e-4


def test_method_costs_runs_every_method_through_its_script_and_compares_them(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                            capsys):
    from tawt.benchmarks import method_costs

    output = tmp_path / "costs.json"
    method_costs.main(["--data_dir", str(tiny_data_dir), "--model_name_or_path", str(tiny_model_dir),
                       "--main_task", "ner", "--sources", "pos", "chunking", "--main_sentences", "8", "--epochs", "1",
                       "--repetitions", "1", "--methods", "joint", "tawt", "forkmerge", "--output", str(output),
                       "--work_dir", str(tmp_path / "runs")])
    results = json.loads(output.read_text())
    assert list(results["medians"]) == ["joint", "tawt", "forkmerge"]
    for method, (run,) in results["runs"].items():
        assert run["wall_seconds"] >= run["run_seconds"] > 0 and run["peak_memory_mib"]["cpu"] > 100, method
        assert "f1" in run["test"], method
    # each ran its own method: ForkMerge's record holds its merges, TAWT's its weight updates
    merges = json.loads((tmp_path / "runs" / "forkmerge_round1" / "task_weights.json").read_text())["history"]
    assert any(entry["stage"] == "merge" for entry in merges)
    assert json.loads((tmp_path / "runs" / "tawt_round1" / "run_args.json").read_text())["args"]["weighting"] == "tawt"
    table = capsys.readouterr().out
    assert "| ForkMerge |" in table and "wall_seconds / tawt" in table
    assert "| TAWT (weighted joint) |" in table and "| 1.00× |" in table  # TAWT against itself
