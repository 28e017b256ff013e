"""One run (or one grid) at a time per output directory: an exclusive lock held for the process's life.

Two runs started at once into one --output_dir would both pass the check that it holds no run, then write
over each other's files. So the first takes an exclusive `flock` on DIRECTORY/.tawt.lock and holds it
until it ends; the operating system releases it when the process dies, however it dies (a kill -9 leaves
no stale lock to clean up). The lock file names its holder, so the second is refused with a line that says
who holds it.
"""

import fcntl
import os
import socket
import stat
import sys
import time

from tawt.errors import UsageError

LOCK_FILE = ".tawt.lock"

_held = {}  # real path of a locked directory -> (open lock file, whether this process created the directory)


class DirectoryInUse(ValueError):
    """Another process holds the directory's lock; the message names it (pid, host, start, command)."""


def lock_directory(directory, created=False):
    """Hold `directory`'s lock until `release` or the end of the process; raise DirectoryInUse if another
    process holds it. Taking a lock this process already holds again is a no-op (a script's main called
    twice in one process). `created`: this process made the directory (`release` may then remove it)."""
    key = os.path.realpath(directory)
    if key in _held:
        return
    path = os.path.join(directory, LOCK_FILE)
    while True:
        handle = _open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not yet said who it is"
            handle.close()
            raise DirectoryInUse(holder) from None
        # The holder before us may have removed the file as we opened it: then the lock is on a file no
        # one else can find, and the lock must be taken again on the path's current file.
        try:
            same_file = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    command = " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                 f"{command[:300]}\n")
    handle.flush()
    _held[key] = (handle, created)


def _open_lock_file(path):
    """The lock file, opened for reading and writing without following a symbolic link: the holder's line
    would otherwise truncate and overwrite whatever file the link points at."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if os.path.islink(path):
            raise UsageError(f"{path}: a symbolic link (to {os.readlink(path)}), not a lock file of these scripts; "
                             "remove the link (what it points to is left alone) and rerun") from None
        raise UsageError(f"{path}: cannot be opened as the directory's lock file ({error.strerror}); remove it, "
                         "or choose another directory") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO or a device: never a lock file of ours
        os.close(descriptor)
        raise UsageError(f"{path}: not a regular file, so not a lock file of these scripts; remove it and rerun")
    return os.fdopen(descriptor, "r+", encoding="utf-8")


def release(directory, remove_if_unused=False):
    """Give up the lock of `directory` (its lock file goes too). `remove_if_unused`: also remove the
    directory if this process created it and nothing else was written there (a refused run leaves the
    file system as it found it)."""
    key = os.path.realpath(directory)
    if key not in _held:
        return
    handle, created = _held.pop(key)
    path = os.path.join(directory, LOCK_FILE)
    try:
        os.remove(path)  # while still holding the lock: see lock_directory for a process that opened it
    except FileNotFoundError:
        pass
    handle.close()
    if remove_if_unused and created:
        try:
            os.rmdir(directory)  # only if empty
        except OSError:
            pass


def release_all(remove_if_unused=False):
    for key in list(_held):
        release(key, remove_if_unused)
