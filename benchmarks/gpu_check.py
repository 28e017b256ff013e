"""The GPU check: each forward path eager and compiled, the benchmark's figures on one GPU in bf16, and
weighted joint runs, on randomly initialised encoders, on a bare machine with no network.

First, for a random BERT-base and a random MiniLM-shaped encoder, each forward path of PATHS (unpadded
eager, bucketed eager, bucketed compiled with CUDA graphs): training sentences/s against padding to 128
in the same run, ms a step, the host's share of a step (the share of the step's time the GPU runs no
kernel, by torch.profiler), TFLOP/s and the share of the bf16 peak, the head fit and evaluation. Then
the benchmark's figures (run_benchmarks.run_suite) on BERT-base; then a --bf16 weighted joint run with
each path and encoder, and one under --fp16. Time budgets (PATH_BUDGET_SECONDS, JOINT_BUDGET_SECONDS)
keep the whole check near 8 minutes; what they skip is marked so in its row.

Here, where the embedded default is installed (or with --data_dir and --model_name_or_path):

    python benchmarks/gpu_check.py pack                                  # writes gpu_pack/ (about 2 MB)

Then, on the GPU machine, from a copy of the repository that holds gpu_pack/ (git ignores it); PYTHONPATH=.
finds the top-level modules there without set-up's editable install:

    PYTHONPATH=. python benchmarks/gpu_check.py run --output results-gpu.json    # a few minutes on one GPU

`pack` writes a slice of the data (enough training sentences for every figure and for the joint runs, and
small dev and test sets) and the tokenizer files: nothing the GPU machine already has, and no weights,
since the encoder is built there from a BertConfig (timing and memory do not depend on the weights).
`run` reads only gpu_pack/ and the repository, and needs only torch, transformers (with tokenizers and
safetensors), numpy and tqdm. Without seqeval the joint runs train but skip their evaluation (the span F1
of ner and chunking needs it); spaCy, the MiniLM package, matplotlib and scipy are not used. Every figure
is printed as it is measured and the JSON rewritten after each, so a run cut short keeps what it
measured; it ends with the tables.
"""

import argparse
import gc
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time

# Everything the check needs is on this machine: never wait for a hub that cannot be reached. No progress
# bars either (tqdm reads this when torch first imports it): the log is read as plain lines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from tawt.benchmarks.run_benchmarks import (
    AUXILIARY_TASKS, SIZES, bf16_peak_flops, format_row, interleaved, machine_description, make_run, median,
    original_padding, print_table, row, run_suite, sentences_needed, subset, table_text, timed,
    training_flops_per_sentence, write_results,
)
from tawt.benchmarks.workloads import (
    MAIN_TASK, TASKS, build_model, load_tokenizer, load_workload, random_encoder, task_split,
)
from tawt.cross_task_training import UsageError, package_versions, resolve_data_dir, resolve_model_name_or_path
from tawt.data.conll_io import (
    SPLITS, labels_file_text, sample_sentences, task_file_text, write_files_atomically,
)
from tawt.output_files import TASK_WEIGHTS_FILE, TRAINING_LOG_FILE, write_text_atomic
from utils_cross_task import TaskDataError, read_labels, read_sentences, task_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACK_DIR = os.path.join(ROOT, "gpu_pack")
PACK_INFO = "pack_info.json"
PACK_LIMIT_BYTES = 60 * 2**20  # what travels to the GPU machine beside the working tree

# The figures on the GPU: BERT-base, the paper's batch sizes, a few repetitions each (the GPU is not
# shared, so there is little noise to cancel). The slowest part by far is the original's weight update:
# 4 x 110M gradient entries turned into Python floats on the host, about a minute, so it runs once.
GPU_SIZE = dict(encoder="bert-base", memory_encoder="bert-base", update_batch=64, update_repetitions=1,
                memory_batch=8, train_batch=32, train_batches_per_task=8, train_repetitions=3,
                head_sentences=300, head_repetitions=3, eval_sentences=128, eval_repetitions=3)
# The joint runs: the paper's 500 main-task sentences and batch 32; with sources of 1,000 sentences an
# epoch is 3 x 32 + 16 = 112 steps, so 300 steps make three TAWT updates.
JOINT = dict(steps=300, main_task_sentences=500, batch=32, logging_steps=25)
TINY_JOINT = dict(steps=12, main_task_sentences=8, batch=4, logging_steps=2)
PACK_SENTENCES = dict(train=1000, dev=200, test=200)

# The forward paths measured one by one: (name, --forward_path, compiled). Compiled runs use
# --torch_compile_mode reduce-overhead on a GPU (CUDA graphs), torch.compile's default on the CPU.
PATHS = (("unpadded, eager", "unpadded", False), ("bucketed, eager", "bucketed", False),
         ("bucketed, compiled", "bucketed", True))
PATH_ENCODERS = ("bert-base", "minilm")
# The check is sized for about 8 minutes on one GPU: the per-path figures start no new path after
# PATH_BUDGET_SECONDS, and no joint run starts after JOINT_BUDGET_SECONDS (both from the check's start;
# the figures of run_benchmarks take about 3 minutes in between). What is skipped says so in its row.
PATH_BUDGET_SECONDS = 240
JOINT_BUDGET_SECONDS = 450


# ---------------------------------------------------------------------------------------------------------
# pack


def pack(args):
    """Write the data slice and the tokenizer files into args.output_dir (replacing it); return its info."""
    from transformers import AutoTokenizer

    data_dir = resolve_data_dir(args.data_dir)
    model_name_or_path = resolve_model_name_or_path(args.model_name_or_path)
    counts = {"train": args.train_sentences, "dev": args.eval_sentences, "test": args.eval_sentences}
    needed = sentences_needed(GPU_SIZE)
    if args.train_sentences < needed:
        print(f"warning: --train_sentences {args.train_sentences} is below the {needed} the GPU figures draw on; "
              "they will use fewer", file=sys.stderr)
    files = {}
    for task in TASKS:
        for split in SPLITS:
            sentences = read_sentences(task_file(data_dir, split, task))
            chosen = sample_sentences(sentences, counts[split], seed=args.seed)
            files[f"{split}_{task}.txt"] = task_file_text((s.words, s.labels) for s in chosen)
        files[f"{task}_labels.txt"] = labels_file_text(read_labels(data_dir, task))
    output_dir = os.path.abspath(args.output_dir)
    staging = tempfile.mkdtemp(prefix=".gpu_pack-", dir=os.path.dirname(output_dir))
    try:
        write_files_atomically(os.path.join(staging, "data"), files)
        AutoTokenizer.from_pretrained(model_name_or_path).save_pretrained(os.path.join(staging, "tokenizer"))
        info = {"data_dir": data_dir, "tokenizer_of": model_name_or_path, "tasks": list(TASKS), "sentences": counts,
                "seed": args.seed, "bytes": directory_bytes(staging)}
        with open(os.path.join(staging, PACK_INFO), "w") as handle:
            json.dump(info, handle, indent=2)
        if info["bytes"] > PACK_LIMIT_BYTES:
            raise UsageError(f"the pack would take {info['bytes'] / 2**20:.1f} MiB, over the "
                             f"{PACK_LIMIT_BYTES // 2**20} MiB that travel to the GPU machine; lower --train_sentences")
        replace_directory(output_dir, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{output_dir}: {info['bytes'] / 2**20:.1f} MiB ({', '.join(f'{n} {s}' for s, n in counts.items())} "
          f"sentences of {' '.join(TASKS)}; the tokenizer of {model_name_or_path})")
    return info


def replace_directory(directory, staging):
    """Put the finished `staging` folder in the place of `directory` (a failure before this kept the old one)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the pack is an ordinary folder
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.rename(staging, directory)


def directory_bytes(directory):
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(directory) for name in names)


# ---------------------------------------------------------------------------------------------------------
# run


def read_pack(pack_dir, script="benchmarks/gpu_check.py"):
    """The pack_info.json of a pack that `python SCRIPT pack` made (this script's or gpu_session.py's)."""
    info_path = os.path.join(pack_dir, PACK_INFO)
    if not os.path.isfile(info_path):
        raise UsageError(f"{info_path} not found: make the pack first with `python {script} pack` "
                         "(where the embedded default is installed), or give --pack_dir")
    with open(info_path) as handle:
        return json.load(handle)


def has_module(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def joint_run(precision, model_dir, data_dir, device, joint, evaluate, workdir, path_flags=(), label=""):
    """One weighted joint run of run_weighted_joint.py, in this process, under --bf16 or --fp16, with
    `path_flags` (--forward_path, --torch_compile_mode) named by `label`.

    Returns its rows: the time, whether every logged loss is finite and every weight vector is on the
    simplex, and (on a GPU) the peak GPU memory.
    """
    import run_weighted_joint

    figure = f"weighted joint run --{precision}{label}, {joint['steps']} steps (s)"
    target = "finite loss, simplex weights"
    if precision == "fp16" and device.type != "cuda":
        return [row(figure, None, None, None, target, None, "s", skipped="--fp16 needs a GPU")]
    output_dir = os.path.join(workdir, f"joint_{precision}{''.join(c for c in label if c.isalnum())}")
    argv = ["--data_dir", data_dir, "--model_name_or_path", model_dir, "--output_dir", output_dir,
            "--overwrite_output_dir", "--auxiliary_task_list", *AUXILIARY_TASKS, "--main_task", MAIN_TASK,
            "--main_task_train_sent_num", str(joint["main_task_sentences"]), "--do_train",
            "--max_steps", str(joint["steps"]), "--per_gpu_train_batch_size", str(joint["batch"]),
            "--gradient_sampling_batch_size", str(2 * joint["batch"]), "--logging_steps", str(joint["logging_steps"]),
            f"--{precision}", *path_flags]
    argv += ["--do_eval", "--do_predict"] if evaluate else []
    argv += ["--no_cuda"] if device.type != "cuda" else []
    print(f"[{device.type}] weighted joint run: python run_weighted_joint.py {shlex.join(argv)}", flush=True)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    try:
        summary = run_weighted_joint.main(argv)
    except Exception as error:  # one failed run must not lose the figures measured so far
        return [row(figure, None, None, None, target, False, "s", error=f"{type(error).__name__}: {error}")]
    seconds = time.perf_counter() - started
    with open(os.path.join(output_dir, TRAINING_LOG_FILE)) as handle:
        losses = [json.loads(line)["loss"] for line in handle if line.strip()]
    with open(os.path.join(output_dir, TASK_WEIGHTS_FILE)) as handle:
        weights_file = json.load(handle)
    history = weights_file["history"]
    on_simplex = all(min(entry["weights"]) >= 0 and abs(sum(entry["weights"]) - 1) <= 1e-6 for entry in history)
    finite = bool(losses) and all(math.isfinite(loss) for loss in losses)
    scores = {key: value for key, value in (summary or {}).items() if key.endswith(("_eval", "_test"))}
    rows = [row(figure, seconds, None, None, target, finite and on_simplex and len(history) > 1, "s",
                losses=losses, weight_updates=len(history) - 1,
                final_weights=dict(zip(weights_file["tasks"], history[-1]["weights"])), evaluated=evaluate,
                scores=scores)]
    if device.type == "cuda":
        rows.append(row(f"  peak GPU memory of the --{precision} run (MB)", torch.cuda.max_memory_allocated(device)
                        / 2**20, None, None, "(detail)", None, "MB"))
    return rows


def compile_mode(device):
    return "reduce-overhead" if device.type == "cuda" else "default"


def kernel_seconds(function, device):
    """(wall seconds, seconds of GPU kernels) of `function`, by torch.profiler; kernels None on a CPU."""
    if device.type != "cuda":
        return timed(function, device)[0], None
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=activities) as profile:
        seconds = timed(function, device)[0]
    kernels = sum(event.self_device_time_total for event in profile.events()
                  if event.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    return seconds, kernels


def path_figures(device, kind, size, workload, tokenizer, run, deadline):
    """For encoder `kind`, each forward path of PATHS eager or compiled: training (sentences/s, ms a step,
    the host's share of a step, TFLOP/s and share of the bf16 peak, against padding to 128 in the same
    run), the head fit and evaluation. Yields rows as they are measured; stops at `deadline`."""
    import contextlib
    import io

    from tawt.evaluation import predict
    from tawt.training_loop import Trainer
    from weighted_training_basics import fit_head_on_frozen_encoder

    splits = {task: task_split(task, sentences, tokenizer, workload.labels[task])
              for task, sentences in workload.sentences.items()}
    count = size["train_batch"] * size["train_batches_per_task"]
    train_splits = {task: subset(splits[task], count) for task in TASKS}
    sentences = sum(len(split) for split in train_splits.values())
    steps = sum(-(-len(split) // size["train_batch"]) for split in train_splits.values())
    head_split = subset(splits[MAIN_TASK], size["head_sentences"])
    test = workload.sentences[MAIN_TASK][-4 * size["eval_sentences"]:]
    eval_split = task_split(MAIN_TASK, test, tokenizer, workload.labels[MAIN_TASK], "test")
    task_weights = {task: 1.0 / len(TASKS) for task in TASKS}
    peak = bf16_peak_flops(device)
    epochs = iter(range(10**6))
    reference_rate = None
    for name, forward_path, compiled in PATHS:
        if time.perf_counter() > deadline:
            yield row(f"[{kind}] {name}", None, None, None, "(detail)", None, "sent/s",
                      skipped="the per-path time budget was spent")
            continue
        model, description = build_model(kind, len(tokenizer), workload.labels)
        model.forward_path = forward_path
        model.to(device)
        if compiled:
            torch._dynamo.reset()
            model.compile_encoder(compile_mode(device))
        trainer = Trainer(model, run, total_steps=10**9, stage="paths")

        def train():
            with contextlib.redirect_stderr(io.StringIO()):
                trainer.train_epoch(train_splits, task_weights, next(epochs))

        def reference():
            with original_padding(model), contextlib.redirect_stderr(io.StringIO()):
                trainer.train_epoch(train_splits, task_weights, next(epochs))

        try:
            warm_up = timed(train, device)[0]  # the compilation (and CUDA graph recording) happens here
            if reference_rate is None:
                reference()
                times = interleaved({"ours": train, "reference": reference}, size["train_repetitions"], device)
                reference_rate = sentences / median(times["reference"])
            else:
                times = interleaved({"ours": train}, size["train_repetitions"], device)
            seconds, kernels = kernel_seconds(train, device)
            rate = sentences / median(times["ours"])
            flops = training_flops_per_sentence(model, train_splits) * rate
            yield row(f"[{kind}] {name}: training, batch {size['train_batch']} (sentences/s)", rate, reference_rate,
                      rate / reference_rate, "eager >= 2x, compiled >= 5x", None, "sent/s", encoder=description,
                      forward_path=forward_path, compiled=compiled, warm_up_seconds=warm_up, times=times)
            yield row(f"[{kind}] {name}:   ms a step", 1000 * median(times["ours"]) / steps, None, None, "(detail)",
                      None, "ms")
            yield row(f"[{kind}] {name}:   host's share of a step (%)",
                      None if kernels is None else 100 * max(0.0, 1 - kernels / seconds), None, None,
                      "(GPU idle: the host's work)", None, "%", kernel_seconds=kernels, profiled_seconds=seconds)
            yield row(f"[{kind}] {name}:   TFLOP/s (real tokens)", flops / 1e12, None, None,
                      "(detail)", None, "TFLOP/s", share_of_bf16_peak=None if peak is None else 100 * flops / peak)
            def fit():
                fit_head_on_frozen_encoder(model, MAIN_TASK, head_split, run, torch.Generator().manual_seed(3))

            fit()
            fit_times = [timed(fit, device)[0] for _ in range(size["head_repetitions"])]
            yield row(f"[{kind}] {name}: head fit, {len(head_split)} sentences (s)", median(fit_times), None, None,
                      "(detail)", None, "s", times=fit_times)
            def evaluate():
                predict(model, MAIN_TASK, eval_split, 64, device, run.pad_token_id, run.autocast)

            evaluate()
            eval_times = [timed(evaluate, device)[0] for _ in range(size["eval_repetitions"])]
            yield row(f"[{kind}] {name}: evaluation, {len(eval_split)} sentences (s)", median(eval_times), None,
                      None, "(detail)", None, "s", times=eval_times)
        except Exception as error:  # one path that fails must not lose the others' figures
            yield row(f"[{kind}] {name}", None, None, None, "(detail)", False, "sent/s",
                      error=f"{type(error).__name__}: {error}")
        del model, trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_check(args, argv):
    pack_dir = os.path.abspath(args.pack_dir)
    info = read_pack(pack_dir)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    if not use_cuda and not args.no_cuda:
        raise UsageError("no GPU is visible (torch.cuda.is_available() is False); run on a GPU machine, or pass "
                         "--no_cuda (with --tiny) to try the check on the CPU")
    device = torch.device("cuda" if use_cuda else "cpu")
    size, joint = (SIZES["tiny"], TINY_JOINT) if args.tiny else (GPU_SIZE, JOINT)
    versions = package_versions()
    evaluate = has_module("seqeval")
    print(f"GPU check on {machine_description(device)}; versions {versions}", flush=True)
    if not evaluate:
        print("seqeval is not installed: the joint runs train only (no dev/test evaluation)", flush=True)
    output = args.output or os.path.join(ROOT, "benchmarks", f"results-{device_name(device)}-gpu-check.json")
    table_path = os.path.splitext(output)[0] + ".txt"
    started = time.perf_counter()
    results = {"command": shlex.join(["python", "benchmarks/gpu_check.py", *argv]), "finished": False, "pack": info,
               "versions": versions, "sizes": size, "joint": joint, "suites": []}

    def report(suite, finished=False):
        results["suites"], results["seconds"] = [suite], time.perf_counter() - started
        results["finished"] = finished
        write_results(output, results)
        tables = [table_text(results["paths"])] if results.get("paths") else []
        write_text_atomic(table_path, "\n".join(tables + [table_text(suite)]))

    data_dir, tokenizer_dir = os.path.join(pack_dir, "data"), os.path.join(pack_dir, "tokenizer")
    workload = load_workload(sentences_needed(size), data_dir=data_dir)
    tokenizer = load_tokenizer(workload, tokenizer_dir)
    with tempfile.TemporaryDirectory(prefix="tawt-gpu-check-") as workdir:
        # First each forward path, eager and compiled, per encoder (the figures wanted most), then the
        # benchmark's figures against the original's approach, then the joint runs.
        paths = {"device": str(device), "machine": machine_description(device), "encoder": "per row",
                 "data": workload.source, "bf16": device.type == "cuda", "rows": []}
        results["paths"] = paths
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        path_run = make_run(device, workdir, tokenizer.pad_token_id, bf16=bf16,
                            per_gpu_train_batch_size=size["train_batch"])
        deadline = started + PATH_BUDGET_SECONDS
        for kind in (("tiny",) if args.tiny else PATH_ENCODERS):
            print(f"[{device.type}] measuring: forward paths, {kind}", flush=True)
            for entry in path_figures(device, kind, size, workload, tokenizer, path_run, deadline):
                paths["rows"].append(entry)
                print(f"[{device.type}] {format_row(entry)} {entry.get('error') or entry.get('skipped') or ''}",
                      flush=True)
                write_results(output, results)
        suite = run_suite(device, size, workload, tokenizer, workdir, report=report, host_memory=False)
        # The joint runs start from a saved model: the same random encoder, written with the tokenizer.
        for kind in (("tiny",) if args.tiny else PATH_ENCODERS):
            model_dir = os.path.join(workdir, f"random_encoder_{kind}")
            encoder, description = random_encoder(kind, len(tokenizer))
            encoder.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
            del encoder
            runs = [("bf16", name, path, compiled) for name, path, compiled in PATHS]
            if kind == size["encoder"]:
                runs.append(("fp16", "unpadded, eager", "unpadded", False))
            for precision, name, path, compiled in runs:
                flags = ["--forward_path", path] + (["--torch_compile_mode", compile_mode(device)] if compiled else [])
                label = f" [{kind}, {name}]"
                skipped = None
                if compiled and device.type != "cuda":
                    # Inductor compiles a bf16 run's kernels as C++ one by one: minutes on a small CPU. The
                    # compiled path's training, head fit and evaluation were measured above.
                    skipped = "a compiled joint run is measured on a GPU only"
                elif time.perf_counter() > started + JOINT_BUDGET_SECONDS and not args.tiny:
                    skipped = "the check's time budget was spent"
                if skipped is None:
                    entries = joint_run(precision, model_dir, data_dir, device, joint, evaluate, workdir, flags, label)
                else:
                    entries = [row(f"weighted joint run --{precision}{label}, {joint['steps']} steps (s)", None, None,
                                   None, "finite loss, simplex weights", None, "s", skipped=skipped)]
                for entry in entries:
                    suite["rows"].append(entry)
                    print(f"[{device.type}] {format_row(entry)} {entry.get('error') or entry.get('skipped') or ''}",
                          flush=True)
                report(suite)
    report(suite, finished=True)
    print_table(paths)
    print_table(suite)
    print(f"\n{results['command']}: {(time.perf_counter() - started) / 60:.1f} minutes; results written to {output} "
          f"and {table_path}")
    return results


def device_name(device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return "".join(character if character.isalnum() else "-" for character in name.lower()).strip("-")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the data slice and tokenizer files the GPU run needs")
    packing.add_argument("--output_dir", default=PACK_DIR, help="where the pack goes (replaced); default gpu_pack/")
    packing.add_argument("--data_dir", default=None, help="the data to slice; default: the embedded default data")
    packing.add_argument("--model_name_or_path", default=None,
                         help="the tokenizer to pack (its weights are not packed); default: the MiniLM encoder's "
                              "(the uncased BERT vocabulary)")
    packing.add_argument("--train_sentences", type=int, default=PACK_SENTENCES["train"],
                         help="training sentences per task (the figures draw on 812, the joint runs on all)")
    packing.add_argument("--eval_sentences", type=int, default=PACK_SENTENCES["dev"],
                         help="dev and test sentences per task (the joint runs' evaluation)")
    packing.add_argument("--seed", type=int, default=1, help="seed of the sentences' sample")
    running = commands.add_parser("run", help="measure on the GPU, offline, from the pack")
    running.add_argument("--pack_dir", default=PACK_DIR, help="the folder `pack` wrote; default gpu_pack/")
    running.add_argument("--output", default=None,
                         help="JSON file for the results (the table goes beside it, .txt); default "
                              "benchmarks/results-<gpu>-gpu-check.json")
    running.add_argument("--no_cuda", action="store_true", help="run on the CPU (with --tiny: a smoke test)")
    running.add_argument("--tiny", action="store_true", help="a tiny random encoder and a few steps (the test's size)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_arguments(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        return pack(args) if args.command == "pack" else run_check(args, argv)
    except (UsageError, TaskDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
