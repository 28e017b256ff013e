"""--help answers without loading torch or transformers, and shows every flag's default."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PARADIGM_SCRIPTS = ["run_single_task", "run_weighted_joint", "run_weighted_normalized_joint", "run_weighted_pretraining"]
# The entry points in testing/ and data/ whose parsers need no training code (the others, such as
# testing/task_affinity.py, train models themselves and import torch at the top).
LIGHT_ENTRY_POINTS = ["tawt.testing.archive_results", "tawt.testing.collect_results", "tawt.testing.compare_optimizers",
                      "tawt.testing.significance_testing", "tawt.data.make_default_data",
                      "tawt.data.preprocess_max_len", "tawt.data.process_data"]
HEAVY = ("torch", "transformers")


def parse(module, argv):
    """Call the module's argument parsing on `argv` (parse_arguments where it has one, else main)."""
    return (getattr(module, "parse_arguments", None) or module.main)(argv)


def modules_loaded_by(name, argv, call="parse"):
    """The heavy modules in sys.modules after `name`'s parsing of `argv` (or its main, `call="main"`) in a fresh
    interpreter, and its output."""
    call = "parse(module, " if call == "parse" else "module.main("
    code = (f"import importlib, json, sys\nfrom tests.test_help import parse\nmodule = importlib.import_module({name!r})\n"
            f"try:\n    {call}{argv!r})\nexcept (SystemExit, Exception) as error:\n"
            "    print('ended:', type(error).__name__, error, file=sys.stderr)\n"
            f"print(json.dumps([heavy for heavy in {HEAVY!r} if heavy in sys.modules]))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed


@pytest.mark.parametrize("name", PARADIGM_SCRIPTS + LIGHT_ENTRY_POINTS)
def test_help_imports_neither_torch_nor_transformers(name):
    loaded, completed = modules_loaded_by(name, ["--help"])
    assert "usage:" in completed.stdout and "ended: SystemExit 0" in completed.stderr
    assert loaded == []


def test_a_mistaken_command_line_is_refused_before_the_training_code_loads():
    loaded, completed = modules_loaded_by("run_weighted_joint", ["--output_dir", "out", "--auxiliary_task_list", "pos",
                                                                 "ner", "--main_task", "ner"])
    assert "UsageError --main_task ner is also in --auxiliary_task_list" in completed.stderr
    assert loaded == []


def test_the_training_code_loads_once_the_arguments_are_read(tmp_path):
    """The check above holds because the scripts defer their imports, not because nothing ever loads torch."""
    loaded, completed = modules_loaded_by("run_single_task", ["--output_dir", str(tmp_path), "--task", "pos",
                                                               "--data_dir", str(tmp_path / "missing")], call="main")
    assert "torch" in loaded, completed.stderr[-2000:]


def captured_parsers(module, argv, monkeypatch):
    """The parsers (subcommands' included) that `module` builds to parse `argv`."""
    parsers = []
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def recording(self, *arguments, **options):
        parsers.append(self)
        return parse_known_args(self, *arguments, **options)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    with pytest.raises(SystemExit):
        parse(module, argv)
    found = []

    def walk(parser):
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for subparser in action.choices.values():
                    walk(subparser)

    walk(parsers[0])
    return found


def option_block(help_text, option):
    """The lines of `help_text` that describe `option` (its line and the indented ones after it), as one line."""
    lines = help_text.splitlines()
    for start, line in enumerate(lines):
        if re.match(rf"  {re.escape(option)}([ ,=]|$)", line):  # an option line: two spaces, then the option
            end = start + 1
            while end < len(lines) and lines[end].startswith(" " * 6):  # the help's lines, under the option's
                end += 1
            return " ".join(" ".join(lines[start:end]).split())
    raise AssertionError(f"{option} is not in the help text")


@pytest.mark.parametrize("name", PARADIGM_SCRIPTS + LIGHT_ENTRY_POINTS)
def test_every_flag_shows_its_default(name, monkeypatch):
    import importlib

    parsers = captured_parsers(importlib.import_module(name), ["--help"], monkeypatch)
    checked = 0
    for parser in parsers:
        help_text = parser.format_help()
        for action in parser._actions:
            # A switch is off unless given; a default of None is described in words ("default: all").
            if (not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
                    or action.help == argparse.SUPPRESS):
                continue
            block = option_block(help_text, action.option_strings[0])
            assert "default" in block.lower(), (name, block)
            if "default" not in (action.help or "").lower():
                assert f"(default: {action.default})" in block, (name, block)
            checked += 1
    if name in PARADIGM_SCRIPTS:  # (archive_results.py and make_default_data.py have no flag with a default)
        assert checked > 10


def test_a_default_in_the_help_is_the_one_a_run_uses(monkeypatch):
    import run_weighted_joint

    help_text = captured_parsers(run_weighted_joint, ["--help"], monkeypatch)[0].format_help()
    assert "(default: 5e-05)" in option_block(help_text, "--learning_rate")
    assert "(default: 64)" in option_block(help_text, "--gradient_sampling_batch_size")
    assert "(default: tawt)" in option_block(help_text, "--weighting")
