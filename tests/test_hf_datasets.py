"""`process_data.py hf`: Hugging Face datasets built here on disk with the real datasets' features (the
label names and nesting of their loading scripts), converted to task files. The hub itself is not reached:
the tests run offline. OntoNotes converts to the same files as `process_data.py ontonotes` on the same
sentences written as CoNLL-2012 files."""

import json
import os
import random
import sys

import pytest

from tawt.data import process_data
from utils_cross_task import read_sentences

datasets = pytest.importorskip("datasets", reason="the hf command's tests need datasets: pip install datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Sequence, Value  # noqa: E402

# The label names of the hub datasets' loading scripts (conll2012_ontonotesv5 english_v4, conll2003,
# conll2000, wnut_17, universal_dependencies), in their order: the ids in the data index these lists.
ONTONOTES_V4_POS = ["XX", "``", "$", "''", ",", "-LRB-", "-RRB-", ".", ":", "ADD", "AFX", "CC", "CD", "DT", "EX",
                    "FW", "HYPH", "IN", "JJ", "JJR", "JJS", "LS", "MD", "NFP", "NN", "NNP", "NNPS", "NNS", "PDT", "POS",
                    "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP",
                    "VBZ", "WDT", "WP", "WP$", "WRB"]
ONTONOTES_NER = ["O"] + [f"{prefix}-{kind}" for kind in (
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL",
    "CARDINAL", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE") for prefix in ("B", "I")]
CONLL2003_POS = ['"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
                 "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP", "PRP$", "RB", "RBR",
                 "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB"]
CONLL2000_POS = ["''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR", "JJS",
                 "MD", "NN", "NNP", "NNPS", "NNS", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO",
                 "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB"]
CHUNKS = ["O"] + [f"{prefix}-{kind}" for kind in ("ADJP", "ADVP", "CONJP", "INTJ", "LST", "NP", "PP", "PRT", "SBAR",
                                                   "UCP", "VP") for prefix in ("B", "I")]
CONLL2003_NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
WNUT_NER = ["O"] + [f"{prefix}-{kind}" for kind in ("corporation", "creative-work", "group", "location", "person",
                                                     "product") for prefix in ("B", "I")]
UPOS = ["NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET", "CCONJ", "PROPN", "PRON", "X", "_", "ADV",
        "INTJ", "VERB", "AUX"]

ONTONOTES_FEATURES = Features({
    "document_id": Value("string"),
    "sentences": [{
        "part_id": Value("int32"),
        "words": Sequence(Value("string")),
        "pos_tags": Sequence(ClassLabel(names=ONTONOTES_V4_POS)),
        "parse_tree": Value("string"),
        "predicate_lemmas": Sequence(Value("string")),
        "predicate_framenet_ids": Sequence(Value("string")),
        "word_senses": Sequence(Value("float32")),
        "speaker": Value("string"),
        "named_entities": Sequence(ClassLabel(names=ONTONOTES_NER)),
        "srl_frames": [{"verb": Value("string"), "frames": Sequence(Value("string"))}],
        "coref_spans": Sequence(Sequence(Value("int32"), length=3)),
    }],
})
CONLL2003_FEATURES = Features({
    "id": Value("string"), "tokens": Sequence(Value("string")),
    "pos_tags": Sequence(ClassLabel(names=CONLL2003_POS)), "chunk_tags": Sequence(ClassLabel(names=CHUNKS)),
    "ner_tags": Sequence(ClassLabel(names=CONLL2003_NER)),
})
CONLL2000_FEATURES = Features({
    "id": Value("string"), "tokens": Sequence(Value("string")),
    "pos_tags": Sequence(ClassLabel(names=CONLL2000_POS)), "chunk_tags": Sequence(ClassLabel(names=CHUNKS)),
})
WNUT_FEATURES = Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                          "ner_tags": Sequence(ClassLabel(names=WNUT_NER))})
UD_FEATURES = Features({
    "idx": Value("string"), "text": Value("string"), "tokens": Sequence(Value("string")),
    "lemmas": Sequence(Value("string")), "upos": Sequence(ClassLabel(names=UPOS)), "xpos": Sequence(Value("string")),
    "feats": Sequence(Value("string")), "head": Sequence(Value("string")), "deprel": Sequence(Value("string")),
    "deps": Sequence(Value("string")), "misc": Sequence(Value("string")),
})

WORDS = ["John", "visited", "New", "York", "in", "1990", ".", "It", "rained", "talks", "the", "Smith's"]


def random_bio(rng, length, types):
    labels, inside = [], None
    for _ in range(length):
        choice = rng.random()
        if inside and choice < 0.4:
            labels.append(f"I-{inside}")
        elif choice < 0.7:
            labels.append("O")
            inside = None
        else:
            inside = rng.choice(types)
            labels.append(f"B-{inside}")
    return labels


def ontonotes_documents(seed, documents=3):
    """Documents of random sentences in conll2012_ontonotesv5's layout (ids index the real label names)."""
    rng = random.Random(seed)
    types = sorted({name[2:] for name in ONTONOTES_NER if name != "O"})
    rows = []
    for number in range(documents):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            length = rng.randint(1, 7)
            framesets = [rng.choice([None, None, "01", "02"]) for _ in range(length)]
            sentences.append({
                "part_id": 0, "words": [rng.choice(WORDS) for _ in range(length)],
                "pos_tags": [rng.randrange(len(ONTONOTES_V4_POS)) for _ in range(length)],
                "parse_tree": "(TOP(S))",
                # A lemma without a frameset: a noun with only a word sense, not a predicate.
                "predicate_lemmas": [rng.choice(["visit", None]) if frameset is None else "visit" for frameset in framesets],
                "predicate_framenet_ids": framesets,
                "word_senses": [rng.choice([None, 1.0]) for _ in range(length)],
                "speaker": "Speaker#1",
                "named_entities": [ONTONOTES_NER.index(label) for label in random_bio(rng, length, types)],
                "srl_frames": [], "coref_spans": [],
            })
        rows.append({"document_id": f"bc/cnn/00/cnn_{seed}{number:03d}", "sentences": sentences})
    return rows


def bio_to_brackets(labels):
    """BIO labels as the CoNLL-2012 named-entity column: (TYPE* ... *), or (TYPE) for one word."""
    column = []
    for index, label in enumerate(labels):
        continues = index + 1 < len(labels) and labels[index + 1].startswith("I-")
        if label.startswith("B-"):
            column.append(f"({label[2:]}{'*' if continues else ')'}")
        elif label.startswith("I-"):
            column.append("*" if continues else "*)")
        else:
            column.append("*")
    return column


def conll2012_text(document):
    """The document as a CoNLL-2012 *_gold_conll file (the columns the ontonotes command reads)."""
    lines = [f"#begin document ({document['document_id']}); part 000"]
    for sentence in document["sentences"]:
        entities = bio_to_brackets([ONTONOTES_NER[i] for i in sentence["named_entities"]])
        for number, word in enumerate(sentence["words"]):
            lemma = sentence["predicate_lemmas"][number] or "-"
            frameset = sentence["predicate_framenet_ids"][number] or "-"
            lines.append("   ".join([document["document_id"], "0", str(number), word,
                                     ONTONOTES_V4_POS[sentence["pos_tags"][number]], "*", lemma, frameset, "-",
                                     "Speaker#1", entities[number], "*", "-"]))
        lines.append("")
    lines.append("#end document")
    return "\n".join(lines) + "\n"


def output_files(directory):
    return {name: open(os.path.join(directory, name), encoding="utf-8").read() for name in sorted(os.listdir(directory))}


def test_ontonotes_from_the_hub_layout_equals_the_conll2012_converter(tmp_path):
    splits = {"train": ontonotes_documents(1, 4), "validation": ontonotes_documents(2), "test": ontonotes_documents(3)}
    saved = tmp_path / "conll2012_ontonotesv5"  # named as on the hub: the layout is found by the name
    DatasetDict({split: Dataset.from_list(rows, features=ONTONOTES_FEATURES)
                 for split, rows in splits.items()}).save_to_disk(str(saved))
    conll = {}
    for split, rows in splits.items():
        conll[split] = tmp_path / "conll" / split
        os.makedirs(conll[split])
        for number, document in enumerate(rows):
            (conll[split] / f"doc_{number:03d}_gold_conll").write_text(conll2012_text(document))
    sampling = ["--train_sentences", "6", "--seed", "3"]
    process_data.main(["hf", str(saved), "--output_dir", str(tmp_path / "from_hf"), *sampling])
    process_data.main(["ontonotes", "--train", str(conll["train"]), "--dev", str(conll["validation"]), "--test",
                       str(conll["test"]), "--output_dir", str(tmp_path / "from_conll"), *sampling])
    converted = output_files(tmp_path / "from_hf")
    assert converted == output_files(tmp_path / "from_conll")
    assert sorted(converted) == sorted([f"{split}_{task}.txt" for split in ("train", "dev", "test")
                                        for task in ("pos", "ner", "predicate")]
                                       + ["ner_labels.txt", "pos_labels.txt", "predicate_labels.txt"])
    # The ids became the real names, and a lemma without a frameset is no predicate.
    first = splits["validation"][0]["sentences"][0]
    dev_pos, dev_predicate = (read_sentences(tmp_path / "from_hf" / f"dev_{task}.txt") for task in ("pos", "predicate"))
    assert dev_pos[0].labels == [ONTONOTES_V4_POS[i] for i in first["pos_tags"]]
    assert dev_predicate[0].labels == ["-" if f is None else "predicate" for f in first["predicate_framenet_ids"]]
    assert len(read_sentences(tmp_path / "from_hf" / "train_ner.txt")) == 6


def conll2003_rows(seed, count):
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        length = rng.randint(1, 6)
        rows.append({"id": str(number), "tokens": [rng.choice(WORDS) for _ in range(length)],
                     "pos_tags": [rng.randrange(len(CONLL2003_POS)) for _ in range(length)],
                     "chunk_tags": [rng.randrange(len(CHUNKS)) for _ in range(length)],
                     "ner_tags": [CONLL2003_NER.index(label) for label in random_bio(rng, length, ["PER", "LOC"])]})
    return rows


@pytest.mark.parametrize("stored_as", ["save_to_disk", "parquet"])
def test_conll2003_gives_pos_chunking_ner_by_label_name(stored_as, tmp_path, capsys):
    splits = {"train": conll2003_rows(1, 12), "validation": conll2003_rows(2, 4), "test": conll2003_rows(3, 4)}
    source = tmp_path / "conll2003"
    if stored_as == "save_to_disk":
        DatasetDict({split: Dataset.from_list(rows, features=CONLL2003_FEATURES)
                     for split, rows in splits.items()}).save_to_disk(str(source))
    else:  # a folder of parquet files named by split, as the hub's parquet conversions are
        os.makedirs(source)
        for split, rows in splits.items():
            Dataset.from_list(rows, features=CONLL2003_FEATURES).to_parquet(str(source / f"{split}.parquet"))
    out = tmp_path / "out"
    process_data.main(["hf", str(source), "--output_dir", str(out)])
    process_data.main(["hf", str(source), "--splits", "test=validation", "--output_dir", str(tmp_path / "dev_as_test")])
    assert sorted(os.listdir(tmp_path / "dev_as_test")) == ["chunking_labels.txt", "ner_labels.txt", "pos_labels.txt",
                                                           "test_chunking.txt", "test_ner.txt", "test_pos.txt"]
    assert "not converted: splits train, test (--splits maps a split)" in capsys.readouterr().err
    for split, ours in (("train", "train"), ("validation", "dev"), ("test", "test")):
        for task, column, names in (("pos", "pos_tags", CONLL2003_POS), ("chunking", "chunk_tags", CHUNKS),
                                    ("ner", "ner_tags", CONLL2003_NER)):
            written = read_sentences(out / f"{ours}_{task}.txt")
            assert [sentence.words for sentence in written] == [row["tokens"] for row in splits[split]]
            assert [sentence.labels for sentence in written] == [[names[i] for i in row[column]]
                                                                 for row in splits[split]]
    seen = {CONLL2003_NER[i] for rows in splits.values() for row in rows for i in row["ner_tags"]}
    assert (out / "ner_labels.txt").read_text().split() == sorted(seen)


def test_conll2000_wnut_and_universal_dependencies_layouts(tmp_path, capsys):
    rng = random.Random(0)

    def rows(count, **columns):
        made = []
        for number in range(count):
            length = rng.randint(1, 5)
            made.append({"tokens": [rng.choice(WORDS) for _ in range(length)],
                         **{name: [make(rng) for _ in range(length)] for name, make in columns.items()}})
        return made

    conll2000 = {split: Dataset.from_list([{"id": "0", **row} for row in rows(
        count, pos_tags=lambda r: r.randrange(len(CONLL2000_POS)), chunk_tags=lambda r: r.randrange(len(CHUNKS)))],
        features=CONLL2000_FEATURES) for split, count in (("train", 20), ("test", 5))}
    DatasetDict(conll2000).save_to_disk(str(tmp_path / "conll2000"))
    process_data.main(["hf", str(tmp_path / "conll2000"), "--output_dir", str(tmp_path / "chunking"),
                       "--dev_from_train", "4"])
    assert [len(read_sentences(tmp_path / "chunking" / f"{split}_chunking.txt")) for split in ("train", "dev", "test")] \
        == [16, 4, 5]
    assert not (tmp_path / "chunking" / "train_ner.txt").exists()

    wnut = {split: Dataset.from_list([{"id": "0", **row} for row in rows(4, ner_tags=lambda r: r.randrange(13))],
                                     features=WNUT_FEATURES) for split in ("train", "validation", "test")}
    DatasetDict(wnut).save_to_disk(str(tmp_path / "my_copy"))  # any name, with --layout
    process_data.main(["hf", str(tmp_path / "my_copy"), "--layout", "wnut_17", "--output_dir", str(tmp_path / "wnut")])
    assert read_sentences(tmp_path / "wnut" / "test_ner.txt")[0].labels == [
        WNUT_NER[i] for i in wnut["test"][0]["ner_tags"]]

    def ud_rows(count, xpos=lambda r: r.choice(["NN", "VBD", "."])):
        return [{"idx": "0", "text": "", "lemmas": row["tokens"], "feats": [None] * len(row["tokens"]),
                 "head": ["0"] * len(row["tokens"]), "deprel": ["root"] * len(row["tokens"]),
                 "deps": [None] * len(row["tokens"]), "misc": [None] * len(row["tokens"]), **row}
                for row in rows(count, upos=lambda r: r.randrange(len(UPOS)), xpos=xpos)]

    ud = DatasetDict({split: Dataset.from_list(ud_rows(3), features=UD_FEATURES) for split in ("train", "validation")})
    ud["test"] = Dataset.from_list(ud_rows(3, xpos=lambda r: None), features=UD_FEATURES)  # a treebank without xpos
    ud.save_to_disk(str(tmp_path / "universal_dependencies"))
    with pytest.raises(SystemExit, match=r"split test, row 0, column xpos: word 0 has the label None; .*--tasks"):
        process_data.main(["hf", str(tmp_path / "universal_dependencies"), "--output_dir", str(tmp_path / "ud")])
    assert not (tmp_path / "ud").exists() or not os.listdir(tmp_path / "ud")  # nothing written
    process_data.main(["hf", str(tmp_path / "universal_dependencies"), "--tasks", "upos", "--output_dir",
                       str(tmp_path / "ud")])
    assert sorted(os.listdir(tmp_path / "ud")) == ["dev_upos.txt", "test_upos.txt", "train_upos.txt", "upos_labels.txt"]
    assert read_sentences(tmp_path / "ud" / "train_upos.txt")[1].labels == [UPOS[i] for i in ud["train"][1]["upos"]]


def test_any_dataset_by_its_columns_from_json_lines_with_string_labels(tmp_path, capsys):
    folder = tmp_path / "tweets"
    os.makedirs(folder)
    for split, rows in (("train", [{"words": ["a", "b"], "tags": ["B-X", "O"], "kind": ["N", "V"]},
                                   {"words": ["-DOCSTART-"], "tags": ["O"], "kind": ["X"]},
                                   {"words": [], "tags": [], "kind": []}]),
                        ("validation", [{"words": ["c"], "tags": ["O"], "kind": ["N"]}])):
        with open(folder / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    out = tmp_path / "out"
    process_data.main(["hf", str(folder), "--tokens_column", "words", "--task_columns", "ner=tags", "pos=kind",
                       "--output_dir", str(out)])
    assert sorted(os.listdir(out)) == ["dev_ner.txt", "dev_pos.txt", "ner_labels.txt", "pos_labels.txt",
                                       "train_ner.txt", "train_pos.txt"]
    assert (out / "train_ner.txt").read_text() == "a B-X\nb O\n\n"
    assert "split train: skipped 2 empty or -DOCSTART- sentences" in capsys.readouterr().err


def saved(tmp_path, name, rows, features, split="train"):
    DatasetDict({split: Dataset.from_list(rows, features=features)}).save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


def test_bad_rows_name_the_split_row_and_column_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "train_ner.txt").write_text("kept 0\n")

    def refused(argv, message):
        with pytest.raises(SystemExit, match=message):
            process_data.main(["hf", *argv, "--output_dir", str(out)])
        assert sorted(os.listdir(out)) == ["train_ner.txt"] and (out / "train_ner.txt").read_text() == "kept 0\n"

    # An id outside the class-label names: a copy whose names were cut after the data was written.
    path = saved(tmp_path, "conll2003", conll2003_rows(1, 3) + [
        {"id": "3", "tokens": ["a", "b"], "pos_tags": [0, 0], "chunk_tags": [0, 0], "ner_tags": [0, 8]}],
        CONLL2003_FEATURES)
    info_path = os.path.join(path, "train", "dataset_info.json")
    info = json.load(open(info_path))
    info["features"]["ner_tags"]["feature"]["names"] = CONLL2003_NER[:7]
    json.dump(info, open(info_path, "w"))
    refused([path], r"split train, row 3, column ner_tags: word 1 has class label 8, outside the column's 7 names")
    # -1, the hub's mark of a missing label (test splits without gold labels).
    rows = conll2003_rows(1, 2)
    rows[1]["ner_tags"][0] = -1
    refused([saved(tmp_path / "minus", "conll2003", rows, CONLL2003_FEATURES)], r"row 1, column ner_tags: word 0 has "
            r"class label -1 \(-1 marks a missing label")
    rows = conll2003_rows(1, 2)
    rows[0]["pos_tags"] = rows[0]["pos_tags"] + [0]
    refused([saved(tmp_path / "length", "conll2003", rows, CONLL2003_FEATURES)],
            r"row 0, column pos_tags: \d+ labels for \d+ words")
    rows = conll2003_rows(1, 2)
    rows[1]["tokens"][0] = "New York"
    refused([saved(tmp_path / "space", "conll2003", rows, CONLL2003_FEATURES)],
            r"row 1, column tokens: word 0 is 'New York'")
    documents = ontonotes_documents(1, 2)
    documents[1]["sentences"][1]["named_entities"].append(0)
    refused([saved(tmp_path, "conll2012_ontonotesv5", documents, ONTONOTES_FEATURES, split="test")],
            r"split test, row 1 \(document bc/cnn/00/cnn_1001\), sentence 1, column named_entities: \d+ labels")
    refused([saved(tmp_path, "unknown_name", conll2003_rows(1, 2), CONLL2003_FEATURES)],
            r"no known layout by that name .* --layout NAME, or name the columns: .*its columns: chunk_tags, id, ner_tags")
    refused([path, "--task_columns", "ner=entities"], r"no column 'entities' \(its columns: chunk_tags, id, ner_tags")
    refused([path, "--tasks", "upos"], r"--tasks upos: the conll2003 layout has pos, chunking, ner")
    refused([path, "--splits", "dev=validation"], r"--splits dev=validation: the dataset has no split 'validation'")
    refused(["no_such_dataset_here"], r"no_such_dataset_here: cannot be loaded from the Hugging Face hub .* Offline: "
                                      r"save it with save_to_disk")


def test_a_missing_datasets_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SystemExit, match=r"the hf command needs the datasets package: pip install datasets"):
        process_data.main(["hf", "conll2003", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
