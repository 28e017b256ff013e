"""Shared fixtures: a tiny randomly initialised BERT written by the tests, and tiny task files.

Nothing here downloads anything: the vocabulary, the encoder and the data are all made on the spot.
"""

import os
import random
import shutil

import pytest

# The tests never download: fail fast instead of retrying an unreachable hub (a wrong model name would
# otherwise wait for the hub's retries). Subprocesses started by the tests inherit this.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The scripts the tests start import this checkout's modules too, not those of another checkout that the
# environment's editable install may point at (test_scripts.py checks the install itself).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))

# Words of the tiny language, with a part of speech, and whether they start a name (for ner).
NOUNS = ["dog", "cat", "house", "tree", "river", "city", "book", "car"]
VERBS = ["runs", "sees", "likes", "takes", "makes", "finds"]
DETERMINERS = ["the", "a", "this"]
ADJECTIVES = ["big", "small", "red", "old"]
NAMES = ["john", "mary", "paris", "london"]
PUNCTUATION = ["."]
SUBWORD_PIECES = ["walk", "##ing", "##s", "talk"]  # 'walking', 'talks' become two sub-tokens

VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + NOUNS + VERBS + DETERMINERS + ADJECTIVES + NAMES + PUNCTUATION + SUBWORD_PIECES
)

TASKS = ("pos", "ner", "chunking", "predicate")


def _tagged_sentence(rng):
    """One sentence of the tiny language with labels for the four tasks."""
    subject = [("NNP", name) for name in [rng.choice(NAMES)]] if rng.random() < 0.5 else [
        ("DT", rng.choice(DETERMINERS)), ("JJ", rng.choice(ADJECTIVES)), ("NN", rng.choice(NOUNS))
    ]
    verb = ("VBZ", rng.choice(VERBS + ["walking", "talks"]))
    obj = [("DT", rng.choice(DETERMINERS)), ("NN", rng.choice(NOUNS))]
    tagged = subject + [verb] + obj + [(".", ".")]
    words = [word for _, word in tagged]
    pos = [tag for tag, _ in tagged]
    ner = ["B-PER" if word in NAMES[:2] else "B-GPE" if word in NAMES[2:] else "O" for word in words]
    chunking, inside = [], False
    for tag in pos:
        if tag in ("DT", "JJ", "NN", "NNP"):
            chunking.append("I-NP" if inside else "B-NP")
            inside = True
        elif tag == "VBZ":
            chunking.append("B-VP")
            inside = False
        else:
            chunking.append("O")
            inside = False
    predicate = ["predicate" if tag == "VBZ" else "-" for tag in pos]
    return words, {"pos": pos, "ner": ner, "chunking": chunking, "predicate": predicate}


def write_task_files(data_dir, sizes=None, seed=0):
    """Write {split}_{task}.txt and {task}_labels.txt for the four tasks; return the data directory."""
    sizes = sizes or {"train": 24, "dev": 8, "test": 8}
    rng = random.Random(seed)
    os.makedirs(data_dir, exist_ok=True)
    labels = {task: set() for task in TASKS}
    for split, count in sizes.items():
        sentences = [_tagged_sentence(rng) for _ in range(count)]
        for task in TASKS:
            with open(os.path.join(data_dir, f"{split}_{task}.txt"), "w") as handle:
                handle.write("-DOCSTART- -X- -X- O\n\n")
                for words, task_labels in sentences:
                    for word, label in zip(words, task_labels[task]):
                        handle.write(f"{word} {label}\n")
                        labels[task].add(label)
                    handle.write("\n")
    for task in TASKS:
        with open(os.path.join(data_dir, f"{task}_labels.txt"), "w") as handle:
            handle.write("\n".join(sorted(labels[task])) + "\n")
    return str(data_dir)


def write_twin_and_noise(data_dir, main_task):
    """Add two sources to the tasks in `data_dir`: `twin`, `main_task`'s files under another name, and `noise`,
    `main_task`'s sentences with labels drawn at random (seeded) from its own; return the data directory."""
    labels = open(os.path.join(data_dir, f"{main_task}_labels.txt")).read().split()
    rng = random.Random(0)
    for split in ("train", "dev", "test"):
        main_file = os.path.join(data_dir, f"{split}_{main_task}.txt")
        shutil.copy(main_file, os.path.join(data_dir, f"{split}_twin.txt"))
        with open(main_file) as source, open(os.path.join(data_dir, f"{split}_noise.txt"), "w") as noise:
            for line in source:
                fields = line.split()
                noise.write(f"{fields[0]} {rng.choice(labels)}\n" if len(fields) == 2 and fields[0] != "-DOCSTART-"
                            else line)
    for task in ("twin", "noise"):
        shutil.copy(os.path.join(data_dir, f"{main_task}_labels.txt"), os.path.join(data_dir, f"{task}_labels.txt"))
    return data_dir


def start_heads_as_copies(monkeypatch, main_task, tasks):
    """Every model built from an encoder starts the heads of `tasks` as copies of `main_task`'s: a twin's
    gradient is then the main task's own, and a noise source differs from it only by its labels."""
    from modeling_multi_bert import MultiTaskTagger

    build = MultiTaskTagger.from_encoder.__func__

    def with_copied_heads(cls, *arguments, **options):
        model = build(cls, *arguments, **options)
        for task in tasks:
            if task in model.task_labels:
                model.head(task).load_state_dict(model.head(main_task).state_dict())
        return model

    monkeypatch.setattr(MultiTaskTagger, "from_encoder", classmethod(with_copied_heads))


def corrupted_labels(sentences, labels, rate, seed):
    """Predictions for `sentences`: each gold label replaced, with probability `rate`, by another label."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        [rng.choice([other for other in labels if other != label]) if rng.random() < rate else label
         for label in sentence.labels]
        for sentence in sentences
    ]


def sentence_scores_by_hand(task, labels, gold, predicted):
    """Each sentence's primary metric, computed on that sentence alone with compute_metrics: the reference
    for the significance test's per-sentence scores. A sentence with no gold and no predicted span (or
    positive label) scores 1.0."""
    import numpy as np
    from seqeval.metrics.sequence_labeling import get_entities

    from tawt.sequence_metrics import compute_metrics, metric_family, positive_label, primary_metric

    family = metric_family(task, labels)
    scores = []
    for gold_sentence, predicted_sentence in zip(gold, predicted):
        if family == "span":
            nothing_there = not get_entities(gold_sentence) and not get_entities(predicted_sentence)
        else:
            positive = positive_label(labels) if family == "binary" else None
            nothing_there = family == "binary" and positive not in gold_sentence + predicted_sentence
        scores.append(1.0 if nothing_there else compute_metrics(task, labels, [gold_sentence],
                                                                [predicted_sentence])[primary_metric(family)])
    return np.array(scores)


def write_tiny_bert(model_dir, seed=0, extra_words=(), **config_overrides):
    """Save a 2-layer randomly initialised BERT and its tokenizer (vocabulary written here: the tiny language's,
    and `extra_words` lower-cased, for data in other words; the runs refuse data most of whose words are
    unknown to the tokenizer)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    os.makedirs(model_dir, exist_ok=True)
    vocabulary = VOCAB + sorted({word.lower() for word in extra_words} - set(VOCAB))
    vocab_path = os.path.join(model_dir, "vocab.txt")
    with open(vocab_path, "w") as handle:
        handle.write("\n".join(vocabulary) + "\n")
    # transformers 5 builds the WordPiece tokenizer from the vocabulary itself (a dict), not a file path.
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True)
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, **config_overrides,
    )
    BertModel(config).save_pretrained(model_dir)
    return str(model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    return write_task_files(tmp_path_factory.mktemp("tiny_data"))
