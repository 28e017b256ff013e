"""process_data.py conll: task files from a column file with several label columns (CoNLL-2003's layout)."""

import os
import subprocess
import sys

import pytest

from tawt.data import process_data
from tawt.data.conll_columns import iob1_to_iob2
from tests.conftest import ROOT, write_tiny_bert
from utils_cross_task import read_labels, read_sentences

# CoNLL-2003's own layout: word, POS, chunk (IOB1), NER (IOB1), -DOCSTART- between documents.
CONLL2003_TRAIN = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
"""
CONLL2003_TEST = """-DOCSTART- -X- -X- O

Japan NNP I-NP I-LOC
began VBD I-VP O
"""


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def convert(tmp_path, *extra, train=CONLL2003_TRAIN, test=CONLL2003_TEST):
    output = tmp_path / "out"
    process_data.main(["conll", "--columns", "pos=1", "chunking=2", "ner=3", "--train",
                       write(tmp_path / "eng.train", train), "--test", write(tmp_path / "eng.testb", test),
                       "--output_dir", str(output), *extra])
    return output


def test_conll2003_columns_become_three_tasks(tmp_path):
    output = convert(tmp_path)
    assert sorted(os.listdir(output)) == sorted([f"{split}_{task}.txt" for split in ("train", "test")
                                                 for task in ("pos", "chunking", "ner")]
                                                + [f"{task}_labels.txt" for task in ("pos", "chunking", "ner")])
    ner = read_sentences(output / "train_ner.txt")
    # -DOCSTART- lines and the blank lines around them only separate sentences.
    assert [sentence.words for sentence in ner] == [["EU", "rejects", "German", "call", "."],
                                                    ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
    assert ner[1].labels == ["I-PER", "I-PER"]  # kept as given without --iob2
    assert read_sentences(output / "train_pos.txt")[0].labels == ["NNP", "VBZ", "JJ", "NN", "."]
    assert read_sentences(output / "test_chunking.txt")[0].labels == ["I-NP", "I-VP"]
    # The label files hold the labels of every split converted.
    assert read_labels(str(output), "ner") == ["I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    assert read_labels(str(output), "pos") == [".", "CD", "JJ", "NN", "NNP", "VBD", "VBZ"]


def test_iob2_rewrites_only_the_named_tasks():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    assert iob1_to_iob2(["B-NP", "I-NP", "O"]) == ["B-NP", "I-NP", "O"]  # IOB2 input is left as it is


def test_iob2_flag_and_word_column(tmp_path):
    output = convert(tmp_path, "--iob2", "ner")
    assert read_sentences(output / "train_ner.txt")[1].labels == ["B-PER", "I-PER"]
    assert read_sentences(output / "train_chunking.txt")[0].labels[0] == "I-NP"  # not named: unchanged
    # The word need not be the first column: here it is the last one, and a task takes column 0.
    swapped = write(tmp_path / "swapped.txt", "NNP John\nVBZ runs\n\nDT the\n")
    process_data.main(["conll", "--columns", "pos=0", "--word_column", "1", "--train", swapped,
                       "--output_dir", str(tmp_path / "swapped")])
    sentences = read_sentences(tmp_path / "swapped" / "train_pos.txt")
    assert [(sentence.words, sentence.labels) for sentence in sentences] == [(["John", "runs"], ["NNP", "VBZ"]),
                                                                             (["the"], ["DT"])]


@pytest.mark.parametrize("text, message", [
    ("EU NNP I-NP I-ORG\nrejects VBZ I-VP\n", "line 2: 3 columns where the file's first word line (line 1) has 4"),
    ("-DOCSTART- -X- -X- O\n\nEU NNP I-NP\n", "line 3: 3 columns, but --columns and --word_column need 4"),
    ("EU NNP I-NP I-ORG\n\nNew York NNP I-NP I-LOC\n", "line 3: 5 columns where"),
])
def test_a_line_with_other_columns_names_file_and_line(tmp_path, text, message, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "train_ner.txt").write_text("kept\n")
    with pytest.raises(SystemExit) as exit_info:
        convert(tmp_path, train=text)
    assert "eng.train " + message in str(exit_info.value)
    assert (output / "train_ner.txt").read_text() == "kept\n"  # nothing written, nothing lost
    assert sorted(os.listdir(output)) == ["train_ner.txt"]


@pytest.mark.parametrize("columns, message", [
    (["ner"], "--columns ner: give TASK=COLUMN"),
    (["ner=x"], "--columns ner=x: give TASK=COLUMN"),
    (["a/b=1"], "--columns a/b=1: give TASK=COLUMN"),
    (["ner=3", "ner=2"], "names the task ner twice"),
    (["ner=0"], "column 0 holds the words"),
    (["ner=3", "--iob2", "pos"], "--iob2 pos: not a task of --columns"),
])
def test_bad_columns_flag_is_refused_in_one_line(tmp_path, columns, message):
    train = write(tmp_path / "eng.train", CONLL2003_TRAIN)
    with pytest.raises(SystemExit) as exit_info:
        process_data.main(["conll", "--columns", *columns, "--train", train, "--output_dir", str(tmp_path / "out")])
    assert message in str(exit_info.value)
    assert not (tmp_path / "out").exists()


def test_converted_conll2003_trains_a_joint_run(tmp_path):
    """The converter's files are what the paradigm scripts read: a short joint run on them scores ner by span F1."""
    data = convert(tmp_path, "--iob2", "chunking", "ner", train=CONLL2003_TRAIN * 3, test=CONLL2003_TEST)
    for task in ("pos", "chunking", "ner"):
        (data / f"dev_{task}.txt").write_text((data / f"test_{task}.txt").read_text())
    model = write_tiny_bert(tmp_path / "model", extra_words=CONLL2003_TRAIN.split() + CONLL2003_TEST.split())
    completed = subprocess.run(
        [sys.executable, "run_weighted_joint.py", "--auxiliary_task_list", "pos", "chunking", "--main_task", "ner",
         "--weighting", "fixed", "--data_dir", str(data), "--model_name_or_path", model, "--output_dir",
         str(tmp_path / "run"), "--max_seq_length", "32", "--num_train_epochs", "1", "--do_train", "--do_predict",
         "--report_to", "none"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = (tmp_path / "run" / "ner_test_results.txt").read_text()
    assert "metric_family = span" in results and "f1 = " in results
