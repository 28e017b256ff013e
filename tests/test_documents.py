"""The documents hold together: every relative link and #anchor of every Markdown file resolves, and every
command the README shows names a script that exists and flags that script's parser accepts."""
import concurrent.futures
import functools
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from urllib.parse import unquote

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folders whose Markdown is not this project's: installed packages, caches, build outputs.
SKIPPED_FOLDERS = {"node_modules", "site-packages", "__pycache__", "build", "dist", "outputs", "gpu_pack",
                   "gpu_session_pack", "gpu_session_out"}

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def markdown_files():
    files = []
    for directory, folders, names in os.walk(ROOT):
        folders[:] = sorted(name for name in folders
                            if not name.startswith(".") and name not in SKIPPED_FOLDERS and not name.endswith("venv"))
        files += [os.path.join(directory, name) for name in sorted(names) if name.lower().endswith(".md")]
    return files


def prose_lines(text):
    """The lines outside fenced code blocks, with inline code removed: links in code are not links."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else INLINE_CODE.sub("", line))
    return lines


def github_slug(heading):
    """GitHub's anchor of a heading: the rendered text lower-cased, every character but letters, digits,
    marks, connector punctuation (_), spaces and hyphens removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(character for character in text
                   if character in " -" or unicodedata.category(character)[0] in "LMN"
                   or unicodedata.category(character) == "Pc")
    return kept.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    found, counts = set(), {}
    for line in prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path):
    with open(path, encoding="utf-8") as handle:
        lines = prose_lines(handle.read())
    for number, line in enumerate(lines, 1):
        for target in LINK.findall(line) + REFERENCE_DEFINITION.findall(line):
            yield number, target


def broken_links(path):
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), unquote(file_part))) if file_part else path
        where = f"{os.path.relpath(path, ROOT)} line {number}: ({target})"
        if not os.path.exists(resolved):
            problems.append(f"{where}: {os.path.relpath(resolved, ROOT)} does not exist")
        elif anchor and resolved.lower().endswith(".md") and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}: no heading of {os.path.relpath(resolved, ROOT)} has the anchor #{anchor}")
    return problems


def test_the_slug_follows_githubs_rules():
    assert github_slug("Which sources help my target? The task-affinity probe") == \
        "which-sources-help-my-target-the-task-affinity-probe"
    assert github_slug("With the Hugging Face `Trainer`") == "with-the-hugging-face-trainer"
    assert github_slug("Why the weight update misses 20× on a CPU") == "why-the-weight-update-misses-20-on-a-cpu"
    assert github_slug("Sentence-level tasks: brown_genre and brown_genre_coarse") == \
        "sentence-level-tasks-brown_genre-and-brown_genre_coarse"
    assert github_slug("GPUs, several GPUs, Slurm") == "gpus-several-gpus-slurm"


def test_a_broken_link_or_anchor_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Part\n\n## Part\n\n[ok](#part-1) [bad](#part-2) [gone](missing.md)\n"
                    "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n[self](page.md#title)\n",
                    encoding="utf-8")
    problems = broken_links(str(page))
    assert len(problems) == 2, problems
    assert "#part-2" in problems[0] and "missing.md does not exist" in problems[1]


def test_every_markdown_link_and_anchor_resolves():
    files = markdown_files()
    assert os.path.join(ROOT, "README.md") in files
    problems = [problem for path in files for problem in broken_links(path)]
    assert not problems, "\n".join(problems)


def shell_commands(text):
    """Each command of a Markdown text's shell blocks (indented or fenced, not python), continuation lines
    joined, as (line number, words)."""
    lines = text.split("\n")
    commands, fenced, fence_language, pending, start = [], False, "", "", 0
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence:
            fenced, fence_language = not fenced, line.strip().strip("`~").strip().lower() if not fenced else ""
            continue
        in_shell_block = (fenced and fence_language in ("", "sh", "bash", "shell", "console")) or \
            (not fenced and line.startswith("    ") and (pending or not line.lstrip().startswith(("|", "-", "*"))))
        if not in_shell_block:
            pending = ""
            continue
        text = line.split(" #", 1)[0].rstrip() if " #" in line else line.rstrip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        full, pending = pending + text, ""
        for part in re.split(r";|&&|\|\||\bdo\b|\bthen\b", full):
            try:
                words = shlex.split(part.replace("[", " ").replace("]", " "))
            except ValueError:
                continue
            if words:
                commands.append((start, words))
    return commands


def script_and_arguments(words):
    """The script a command runs (python X.py, torchrun ... X.py, sh/bash X.sh) and the words after it."""
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VARIABLE=value before the command
        words = words[1:]
    if not words or words[0] not in ("python", "python3", "torchrun", "sh", "bash"):
        return None, []
    suffix = ".sh" if words[0] in ("sh", "bash") else ".py"
    for index, word in enumerate(words[1:], 1):
        if word.endswith(suffix):
            return word, words[index + 1:]
        if words[0] != "torchrun" and not word.startswith("-"):
            return None, []  # python -m pytest ...: no script of ours
    return None, []


@functools.lru_cache(maxsize=None)
def help_text(script, subcommand):
    command = [sys.executable, os.path.join(ROOT, script), *([subcommand] if subcommand else []), "--help"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-2000:]}"
    return done.stdout


def subcommands(help_output):
    match = re.search(r"\{([a-z0-9_,-]+)\}", help_output)
    return set(match.group(1).split(",")) if match else set()


def accepted_flags(help_output):
    """The flags of argparse's option lines ("  -h, --help", "  --columns TASK=COLUMN ..."), not those that
    its help texts mention."""
    flags = set()
    for line in help_output.split("\n"):
        if re.match(r"^\s+-", line):
            flags.update(re.findall(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)", line.strip().split("  ", 1)[0]))
    return flags


def prefetch_help(texts):
    """Start every script's --help at once: a few of them import torch, which takes seconds each."""
    scripts = set()
    for text in texts:
        for _, words in shell_commands(text):
            script, _ = script_and_arguments(words)
            if script and script.endswith(".py") and os.path.isfile(os.path.join(ROOT, script)):
                scripts.add(script)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda script: help_text(script, None), sorted(scripts)))


def command_problems(text, name="README.md"):
    problems, checked = [], 0
    for number, words in shell_commands(text):
        script, arguments = script_and_arguments(words)
        if script is None:
            continue
        checked += 1
        if not os.path.isfile(os.path.join(ROOT, script)):
            problems.append(f"{name} line {number}: {script} does not exist")
            continue
        if not script.endswith(".py"):
            continue
        output = help_text(script, None)
        if arguments and arguments[0] in subcommands(output):
            output = help_text(script, arguments[0])
        accepted = accepted_flags(output)
        for flag in (word.split("=", 1)[0] for word in arguments if word.startswith("--")):
            if flag not in accepted:
                problems.append(f"{name} line {number}: {script} has no flag {flag}")
    return checked, problems


def test_a_missing_script_or_flag_is_found():
    text = ("Text.\n\n    sh scripts/no_such_script.sh 1\n"
            "    python data/process_data.py conll --columns pos=1 --layout x \\\n        --output_dir out\n\n"
            "```sh\nfor seed in 1 2; do python data/process_data.py hf x --layout y --no_such_flag; done\n```\n"
            "```python\npython data/process_data.py --not_a_command\n```\n")
    checked, problems = command_problems(text, "page.md")
    assert checked == 3
    assert problems == ["page.md line 3: scripts/no_such_script.sh does not exist",
                        "page.md line 4: data/process_data.py has no flag --layout",
                        "page.md line 8: data/process_data.py has no flag --no_such_flag"]


def test_every_readme_command_names_a_script_and_flags_that_exist():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    prefetch_help([text])
    checked, problems = command_problems(text)
    assert checked >= 10, f"only {checked} commands found in the README's code blocks"
    assert not problems, "\n".join(problems)


def test_every_other_documents_commands_name_scripts_and_flags_that_exist():
    texts = {}
    for path in markdown_files():
        if path != os.path.join(ROOT, "README.md"):
            with open(path, encoding="utf-8") as handle:
                texts[os.path.relpath(path, ROOT)] = handle.read()
    prefetch_help(texts.values())
    problems = [problem for name, text in texts.items() for problem in command_problems(text, name)[1]]
    assert not problems, "\n".join(problems)
