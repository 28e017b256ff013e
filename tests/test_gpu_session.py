"""The GPU session's two commands end to end on the CPU at tiny sizes: `pack` from tiny files (never the
embedded default data or MiniLM), then `run --no_cuda --tiny` (the GPU check at its tiny size, then the
large grid's normalized section, one seed, one epoch), and the budget's stop. No timing is asserted."""

import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import time

import pytest
import torch
from safetensors.torch import load_file

from tawt.benchmarks import gpu_session
from tawt.benchmarks.gpu_check import directory_bytes
from tawt.cross_task_training import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_SESSION = os.path.join(ROOT, "benchmarks", "gpu_session.py")
SIZES = {"train": 24, "dev": 8, "test": 8}


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, tiny_data_dir, tiny_model_dir):
    pack = tmp_path_factory.mktemp("session") / "pack"
    gpu_session.main(["pack", "--output_dir", str(pack), "--data_dir", tiny_data_dir, "--model_name_or_path",
                      tiny_model_dir, "--main_tasks", "ner", *(f"--{split}_sentences={count}" for split, count in
                                                              SIZES.items()),
                      "--weights", "float16", "--gpu_check_pack_args", "--train_sentences 24 --eval_sentences 8"])
    return pack


def test_pack_holds_the_grid_slice_the_encoder_in_float16_the_check_pack_and_seqeval(pack_dir, tiny_model_dir):
    info = json.loads((pack_dir / "pack_info.json").read_text())
    for task in ("ner", "pos", "chunking", "predicate"):  # ner's sources and the grid's analysis tasks
        for split, count in SIZES.items():
            assert (pack_dir / "data" / f"{split}_{task}.txt").read_text().count("\n\n") == count
    assert json.loads((pack_dir / "data" / "slice_info.json").read_text())["train_sentences"] == "random, seed 42"
    assert (pack_dir / "gpu_check" / "pack_info.json").is_file() and (pack_dir / "gpu_check" / "data").is_dir()
    assert {"config.json", "vocab.txt", "tokenizer_config.json"} <= set(os.listdir(pack_dir / "encoder"))
    original = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    packed = load_file(str(pack_dir / "encoder" / "model.safetensors"))
    assert set(packed) == set(original)
    assert all(tensor.dtype == torch.float16 for tensor in packed.values())
    for name, tensor in original.items():
        assert torch.equal(packed[name], tensor.to(torch.float16)), name
    assert 0 < info["weights_rounding"]["largest_relative_error"] < 1e-3
    assert (pack_dir / "site" / "seqeval" / "metrics" / "sequence_labeling.py").is_file()
    assert info["bytes"] == {name: directory_bytes(pack_dir / name)
                             for name in ("data", "gpu_check", "site", "encoder")}
    assert info["travelling_bytes"] == info["pack_bytes"] + info["working_tree_bytes"]
    # The packed seqeval is complete: imported from the pack (PYTHONPATH comes before site-packages).
    found = subprocess.run([sys.executable, "-c", "import seqeval.metrics, seqeval; print(seqeval.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(pack_dir / "site")}, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().startswith(str(pack_dir / "site"))


def test_pack_sizes_choose_float16_only_when_float32_does_not_fit():
    room = gpu_session.TRAVEL_LIMIT_BYTES - gpu_session.TRAVEL_MARGIN_BYTES
    assert gpu_session.weights_dtype("auto", room - 100, 100) == "float32"
    assert gpu_session.weights_dtype("auto", room - 100, 101) == "float16"
    assert gpu_session.weights_dtype("float32", room, 10**9) == "float32"
    gpu_session.check_travelling_size(room)
    with pytest.raises(UsageError, match="over the 62.0 MiB that may travel"):
        gpu_session.check_travelling_size(room + 1)


def test_run_on_the_cpu_writes_the_check_the_archive_and_the_logs(pack_dir, tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    completed = subprocess.run(
        [sys.executable, GPU_SESSION, "run", "--pack_dir", str(pack_dir), "--no_cuda", "--tiny", "--out", str(out),
         "--scratch_dir", str(scratch), "--jobs", "2", "--seeds", "1", "--sections", "normalized",
         # budgets far above what the tiny sizes need, so that a loaded machine does not stop a phase early
         "--budget_minutes", "14", "--check_minutes", "6"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.rstrip().splitlines()[-1].startswith("session ")  # the session's table comes last
    assert "runs finished" in completed.stdout and "2 of 2" in completed.stdout
    assert re.search(r"^during the grid +host load", completed.stdout, re.MULTILINE)
    check = json.loads((out / "gpu_check.json").read_text())
    assert check["finished"] and (out / "gpu_check.txt").is_file()
    session = json.loads((out / "session.json").read_text())
    assert session["runs"] == {**session["runs"], "planned": 2, "finished": 2, "not_finished": []}
    assert session["phases"]["archive"]["exit_status"] == 0
    assert session["grid_settings"]["EXTRA_ARGS"] == "--bf16"  # added to the grid's own flags, not repeating them
    with tarfile.open(out / "grid_archive.tar.gz") as archive:
        names = set(archive.getnames())
        run = "large_gpu/normalized/weighted_normalized_joint/ner/seed_1"
        assert {f"{run}/ner_test_results.txt", f"{run}/task_weights.json", f"{run}/ner_test_predictions.txt.gz",
                "large_gpu/summary/table1.md", "large_gpu/summary/significance.csv", "large_gpu/run_times.csv",
                "large_gpu/data/test_ner.txt.gz"} <= names
        run_args = json.load(archive.extractfile(f"{run}/run_args.json"))
        table1 = archive.extractfile("large_gpu/summary/table1.md").read().decode()
        gold = gzip.decompress(archive.extractfile("large_gpu/data/test_ner.txt.gz").read()).decode()
    # The runs trained on the pack, with the grid's flags and --bf16 added.
    assert run_args["data_dir"] == str(pack_dir / "data")
    assert run_args["model_name_or_path"] == str(pack_dir / "encoder")
    flags = run_args["args"]
    assert flags["bf16"] and flags["learning_rate"] == 5e-4 and flags["eval_main_task_only"]
    assert run_args["command"].count("--eval_main_task_only") == 1 and run_args["command"].count("--bf16") == 1
    assert "Weighted normalized joint training" in table1
    assert table1.split("\n# Other runs")[0].rstrip() in completed.stdout  # printed at the end
    assert gold == (pack_dir / "data" / "test_ner.txt").read_text()
    with tarfile.open(out / "grid_logs.tar.gz") as logs:
        log = logs.extractfile("logs/normalized/weighted_normalized_joint/ner/seed_1.log").read().decode()
    assert "# exit status 0" in log
    assert len(os.listdir(out)) <= gpu_session.FILES_BACK  # what may come back from $OUT


def test_a_command_past_the_deadline_is_stopped_with_what_it_started(tmp_path):
    pid_file, log = tmp_path / "pid", tmp_path / "log"
    began = time.monotonic()
    status, seconds, stopped = gpu_session.run_until(
        ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo started; wait"], str(log), dict(os.environ),
        time.monotonic() + 2)
    assert stopped and status != 0 and time.monotonic() - began < 30
    text = log.read_text()
    assert "started" in text and "(stopped)" in text.splitlines()[-1]
    child = int(pid_file.read_text())
    for _ in range(50):  # the background sleep was in the command's process group: it is gone too
        if not running(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {child} outlived the stopped command")


def running(pid):
    """Whether process `pid` exists and is not a zombie (a container's init may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_without_a_pack_says_how_to_make_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_session.main(["run", "--pack_dir", str(tmp_path / "missing"), "--no_cuda", "--tiny",
                          "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "benchmarks/gpu_session.py pack" in capsys.readouterr().err


def test_the_usage_sampler_reads_nvidia_smi_and_the_load(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"  # answers the sampler's query as nvidia-smi does, for two GPUs
    fake.write_text("#!/bin/sh\nprintf '37, 1200\\n12, 3400\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with gpu_session.UsageSampler(interval=0.05) as sampler:
        time.sleep(0.5)
    summary = sampler.summary()
    assert summary["samples"] >= 2 and summary["mean_host_load"] >= 0
    assert summary["mean_gpu_utilization_percent"] == 37 and summary["peak_gpu_memory_mib"] == 3400
