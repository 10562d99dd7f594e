"""Files written atomically, and the checks a command makes before it writes anything.

A write goes to a temporary file in the target's folder, named after the target and the
writing process (``.<name>.<pid>.<random>.tmp``), and is renamed over the target only when
complete. The temporary file is removed on any exception, on ``KeyboardInterrupt`` and (in the
command line, which turns SIGTERM into an exception) on SIGTERM; a temporary file left by a
process that was killed outright is removed by the next write to the same target. The file gets
the mode the umask gives a new file, not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_files(target: Path) -> list[Path]:
    """Temporary files of ``target`` left by processes that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp$")
    if not target.parent.is_dir():
        return []
    stale = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            stale.append(entry)
    return stale


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    Creates the parent folder. Removes stale temporary files of ``path`` (left by killed
    processes) first, and this call's own temporary file on any failure.
    """
    atomic_writes([(path, write)])
    return Path(path)


def atomic_writes(writes: Sequence[tuple[str | os.PathLike[str], Callable[[str], object]]]) -> None:
    """Several files, all or none: every temporary file is written before the first rename.

    A failure while writing removes every temporary file and leaves every target as it was.
    """
    done: list[tuple[str, Path]] = []
    try:
        for path, write in writes:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in stale_temp_files(target):
                with contextlib.suppress(OSError):
                    old.unlink()
            fd, tmp = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"
            )
            os.close(fd)
            done.append((tmp, target))
            write(tmp)
            os.chmod(tmp, _umask_mode())
        for tmp, target in done:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


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
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.probe.")
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
