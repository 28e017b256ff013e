"""Sentence-level tasks (one label per example, .tsv files) beside tagging tasks, on the tiny fixtures."""

import json
import os
import random
import shutil

import pytest
import torch

import run_single_task
import run_weighted_joint
import run_weighted_normalized_joint
import run_weighted_pretraining
from tawt.errors import TaskDataError, UsageError
from modeling_multi_bert import HEADS_CONFIG, MultiTaskTagger
from tawt.sequence_metrics import classification_counts, classification_scores, compute_metrics
from tests.conftest import NAMES, NOUNS, VERBS, write_task_files
from tests.test_scripts import common, read_results, weight_history
from utils_cross_task import (
    collate, encode_sentence_examples, is_sentence_task, read_sentence_examples, read_sentence_predictions,
    read_sentences, task_file,
)

TAGGING_SOURCES = ["pos", "chunking"]


def _topic_example(rng):
    """A sentence about a person or a thing: its label is which (a head on [CLS] can learn it)."""
    person = rng.random() < 0.5
    subject = rng.choice(NAMES) if person else f"the {rng.choice(NOUNS)}"
    return ("person" if person else "thing"), f"{subject} {rng.choice(VERBS)} a {rng.choice(NOUNS)} ."


def write_sentence_tasks(data_dir, sizes=None, seed=1):
    """Add a single-text task `topic` (person / thing) and a pair task `same_verb` (yes / no) to `data_dir`."""
    sizes = sizes or {"train": 24, "dev": 8, "test": 8}
    rng = random.Random(seed)
    for split, count in sizes.items():
        with open(os.path.join(data_dir, f"{split}_topic.tsv"), "w") as handle:
            for _ in range(count):
                handle.write("\t".join(_topic_example(rng)) + "\n")
        with open(os.path.join(data_dir, f"{split}_same_verb.tsv"), "w") as handle:
            for _ in range(count):
                first, second = rng.choice(VERBS), rng.choice(VERBS)
                label = "yes" if first == second else "no"
                handle.write(f"{label}\tthe dog {first} a cat .\tmary {second} the tree .\n")
    with open(os.path.join(data_dir, "topic_labels.txt"), "w") as handle:
        handle.write("person\nthing\n")
    with open(os.path.join(data_dir, "same_verb_labels.txt"), "w") as handle:
        handle.write("no\nyes\n")
    return data_dir


@pytest.fixture(scope="module")
def mixed_data_dir(tmp_path_factory):
    data_dir = write_task_files(tmp_path_factory.mktemp("mixed_data"))
    return write_sentence_tasks(data_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# ---------------------------------------------------------------------------------------------------------
# Reading and encoding


def test_reader_takes_single_texts_and_pairs(mixed_data_dir):
    assert is_sentence_task(mixed_data_dir, "topic") and not is_sentence_task(mixed_data_dir, "pos")
    assert task_file(mixed_data_dir, "dev", "topic").endswith("dev_topic.tsv")
    examples = read_sentences(task_file(mixed_data_dir, "train", "topic"))
    assert len(examples) == 24 and all(len(example.labels) == 1 and len(example.words) == 1 for example in examples)
    pairs = read_sentence_examples(os.path.join(mixed_data_dir, "train_same_verb.tsv"), max_examples=5)
    assert len(pairs) == 5 and all(len(pair.words) == 2 for pair in pairs)
    assert pairs[0].line_numbers == [1]


@pytest.mark.parametrize("text, message", [
    ("person\tjohn runs .\nthing\n", r"bad\.tsv line 2: 1 tab-separated column\(s\); each line must be 'label<TAB>text'"),
    ("person\tjohn runs .\n\tthe dog runs .\n", r"bad\.tsv line 2: the label is empty"),
    ("person\tjohn runs .\nthing\ta\tb\tc\n", r"line 2: 4 tab-separated column"),
    ("yes\ta\tb\nno\tc\n", r"line 2: a single text, but line 1 has a pair of texts"),
    ("\n\n", r"holds no example"),
])
def test_reader_refuses_bad_lines_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(TaskDataError, match=message):
        read_sentence_examples(str(path))


def test_task_with_both_kinds_of_file_is_refused(tmp_path):
    data_dir = write_task_files(tmp_path / "data")
    shutil.copy(os.path.join(data_dir, "train_pos.txt"), os.path.join(data_dir, "dev_topic.txt"))
    write_sentence_tasks(data_dir)
    with pytest.raises(TaskDataError, match=r"task topic has tagging files \(dev_topic.txt\) and sentence-level files"):
        task_file(data_dir, "train", "topic")


def test_encoding_gives_one_label_per_example_and_pair_segments(mixed_data_dir, tokenizer):
    pairs = read_sentence_examples(os.path.join(mixed_data_dir, "train_same_verb.tsv"))
    features, report = encode_sentence_examples(tokenizer, pairs, {"no": 0, "yes": 1}, max_seq_length=32)
    assert report.truncated_examples == 0
    assert all(feature.sentence_level and len(feature.label_ids) == 1 for feature in features)
    assert [feature.label_ids[0] for feature in features] == [int(pair.labels[0] == "yes") for pair in pairs]
    assert set(features[0].token_type_ids) == {0, 1}  # the second text is the second segment
    batch = collate(features[:3], pad_token_id=0, pad_to_multiple_of=16, rows=4)
    assert batch["labels"].shape == (4, 1) and batch["labels"][3, 0] == -100  # an added row carries no label
    assert batch["token_type_ids"].shape == batch["input_ids"].shape == (4, 16)
    # Cut to the length limit, never dropped: the label is still predicted from what is kept.
    cut, report = encode_sentence_examples(tokenizer, pairs[:2], {"no": 0, "yes": 1}, max_seq_length=8)
    assert report.truncated_examples == 2 and all(len(feature.input_ids) == 8 for feature in cut)


# ---------------------------------------------------------------------------------------------------------
# The model


def _model(tiny_model_dir, **options):
    return MultiTaskTagger.from_encoder(tiny_model_dir, {"pos": ["NN", "VB"], "same_verb": ["no", "yes"]},
                                        sentence_tasks=["same_verb"], **options)


def test_sentence_head_reads_one_state_per_example_on_every_forward_path(mixed_data_dir, tiny_model_dir, tokenizer):
    pairs = read_sentence_examples(os.path.join(mixed_data_dir, "dev_same_verb.tsv"))
    features, _ = encode_sentence_examples(tokenizer, pairs, {"no": 0, "yes": 1}, max_seq_length=32)
    logits_by_path = {}
    for path, unpadded in (("unpadded", True), ("bucketed", True), ("unpadded", False)):
        torch.manual_seed(0)
        model = _model(tiny_model_dir, forward_path=path, unpadded=unpadded).eval()
        batch = model.collate_batch(features, 0, rows=len(features) + 2)
        loss, logits = model("same_verb", batch["input_ids"], batch["attention_mask"], batch["labels"],
                             batch.get("token_index"), batch["token_type_ids"])
        assert logits.shape == (batch["input_ids"].shape[0], 1, 2)  # no token logits
        assert torch.isfinite(loss)
        logits_by_path[model.forward_path] = logits[: len(features)]
    assert set(logits_by_path) == {"unpadded", "bucketed", "encoder"}
    for logits in logits_by_path.values():
        torch.testing.assert_close(logits, logits_by_path["encoder"], rtol=1e-4, atol=1e-4)
    # The segments matter: without them the pair reads differently.
    model = _model(tiny_model_dir).eval()
    batch = model.collate_batch(features, 0)
    _, without_segments = model("same_verb", batch["input_ids"], batch["attention_mask"],
                                token_index=batch["token_index"])
    assert not torch.allclose(without_segments, logits_by_path["unpadded"])


def test_mean_pooling_masks_padding(tiny_model_dir):
    model = _model(tiny_model_dir, sentence_pooling="mean")
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert model.task_states("same_verb", hidden, mask).flatten().tolist() == [1.0, 3.5]
    assert model.task_states("pos", hidden, mask) is hidden


def test_saved_model_keeps_sentence_heads_and_old_models_load(tiny_model_dir, tmp_path):
    model = _model(tiny_model_dir, sentence_pooling="mean")
    model.save_pretrained(tmp_path / "saved")
    again = MultiTaskTagger.from_pretrained(tmp_path / "saved")
    assert again.sentence_tasks == ["same_verb"] and again.sentence_pooling == "mean"
    theirs = again.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    # A model saved before sentence-level tasks existed: no such keys, every head a tagging head.
    config_path = tmp_path / "saved" / HEADS_CONFIG
    config = json.loads(config_path.read_text())
    del config["sentence_tasks"], config["sentence_pooling"]
    config_path.write_text(json.dumps(config))
    old = MultiTaskTagger.from_pretrained(tmp_path / "saved")
    assert old.sentence_tasks == [] and old.sentence_pooling == "first"


# ---------------------------------------------------------------------------------------------------------
# Metrics


def test_classification_metrics_and_counts():
    labels = ["a", "b", "c"]
    gold, predicted = [["a"], ["b"], ["a"], ["c"]], [["a"], ["a"], ["a"], ["c"]]
    metrics = compute_metrics("topic", labels, gold, predicted, sentence_level=True)
    assert metrics == pytest.approx({"accuracy": 0.75, "macro_f1": (0.8 + 0.0 + 1.0) / 3})
    # Per-example counts sum to the same corpus metric, for any subset (what a bootstrap resamples).
    counts = classification_counts(gold, predicted, labels)
    assert counts.shape == (4, 10)
    assert classification_scores(counts.sum(0), labels) == pytest.approx(metrics)
    assert classification_scores(counts[[0, 3]].sum(0), labels)["accuracy"] == 1.0
    two = compute_metrics("x", ["negative", "positive"], [["positive"], ["negative"]], [["positive"], ["positive"]],
                          sentence_level=True)
    assert two["f1"] == pytest.approx(2 / 3) and two["accuracy"] == 0.5  # F1 of 'positive'


# ---------------------------------------------------------------------------------------------------------
# Every paradigm: a sentence-level target with tagging sources, and a tagging target with a sentence source

PARADIGMS = [
    ("single", run_single_task, []),
    ("joint", run_weighted_joint, ["--weighting", "fixed"]),
    ("weighted_joint", run_weighted_joint, ["--weighting", "tawt", "--weight_update_steps", "3"]),
    ("normalized_joint", run_weighted_normalized_joint, ["--weighting", "fixed"]),
    ("weighted_normalized_joint", run_weighted_normalized_joint, ["--weighting", "tawt"]),
    ("pretraining", run_weighted_pretraining, ["--weighting", "fixed"]),
    ("weighted_pretraining", run_weighted_pretraining, ["--weighting", "tawt"]),
    ("gcs", run_weighted_joint, ["--weighting", "gcs", "--gcs_mode", "weighted"]),
    ("olaux", run_weighted_normalized_joint, ["--weighting", "olaux", "--weight_update_steps", "3"]),
]


def run_paradigm(script, flags, data_dir, model_dir, output, main_task, sources):
    tasks = ["--task", main_task] if script is run_single_task else [
        "--main_task", main_task, "--auxiliary_task_list", *sources, "--main_task_train_sent_num", "12",
        "--gradient_sampling_batch_size", "8"]
    return script.main(common(data_dir, model_dir, output) + tasks + flags)


def check_sentence_outputs(output, task, data_dir):
    for split in ("eval", "test"):
        results = read_results(output / f"{task}_{split}_results.txt")
        assert results["metric_family"] == "classification"
        assert 0.0 <= float(results["accuracy"]) <= 1.0 and "macro_f1" in results
    gold_examples = read_sentence_examples(os.path.join(data_dir, f"test_{task}.tsv"))
    gold, predicted = read_sentence_predictions(output / f"{task}_test_predictions.txt")
    assert gold == [example.labels[0] for example in gold_examples]
    assert len(predicted) == len(gold) and set(predicted) <= {"person", "thing", "yes", "no"}


@pytest.mark.parametrize("name, script, flags", PARADIGMS, ids=[name for name, _, _ in PARADIGMS])
def test_sentence_target_with_tagging_sources(mixed_data_dir, tiny_model_dir, tmp_path, name, script, flags):
    output = tmp_path / name
    summary = run_paradigm(script, flags, mixed_data_dir, tiny_model_dir, output, "topic", TAGGING_SOURCES)
    check_sentence_outputs(output, "topic", mixed_data_dir)
    assert summary["topic_test"]["metric_family"] == "classification"
    with open(output / HEADS_CONFIG) as handle:
        assert json.load(handle)["sentence_tasks"] == ["topic"]
    if "weighted" in name:
        history = weight_history(output)["history"]
        assert len(history) > 1 and all(entry["cosine_similarities"] for entry in history[1:])
        assert history[-1]["weights"] != history[0]["weights"]


@pytest.mark.parametrize("name, script, flags", PARADIGMS[1:], ids=[name for name, _, _ in PARADIGMS[1:]])
def test_tagging_target_with_a_sentence_source(mixed_data_dir, tiny_model_dir, tmp_path, name, script, flags):
    output = tmp_path / name
    summary = run_paradigm(script, flags, mixed_data_dir, tiny_model_dir, output, "ner", ["same_verb", "pos"])
    assert summary["ner_test"]["metric_family"] == "span"
    check_sentence_outputs(output, "same_verb", mixed_data_dir)
    if "weighted" in name:
        history = weight_history(output)
        position = history["tasks"].index("same_verb")
        cosines = [entry["cosine_similarities"][position] for entry in history["history"][1:]]
        assert cosines and all(cosine is not None and -1 <= cosine <= 1 for cosine in cosines)


def test_saved_mixed_model_evaluates_again_and_levels_must_match(mixed_data_dir, tiny_model_dir, tmp_path):
    output = tmp_path / "trained"
    summary = run_single_task.main(common(mixed_data_dir, tiny_model_dir, output) + ["--task", "same_verb"])
    again = run_single_task.main(["--data_dir", mixed_data_dir, "--model_name_or_path", str(output), "--output_dir",
                                  str(tmp_path / "again"), "--task", "same_verb", "--do_predict",
                                  "--max_seq_length", "32"])
    assert again["same_verb_test"]["accuracy"] == summary["same_verb_test"]["accuracy"]
    # The same task name as a tagging task: refused before anything is written.
    other = write_task_files(tmp_path / "tagging_data")
    for split in ("train", "dev", "test"):
        shutil.copy(os.path.join(other, f"{split}_pos.txt"), os.path.join(other, f"{split}_same_verb.txt"))
    shutil.copy(os.path.join(other, "pos_labels.txt"), os.path.join(other, "same_verb_labels.txt"))
    with pytest.raises(UsageError, match=r"task same_verb: its files in .* are tagging \(\.txt\), but the model"):
        run_single_task.main(["--data_dir", other, "--model_name_or_path", str(output), "--output_dir",
                              str(tmp_path / "refused"), "--task", "same_verb", "--do_predict", "--max_seq_length",
                              "32"])


# ---------------------------------------------------------------------------------------------------------
# process_data.py hf: sentence-level datasets built here with the hub datasets' schemas


def _hub_like(tmp_path, name, text_columns, labels, rows, label_column="label", splits=("train", "validation")):
    """A save_to_disk DatasetDict with `text_columns`, a ClassLabel (or string, when `labels` is None) label."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({**{column: Value("string") for column in text_columns},
                         label_column: Value("string") if labels is None else ClassLabel(names=labels)})
    path = tmp_path / name
    DatasetDict({split: Dataset.from_list(rows, features=features) for split in splits}).save_to_disk(str(path))
    return str(path)


HUB_LAYOUTS = [
    ("ag_news", ("text",), ["World", "Sports"], [{"text": "Match  won\\tat home", "label": 1}, {"text": "Talks", "label": 0}]),
    ("sst2", ("sentence",), ["negative", "positive"], [{"sentence": "a fine film", "label": 1},
                                                        {"sentence": "dull", "label": 0}]),
    ("snli", ("premise", "hypothesis"), ["entailment", "neutral", "contradiction"],
     [{"premise": "a dog runs", "hypothesis": "an animal moves", "label": 0},
      {"premise": "a cat sleeps", "hypothesis": "the cat runs", "label": 2}]),
    ("mrpc", ("sentence1", "sentence2"), ["not_equivalent", "equivalent"],
     [{"sentence1": "he left", "sentence2": "he went away", "label": 1}]),
]


@pytest.mark.parametrize("name, text_columns, labels, rows", HUB_LAYOUTS, ids=[layout[0] for layout in HUB_LAYOUTS])
def test_hf_converts_the_common_sentence_level_layouts(tmp_path, name, text_columns, labels, rows):
    from tawt.data import process_data

    rows = [{key: value.replace("\\t", "\t") if isinstance(value, str) else value for key, value in row.items()}
            for row in rows]
    out = tmp_path / "out"
    process_data.main(["hf", _hub_like(tmp_path, name, text_columns, labels, rows), "--output_dir", str(out)])
    assert sorted(os.listdir(out)) == sorted([f"train_{name}.tsv", f"dev_{name}.tsv", f"{name}_labels.txt"])
    examples = read_sentence_examples(str(out / f"dev_{name}.tsv"))
    assert [example.labels[0] for example in examples] == [labels[row["label"]] for row in rows]
    assert [example.words for example in examples] == [[" ".join(row[column].split()) for column in text_columns]
                                                       for row in rows]
    assert set((out / f"{name}_labels.txt").read_text().split()) == {labels[row["label"]] for row in rows}
    assert is_sentence_task(str(out), name)


def test_hf_sentence_level_by_explicit_columns_and_bad_rows(tmp_path):
    from tawt.data import process_data

    rows = [{"question": "who won", "context": "the home team won", "answerable": "yes"},
            {"question": "when", "context": "in june", "answerable": "no"}]
    path = _hub_like(tmp_path, "custom", ("question", "context"), None, rows, label_column="answerable",
                     splits=("train",))
    out = tmp_path / "out"
    process_data.main(["hf", path, "--text_columns", "question", "context", "--task_columns", "qa=answerable",
                       "--output_dir", str(out)])
    assert (out / "train_qa.tsv").read_text() == "yes\twho won\tthe home team won\nno\twhen\tin june\n"
    # A label-less split (GLUE's test: -1) is refused naming split, row and column; nothing is written.
    missing = _hub_like(tmp_path, "sst2", ("sentence",), ["negative", "positive"],
                        [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": -1}], splits=("test",))
    with pytest.raises(SystemExit, match=r"split test, row 1, column label: class label -1 \(-1 marks a missing"):
        process_data.main(["hf", missing, "--output_dir", str(tmp_path / "refused")])
    assert not os.path.exists(tmp_path / "refused") or not os.listdir(tmp_path / "refused")
    with pytest.raises(SystemExit, match="none of the known text columns"):
        process_data.main(["hf", path, "--task_columns", "qa=answerable", "--output_dir", str(tmp_path / "x")])


def test_affinity_probe_with_a_sentence_level_target_and_control(mixed_data_dir, tiny_model_dir, tmp_path):
    from tawt.testing import task_affinity

    rows = task_affinity.main([
        "--main_task", "topic", "--candidate_tasks", "pos", "same_verb", "--data_dir", mixed_data_dir,
        "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "affinity"),
        "--gradient_sampling_batch_size", "8", "--head_fit_steps", "20", "--max_seq_length", "32",
        "--add_shuffled_control", "--control_source", "same_verb"])
    by_task = {row["task"]: row for row in rows}
    assert set(by_task) == {"pos", "same_verb", "shuffled_same_verb"}
    assert all(-1 <= row["mean_cosine"] <= 1 for row in rows)


# ---------------------------------------------------------------------------------------------------------
# The embedded example: brown_genre, from Brown's own file ids


def test_genre_tasks_label_each_sentence_with_its_files_genre(tmp_path):
    from tawt.data import make_default_data as default

    tarball = os.path.join(default.cache_root(), "downloads", default.BROWN_TARBALL)
    if not os.path.isfile(tarball):
        pytest.skip("the Brown tarball is not cached: run bash data/install_default_requirements.sh")
    documents = {"train": ["ca01", "ck01"], "dev": ["cr01"], "test": ["cj01"]}
    data_dir = tmp_path / "build"
    os.makedirs(data_dir)
    (data_dir / default.INFO_FILE).write_text(json.dumps({"documents": documents}))
    default.add_genre_tasks(str(data_dir), brown_tarball=tarball)
    assert default.has_genre_tasks(str(data_dir))
    assert json.loads((data_dir / default.INFO_FILE).read_text())["sentence_tasks"] == list(default.GENRE_TASKS)
    brown = {document.name: document for document in default.read_brown(tarball, max_files=None)
             if document.name in {"ca01", "ck01", "cr01", "cj01"}}
    train = read_sentence_examples(str(data_dir / "train_brown_genre.tsv"))
    assert [example.labels[0] for example in train] == (["news"] * len(brown["ca01"].sentences)
                                                        + ["fiction"] * len(brown["ck01"].sentences))
    assert train[0].words == [" ".join(brown["ca01"].sentences[0][0])]
    coarse = read_sentence_examples(str(data_dir / "test_brown_genre_coarse.tsv"))
    assert {example.labels[0] for example in coarse} == {"nonfiction"}  # cj: learned
    assert {example.labels[0] for example in read_sentence_examples(str(data_dir / "dev_brown_genre.tsv"))} == {"humor"}
    labels = (data_dir / "brown_genre_labels.txt").read_text().split()
    assert len(labels) == 15 and labels[0] == "news" and labels[-1] == "humor"
    assert (data_dir / "brown_genre_coarse_labels.txt").read_text().split() == ["press", "nonfiction", "fiction"]


def test_grid_slices_sentence_level_files_by_random_lines(mixed_data_dir, tmp_path):
    from dataclasses import replace

    from tawt.scripts import experiment_grid

    grid = replace(experiment_grid.preset_grid("genre"), main_tasks={"topic": experiment_grid.MainTaskSetting(["pos"], 6)},
                   analysis_main_task="topic", analysis_sources=["pos"], data_slice={"train": 10, "dev": 4, "test": 4})
    target = experiment_grid.default_data_slice(grid, str(tmp_path), source=mixed_data_dir)
    train_lines = (tmp_path / os.path.basename(target) / "train_topic.tsv").read_text().splitlines()
    source_lines = open(os.path.join(mixed_data_dir, "train_topic.tsv")).read().splitlines()
    assert len(train_lines) == 10 and train_lines != source_lines[:10]  # seeded random lines, not the first
    assert [source_lines.index(line) for line in train_lines] == sorted(source_lines.index(line) for line in train_lines)
    assert len(read_sentences(os.path.join(target, "test_topic.tsv"))) == 4
    assert experiment_grid.count_sentences(os.path.join(target, "train_topic.tsv")) == 10
    assert len(read_sentences(os.path.join(target, "train_pos.txt"))) == 10


# ---------------------------------------------------------------------------------------------------------
# Resume, --bf16 and two processes behave as for tagging tasks


def test_sentence_target_resumes_to_the_uninterrupted_results(mixed_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    """Weighted joint training with a sentence-level target, interrupted right after a checkpoint within an
    epoch and run again with the same command, ends with the weights, predictions and results of a run
    never interrupted."""
    from tawt import training_loop

    flags = ["--weighting", "tawt", "--weight_update_steps", "3", "--save_steps", "1"]

    def run(output):
        run_paradigm(run_weighted_joint, flags, mixed_data_dir, tiny_model_dir, output, "topic", TAGGING_SOURCES)

    class Interrupted(Exception):
        pass

    run(tmp_path / "whole")
    save_checkpoint = training_loop.save_checkpoint

    def save_and_stop(run_, model, trainer, epoch, batches_done, task_weights):
        save_checkpoint(run_, model, trainer, epoch, batches_done, task_weights)
        if trainer.global_step == 5:
            raise Interrupted

    monkeypatch.setattr(training_loop, "save_checkpoint", save_and_stop)
    with pytest.raises(Interrupted):
        run(tmp_path / "resumed")
    monkeypatch.setattr(training_loop, "save_checkpoint", save_checkpoint)
    run(tmp_path / "resumed")
    with open(tmp_path / "resumed" / "run.log") as handle:
        assert "resum" in handle.read().lower()
    for name in ("task_weights.json", "topic_test_predictions.txt", "topic_test_results.txt", "all_results.json"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_sentence_target_trains_under_bf16_autocast(mixed_data_dir, tiny_model_dir, tmp_path):
    """--bf16 (autocast; on the CPU here) with a sentence-level target and tagging sources: the weight update
    and both kinds of head run, and the scores stay near the float32 run's."""
    flags = ["--weighting", "tawt", "--weight_update_steps", "3"]
    full = run_paradigm(run_weighted_joint, flags, mixed_data_dir, tiny_model_dir, tmp_path / "fp32", "topic",
                        TAGGING_SOURCES)
    half = run_paradigm(run_weighted_joint, flags + ["--bf16"], mixed_data_dir, tiny_model_dir, tmp_path / "bf16",
                        "topic", TAGGING_SOURCES)
    check_sentence_outputs(tmp_path / "bf16", "topic", mixed_data_dir)
    history = weight_history(tmp_path / "bf16")["history"]
    assert len(history) > 1 and all(entry["cosine_similarities"] for entry in history[1:])
    reference = weight_history(tmp_path / "fp32")["history"]
    assert max(abs(a - b) for a, b in zip(history[-1]["weights"], reference[-1]["weights"])) < 0.05
    assert abs(half["topic_test"]["loss"] - full["topic_test"]["loss"]) < 0.1


def test_sentence_target_in_two_gloo_processes(mixed_data_dir, tiny_model_dir, tmp_path):
    """torchrun with two processes: every process computes its share of the sampled batches, and the main
    process predicts every test example exactly once."""
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_scripts import TINY_TRAINING

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port), "run_weighted_joint.py", "--auxiliary_task_list", *TAGGING_SOURCES,
            "--main_task", "topic", "--main_task_train_sent_num", "12", "--gradient_sampling_batch_size", "8",
            "--data_dir", mixed_data_dir, "--model_name_or_path", tiny_model_dir, "--output_dir", str(output),
            *TINY_TRAINING]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(output / "run_args.json") as handle:
        assert json.load(handle)["world_size"] == 2
    history = weight_history(output)["history"]
    assert len(history) > 1 and history[-1]["weights"][-1] > history[0]["weights"][-1]
    check_sentence_outputs(output, "topic", mixed_data_dir)
