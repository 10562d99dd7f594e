"""Files written atomically, and the checks a command makes before it writes anything.

A write goes to a temporary file in the target's folder, named after the target, the host and
the writing process (``.<name>.<host>.<pid>.<random>.tmp``), and is renamed over the target only
when complete. The temporary file is removed on any exception, on ``KeyboardInterrupt`` and (in
the command line, which turns SIGTERM into an exception) on SIGTERM; a temporary file left by a
process of this host that was killed outright is removed by the next write to the same target.
A new file gets the mode the umask gives (not ``mkstemp``'s 0600); a replaced file keeps its
mode.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # No /proc (macOS, BSD): create a file with mode 0o777 and see what the kernel kept.
    fd, probe = tempfile.mkstemp(prefix=".dampen-umask.")
    try:
        os.close(fd)
        os.unlink(probe)
        made = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777)
        os.close(made)
        return 0o777 & ~os.stat(probe).st_mode
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _mode_for(target: Path) -> int:
    """A replaced file keeps its permission bits; a new one gets what the umask allows."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: leave it
    return True


def _prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}.{os.getpid()}."


def stale_temp_files(target: Path) -> list[Path]:
    """Temporary files of ``target`` left by processes of this host that no longer run.

    Files of other hosts (a shared folder) are never touched: their pids mean nothing here.
    """
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(_HOST)}\.(\d+)\.[^.]+\.tmp$")
    if not target.parent.is_dir():
        return []
    stale = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            stale.append(entry)
    return stale


def _temp_beside(target: Path) -> str:
    """A new empty temporary file in ``target``'s folder, named after it and this process."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=".tmp")
    os.close(fd)
    return tmp


def atomic_writes(writes: Sequence[tuple[str | os.PathLike[str], Callable[[str], object]]]) -> None:
    """Several files, all or none.

    Every temporary file is written before the first rename. If writing fails, every target is
    as it was. With several files, if a rename fails (or a signal lands between two renames),
    the targets already replaced get their old content back from a hard link made before the
    renames; a single file needs none, as its one rename is atomic.
    """
    temps: list[tuple[str, Path]] = []
    backups: list[tuple[Path, str | None]] = []  # (target, link to its old content or None)
    replaced: list[Path] = []
    try:
        for path, write in writes:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in stale_temp_files(target):
                with contextlib.suppress(OSError):
                    old.unlink()
            tmp = _temp_beside(target)
            temps.append((tmp, target))
            write(tmp)
            os.chmod(tmp, _mode_for(target))
        for _, target in temps if len(temps) > 1 else ():
            backup = None
            if target.exists():
                backup = _temp_beside(target)
                os.unlink(backup)
                os.link(target, backup)
            backups.append((target, backup))
        for tmp, target in temps:
            os.replace(tmp, target)
            replaced.append(target)
    except BaseException:
        for target, backup in backups:
            if target in replaced:
                with contextlib.suppress(OSError):
                    if backup is None:
                        target.unlink()
                    else:
                        os.replace(backup, target)
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        for _, backup in backups:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    Creates the parent folder. Removes stale temporary files of ``path`` (left by killed
    processes) first, and this call's own temporary file on any failure.
    """
    atomic_writes([(path, write)])
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_writable(path: str | os.PathLike[str], *, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``path`` can be written as a file.

    An existing folder is probed by creating and removing a temporary file in it (so a
    read-only file system is found too); a folder still to be made must have a writable
    ancestor. Nothing is left behind and no folder is created.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{what}: {target} is a folder, not a file")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what}: cannot write to {target} ({folder} is not a folder)")
    if folder == target.parent:
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=_prefix(target), suffix=".tmp")
        except OSError as e:
            raise ValueError(f"{what}: cannot write to {target} ({e.strerror})") from e
        os.close(fd)
        os.unlink(probe)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write to {target} (folder {folder} is not writable)")


def check_distinct(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Raise ``ValueError`` when two outputs are one file, or an output is an input."""
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        key = _identity(path)
        if key in seen:
            raise ValueError(f"{seen[key]} and {name} are the same file ({path}); give two paths")
        seen[key] = name
    for name, path in inputs.items():
        if path is None:
            continue
        key = _identity(path)
        if key in seen:
            raise ValueError(
                f"{seen[key]} would overwrite the input {name} ({path}); write to another path"
            )


def _identity(path: Path) -> Path:
    return Path(os.path.realpath(path))
