"""What the benchmarks run on: Brown-length sentences for four tasks, and the encoders of the
performance figures (benchmarks/README.md).

Sentences come from --data_dir when given, else from the embedded default data when it is built (real
Brown sentences with their spaCy labels), else straight from the Brown tarball in the cache (real
sentences, labels derived from Brown's gold tags: only the number of labels matters for speed), else from
a generator of Brown-like sentences (mean 20 words, long tail). The "pretrained" encoder is the one of
--model_name_or_path, by default MiniLM when it is installed, else a randomly initialised encoder of
MiniLM's shape; "bert-base" is always a randomly initialised BERT-base (`BertConfig()` defaults, 110M
parameters) on the tokenizer's vocabulary: timing and memory do not depend on the weights.
"""

import os
import random
from collections import Counter
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

from modeling_multi_bert import MultiTaskTagger
from utils_cross_task import Sentence, TaskSplit, collate, encode_sentences, read_labels, read_sentences, task_file

TASKS = ("pos", "chunking", "predicate", "ner")  # sources first, main task (ner, as in the paper's analysis) last
MAIN_TASK = "ner"
MAX_SEQ_LENGTH = 128
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


@dataclass
class Workload:
    sentences: dict  # task -> list of Sentence (a random sample, the same for every implementation)
    labels: dict  # task -> label list
    source: str  # where the sentences came from, in words


def _default_data_dir():
    from tawt.data.make_default_data import default_data_dir, is_complete_build

    directory = default_data_dir()
    return directory if is_complete_build(directory) else None


def _brown_tarball():
    from tawt.data.make_default_data import BROWN_TARBALL, cache_root

    path = os.path.join(cache_root(), "downloads", BROWN_TARBALL)
    return path if os.path.isfile(path) else None


def _labels_from_brown_tags(tags):
    """Stand-in labels for the four tasks from Brown's gold tags (for speed only the label count matters)."""
    return {
        "pos": tags,
        "predicate": ["predicate" if tag.startswith("V") else "-" for tag in tags],
        "ner": ["B-NAME" if tag.startswith("NP") else "O" for tag in tags],
        "chunking": [("B-" + tag[:2]) if tag[:1].isalpha() else "O" for tag in tags],
    }


def _synthetic_sentences(count, rng):
    """Brown-like sentences: lengths with mean ~20 words and a long tail, Zipf-distributed words."""
    syllables = ["ta", "ren", "mo", "li", "ser", "an", "to", "ve", "ka", "di", "ment", "ion", "ed", "ing", "o", "pre"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(5000)]
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    sentences = []
    for _ in range(count):
        length = max(2, min(120, int(rng.lognormvariate(2.85, 0.55))))
        words = rng.choices(lexicon, weights, k=length - 1) + ["."]
        tags = ["NP" if word[0] in "kt" else "VB" if word.endswith("ed") else "NN" for word in words[:-1]] + ["."]
        sentences.append((words, tags))
    return sentences


def load_workload(sentences_per_task, seed=0, data_dir=None):
    """`sentences_per_task` random training sentences of each task, from `data_dir` when given."""
    rng = random.Random(seed)
    source = f"the sentences of {data_dir}" if data_dir else None
    if data_dir is None:
        data_dir = _default_data_dir()
        source = f"the embedded default data ({data_dir})"
    if data_dir is not None:
        sentences, labels = {}, {}
        for task in TASKS:
            every = read_sentences(task_file(data_dir, "train", task))
            sentences[task] = rng.sample(every, min(sentences_per_task, len(every)))
            labels[task] = read_labels(data_dir, task)
        return Workload(sentences, labels, source)
    tarball = _brown_tarball()
    if tarball is not None:
        from tawt.data.make_default_data import read_brown

        pool = [sentence for document in read_brown(tarball) for sentence in document.sentences]
        source = f"Brown corpus sentences from {tarball} (default data not built yet; labels from Brown's tags)"
    else:
        pool = _synthetic_sentences(4 * sentences_per_task, rng)
        source = "generated Brown-length sentences (neither the default data nor the Brown tarball is present)"
    sentences = {task: [] for task in TASKS}
    for task in TASKS:
        for words, tags in rng.sample(pool, min(sentences_per_task, len(pool))):
            sentences[task].append(Sentence(list(words), _labels_from_brown_tags(tags)[task]))
    labels = {task: sorted({label for sentence in sentences[task] for label in sentence.labels}) for task in TASKS}
    return Workload(sentences, labels, source)


def task_split(task, sentences, tokenizer, labels, split="train"):
    """A TaskSplit (what the core's training and evaluation take) made from sentences in memory."""
    label_to_id = {label: index for index, label in enumerate(labels)}
    features, report = encode_sentences(tokenizer, sentences, label_to_id, MAX_SEQ_LENGTH,
                                        keep_all_words=(split != "train"))
    return TaskSplit(task, split, f"<benchmark {split} {task}>", sentences, features, report)


# ---------------------------------------------------------------------------------------------------------
# Encoders


def _minilm_path():
    try:
        from tawt.data.make_default_data import resolve_model_name_or_path
        return resolve_model_name_or_path(None)
    except Exception:  # not installed: fall back to a random encoder of the same shape
        return None


def _written_tokenizer(workload):
    """A WordPiece tokenizer over a vocabulary written here (30,522 entries, like BERT's uncased one)."""
    counts = Counter(word.lower() for sentences in workload.sentences.values() for s in sentences for word in s.words)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = sorted({character for word in counts for character in word})
    vocabulary += characters + ["##" + character for character in characters]
    vocabulary += [word for word, _ in counts.most_common() if word not in set(vocabulary)]
    vocabulary = list(dict.fromkeys(vocabulary))[:30522]
    vocabulary += [f"[unused{index}]" for index in range(30522 - len(vocabulary))]
    return BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True)


def load_tokenizer(workload, model_name_or_path=None):
    """The tokenizer of `model_name_or_path` (a folder of tokenizer files is enough), else of MiniLM."""
    path = model_name_or_path or _minilm_path()
    return AutoTokenizer.from_pretrained(path) if path else _written_tokenizer(workload)


# The shapes of the randomly initialised encoders (BertConfig's defaults are BERT-base's).
RANDOM_ENCODER_SHAPES = {
    "bert-base": ({}, "randomly initialised BERT-base (12 layers, 768 hidden)"),
    "minilm": (MINILM_SHAPE, "randomly initialised MiniLM-shaped BERT (6 layers, 384 hidden)"),
    "tiny": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
             "tiny random BERT"),
}


def random_encoder(kind, vocab_size, seed=0):
    """(a randomly initialised BertModel of shape `kind`, its description), built here from a BertConfig."""
    shape, description = RANDOM_ENCODER_SHAPES[kind]
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=vocab_size, **shape), add_pooling_layer=False), description


def build_model(kind, vocab_size, task_labels, seed=0, model_name_or_path=None):
    """(MultiTaskTagger, description) for kind 'pretrained' (the encoder of `model_name_or_path`, default
    MiniLM), 'bert-base' or 'tiny' (randomly initialised, for the smoke test)."""
    torch.manual_seed(seed)
    if kind == "pretrained":
        path = model_name_or_path or _minilm_path()
        if path:
            model = MultiTaskTagger.from_encoder(path, task_labels)
            config = model.encoder.config
            return model, (f"MiniLM-L6-H384 ({path})" if not model_name_or_path else
                           f"{config.model_type}, {config.num_hidden_layers} layers, {config.hidden_size} hidden ({path})")
        config = BertConfig(vocab_size=vocab_size, **MINILM_SHAPE)
        return MultiTaskTagger(BertModel(config, add_pooling_layer=False), task_labels), \
            "randomly initialised MiniLM-shaped BERT (6 layers, 384 hidden; the default encoder is not installed)"
    if kind in RANDOM_ENCODER_SHAPES:
        encoder, description = random_encoder(kind, vocab_size, seed)
        return MultiTaskTagger(encoder, task_labels), description
    raise ValueError(f"unknown encoder kind {kind!r}: use pretrained, bert-base or tiny")


def parameter_bytes(model):
    return sum(parameter.numel() * parameter.element_size() for parameter in model.encoder_parameters())


def padded_to(batch, length, pad_token_id):
    """The batch padded to `length` positions, as the original code padded every sentence to 128."""
    extra = length - batch["input_ids"].shape[1]
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": -100}
    return {name: torch.nn.functional.pad(tensor, (0, extra), value=fill[name]) for name, tensor in batch.items()}


def collate_padded_to_max_length(features, pad_token_id):
    """The original's batches: every sentence padded to --max_seq_length (128)."""
    return padded_to(collate(features, pad_token_id), MAX_SEQ_LENGTH, pad_token_id)
