"""The two kinds of user mistake a run reports in one line (exit status 2) instead of a traceback, and a
file that cannot be written (exit status 1).

They live below every other module, so that the data reader, the training loop and the scripts can all
raise them; `run_main` turns them into that line. Nothing here imports torch: a script's --help and a
mistyped flag answer before the training code is loaded.
"""

import sys


class UsageError(ValueError):
    """A command line that cannot run; the message names the flag and the fix."""


class TaskDataError(ValueError):
    """A user's data is not usable; the message names the file, the line and the fix."""


class OutputWriteError(OSError):
    """A file of the run could not be written (no space left, a quota, a file-size limit); the message names
    the file, the space it needs and the space free. Not a user mistake: reported in one line, exit status 1."""


def run_main(main):
    """Call a script's main, turning user mistakes into one clear line instead of a traceback."""
    try:
        main()
    except (UsageError, TaskDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (FloatingPointError, OutputWriteError) as error:  # a diverged loss, a full disk: the message says
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
