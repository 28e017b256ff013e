"""Reading task files and label lists, tokenisation with first-sub-token labels, one-task batches."""

import pytest
import torch

from utils_cross_task import (
    IGNORED_LABEL_ID, TaskDataError, check_labels, collate, encode_sentences, epoch_batches, prediction_file_text,
    read_labels, read_sentences,
)


def write(path, text, mode="w"):
    with open(path, mode) as handle:
        handle.write(text)
    return str(path)


def test_reader_handles_docstart_tabs_extra_columns_and_blank_runs(tmp_path):
    path = write(tmp_path / "train_x.txt",
                 "-DOCSTART- -X- O\n\n\nJohn\tNNP\tB-PER\nruns X O\n\n\n\nHe B-PER\n-DOCSTART- O\nSecond O")
    sentences = read_sentences(path)
    assert [s.words for s in sentences] == [["John", "runs"], ["He"], ["Second"]]
    assert [s.labels for s in sentences] == [["B-PER", "O"], ["B-PER"], ["O"]]
    assert sentences[0].line_numbers == [4, 5]


def test_reader_keeps_the_first_sentences_only(tmp_path):
    path = write(tmp_path / "train_x.txt", "a A\n\nb B\n\nc C\n")
    assert [s.words for s in read_sentences(path, max_sentences=2)] == [["a"], ["b"]]


@pytest.mark.parametrize("content, message", [
    ("", "holds no sentence"),
    ("\n\n-DOCSTART- O\n", "holds no sentence"),
    ("John B-PER\nlonely\n", "line 2: 'lonely' has no label"),
])
def test_reader_errors_name_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "train_x.txt", content)
    with pytest.raises(TaskDataError, match=message) as error:
        read_sentences(path)
    assert str(path) in str(error.value)


def test_reader_reports_undecodable_bytes_with_line(tmp_path):
    path = write(tmp_path / "train_x.txt", b"ok O\ncaf\xe9 O\n", mode="wb")
    with pytest.raises(TaskDataError, match=r"line 2: byte 0xe9 is not UTF-8"):
        read_sentences(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TaskDataError, match="file not found"):
        read_sentences(str(tmp_path / "train_missing.txt"))


def test_missing_file_names_the_files_that_are_there(tmp_path):
    write(tmp_path / "train_ner.txt", "a O\n")
    write(tmp_path / "dev_ner.txt", "a O\n")
    with pytest.raises(TaskDataError, match="train_nerr.txt: file not found") as error:
        read_sentences(str(tmp_path / "train_nerr.txt"))
    assert "dev_ner.txt, train_ner.txt" in str(error.value) and "{" not in str(error.value)


def test_byte_order_mark_is_ignored(tmp_path):
    write(tmp_path / "t_labels.txt", "\ufeffO\nB-PER\n", mode="w")
    assert read_labels(str(tmp_path), "t") == ["O", "B-PER"]
    path = write(tmp_path / "train_t.txt", "\ufeff-DOCSTART- -X- O\n\nJohn B-PER\n")
    assert [s.words for s in read_sentences(path)] == [["John"]]


def test_a_word_with_a_unicode_space_stays_one_word(tmp_path):
    """Columns are split at spaces and tabs only: a non-breaking (or other Unicode) space is part of a word."""
    text = "10\u00a0000 CD\nwords\u2009apart NN\n\nplain NN\n"
    path = write(tmp_path / "test_t.txt", text)
    sentences = read_sentences(path)
    assert sentences[0].words == ["10\u00a0000", "words\u2009apart"] and sentences[0].labels == ["CD", "NN"]
    predicted = prediction_file_text(path, [["X", "Y"], ["Z"]])
    assert predicted == "10\u00a0000 X\nwords\u2009apart Y\n\nplain Z\n"


def test_labels_from_file_or_derived_from_training_data(tmp_path, caplog):
    write(tmp_path / "train_t.txt", "a Y\nb X\n\nc Y\n")
    assert read_labels(str(tmp_path), "t") == ["X", "Y"]
    assert "t_labels.txt not found" in caplog.text
    write(tmp_path / "t_labels.txt", "Y\nX\nZ\n")
    assert read_labels(str(tmp_path), "t") == ["Y", "X", "Z"]


def test_unknown_label_names_file_and_line(tmp_path):
    path = write(tmp_path / "dev_t.txt", "a X\n\nb Q\n")
    with pytest.raises(TaskDataError, match=r"line 3: label 'Q' is not in"):
        check_labels(path, read_sentences(path), ["X", "Y"])


def sentence(words, labels):
    from utils_cross_task import Sentence

    return Sentence(words, labels, list(range(1, len(words) + 1)))


def test_only_first_sub_token_is_labelled(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features, report = encode_sentences(tokenizer, [sentence(["john", "walking", "dog"], ["B", "V", "N"])],
                                        {"B": 0, "V": 1, "N": 2}, max_seq_length=32)
    # [CLS] john walk ##ing dog [SEP]
    assert tokenizer.convert_ids_to_tokens(features[0].input_ids) == ["[CLS]", "john", "walk", "##ing", "dog", "[SEP]"]
    assert features[0].label_ids == [IGNORED_LABEL_ID, 0, 1, IGNORED_LABEL_ID, 2, IGNORED_LABEL_ID]
    assert features[0].word_indices == [0, 1, 2]
    assert report.truncated_words == 0


def test_long_sentences_are_cut_in_training_and_windowed_in_evaluation(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["walking"] * 5  # 10 sub-tokens
    long = sentence(words, ["V"] * 5)
    features, report = encode_sentences(tokenizer, [long], {"V": 0}, max_seq_length=6)
    assert len(features) == 1 and features[0].word_indices == [0, 1]
    assert report.truncated_words == 3 and report.truncated_sentences == 1
    assert "3 words in 1 sentences cut by --max_seq_length" in report.describe("train")
    features, report = encode_sentences(tokenizer, [long], {"V": 0}, max_seq_length=6, keep_all_words=True)
    assert [f.word_indices for f in features] == [[0, 1], [2, 3], [4]]
    assert all(len(f.input_ids) <= 6 for f in features)
    assert report.split_sentences == 1 and report.truncated_words == 0


def test_collate_pads_to_the_longest_in_batch():
    from utils_cross_task import Feature

    batch = collate([Feature([2, 5, 3], [-100, 1, -100], 0, [0]), Feature([2, 3], [-100, -100], 1, [])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]


def test_epoch_batches_hold_one_task_and_cover_every_example():
    batches = epoch_batches({"a": 10, "b": 3}, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert sorted(task for task, _ in batches) == ["a", "a", "a", "b"]
    for task in ("a", "b"):
        covered = sorted(i for t, indices in batches if t == task for i in indices)
        assert covered == list(range({"a": 10, "b": 3}[task]))
    again = epoch_batches({"a": 10, "b": 3}, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert again == batches


def test_prediction_file_is_aligned_with_test_file(tmp_path):
    path = write(tmp_path / "test_t.txt", "-DOCSTART- O\n\nJohn\tX\tB\nruns V\n\nHe B\n")
    text = prediction_file_text(path, [["P1", "P2"], ["P3"]])
    assert text == "-DOCSTART- O\n\nJohn\tX\tP1\nruns P2\n\nHe P3\n"


def test_group_by_length_batches_similar_lengths_and_covers_everything():
    lengths = {"a": [5, 50, 6, 49, 7, 48, 8, 47]}
    plain = epoch_batches({"a": 8}, batch_size=2, generator=torch.Generator().manual_seed(3))
    grouped = epoch_batches({"a": 8}, batch_size=2, generator=torch.Generator().manual_seed(3), task_lengths=lengths)
    assert sorted(i for _, indices in grouped for i in indices) == list(range(8))
    spread = lambda batches: sum(max(lengths["a"][i] for i in b) - min(lengths["a"][i] for i in b) for _, b in batches)
    assert spread(grouped) == 4  # pairs (5,6) (7,8) (47,48) (49,50)
    assert spread(plain) > spread(grouped)
