"""Where a run may read and write files: allowed roots, path-typed options, the run's access.

Defaults: reads inside the working directory and the experiment file's folder, writes inside
``reports/`` under the working directory. Relative read paths resolve against the experiment
file's folder (the working directory for experiments built in Python), relative write paths
against the working directory. Paths are resolved (symlinks followed, ``..`` removed) before
the check, so neither can leave a root.

Stage options declare paths with :data:`ReadFile` and :data:`WriteDir`; pre-flight resolves and
checks them, so a refused path fails before anything runs. Stages that open other files call
``current_access().readable(...)`` / ``writable(...)`` first.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from crucible.errors import FileAccessError

__all__ = [
    "DEFAULT_WRITE_DIR",
    "FileAccess",
    "ReadFile",
    "WriteDir",
    "access_in_effect",
    "current_access",
    "using_access",
]

DEFAULT_WRITE_DIR = "reports"


#: Characters of a path shown in a refusal before it is cut short.
_SHOWN_CHARS = 200


def _real(path: str | os.PathLike[str], base: Path) -> Path:
    return (base / Path(path).expanduser()).resolve()


def _unusable(err: Exception) -> str:
    """Why a path could not be resolved or checked, in words that name no path: the messages
    of these errors quote the full path, which a refusal must not show unless asked to."""
    code = getattr(err, "errno", None)
    if code == errno.ENAMETOOLONG:
        return "is too long a path for this system (file name too long)"
    if code == errno.ELOOP or (isinstance(err, RuntimeError) and "loop" in str(err).lower()):
        return "goes through a loop of symbolic links"
    if code in (errno.EACCES, errno.EPERM):
        return "cannot be checked: permission denied"
    if isinstance(err, OSError):
        return f"cannot be checked: {(err.strerror or type(err).__name__).lower()}"
    if isinstance(err, ValueError):  # e.g. "embedded null byte"
        return f"is not a valid path: {err}"
    return f"cannot be resolved: {err}"  # RuntimeError: "Could not determine home directory."


def _cut(text: str, *, quote: bool) -> str:
    """``text`` for a refusal (quoted when ``quote``), a long one cut short with its length."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text) if quote else text
    head = text[:_SHOWN_CHARS]
    return f"{repr(head) if quote else head}... ({len(text):,} characters)"


@dataclass(frozen=True, slots=True)
class FileAccess:
    """The folders a run may read from and write to, and where relative paths start.

    ``show_paths=False`` keeps this machine's folders out of refusals: they name a path only as
    it was given (for a service, whose clients need not learn where its files live).
    ``overwrite=False`` makes writers create their files exclusively: a file that exists
    already (another run's) is refused, never replaced (for a service shared by many clients).
    """

    read_roots: tuple[Path, ...]
    write_roots: tuple[Path, ...]
    read_base: Path
    write_base: Path
    show_paths: bool = True
    overwrite: bool = True

    @classmethod
    def default(
        cls,
        *,
        experiment_dir: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        write_dir: str | os.PathLike[str] = DEFAULT_WRITE_DIR,
        allow_read: Iterable[str | os.PathLike[str]] = (),
        allow_write: Iterable[str | os.PathLike[str]] = (),
    ) -> FileAccess:
        """The default roots, widened by ``allow_read``/``allow_write`` folders."""
        here = Path(cwd).resolve() if cwd is not None else Path.cwd().resolve()
        exp_dir = _real(experiment_dir, here) if experiment_dir is not None else None
        reads = [here] + ([exp_dir] if exp_dir is not None else [])
        access = cls(
            read_roots=tuple(dict.fromkeys(reads)),
            write_roots=(_real(write_dir, here),),
            read_base=exp_dir or here,
            write_base=here,
        )
        return access.widened(read=allow_read, write=allow_write)

    def widened(
        self,
        *,
        read: Iterable[str | os.PathLike[str]] = (),
        write: Iterable[str | os.PathLike[str]] = (),
    ) -> FileAccess:
        """This access with more read and write roots (written folders are readable too)."""
        extra_write = tuple(_real(p, self.write_base) for p in write)
        extra_read = tuple(_real(p, self.read_base) for p in read) + extra_write
        return FileAccess(
            read_roots=tuple(dict.fromkeys(self.read_roots + extra_read)),
            write_roots=tuple(dict.fromkeys(self.write_roots + extra_write)),
            read_base=self.read_base,
            write_base=self.write_base,
            show_paths=self.show_paths,
            overwrite=self.overwrite,
        )

    def readable(
        self, path: str | os.PathLike[str], *, option: str | None = None, must_exist: bool = True
    ) -> Path:
        """``path`` resolved for reading; FileAccessError when outside every read root, or
        when it cannot be resolved or checked (too long, a symlink loop, no permission)."""
        target = self._resolved(path, self.read_base, option)
        if not _inside(target, self.read_roots):
            raise FileAccessError(
                self._what(option, path, target)
                + f" is outside the folders this run may read{self._list(self.read_roots)}; "
                "allow it with --allow-read DIR or run(..., file_access=...)"
            )
        if must_exist:
            try:
                state = None if target.is_file() else "is not a file"
                if state is not None and not target.exists():
                    state = "does not exist"
            except OSError as err:
                state = _unusable(err)
            if state is not None:
                raise FileAccessError(self._what(option, path, target) + f" {state}")
        return target

    def writable(self, path: str | os.PathLike[str], *, option: str | None = None) -> Path:
        """``path`` resolved for writing; FileAccessError when outside every write root, or
        when it cannot be resolved or checked."""
        target = self._resolved(path, self.write_base, option)
        if not _inside(target, self.write_roots):
            raise FileAccessError(
                self._what(option, path, target)
                + f" is outside the folders this run may write{self._list(self.write_roots)}; "
                "allow it with --allow-write DIR or run(..., file_access=...)"
            )
        try:
            os.stat(target)  # a folder made later need not exist; one the OS refuses is refused
        except FileNotFoundError:
            pass
        except OSError as err:
            raise FileAccessError(self._what(option, path, target) + " " + _unusable(err)) from None
        return target

    def _resolved(self, path: str | os.PathLike[str], base: Path, option: str | None) -> Path:
        """``path`` resolved against ``base``; FileAccessError saying why it cannot be."""
        try:
            return _real(path, base)
        except (OSError, RuntimeError, ValueError) as err:
            raise FileAccessError(self._what(option, path, None) + " " + _unusable(err)) from None

    def _what(self, option: str | None, raw: str | os.PathLike[str], target: Path | None) -> str:
        given = os.fspath(raw)
        shown = _cut(given, quote=True)
        if self.show_paths and target is not None and given != str(target):
            shown += f" ({_cut(str(target), quote=False)})"
        return f"option {option!r}: {shown}" if option else shown

    def _list(self, roots: tuple[Path, ...]) -> str:
        if not self.show_paths:
            return ""
        return f" ({', '.join(str(r) for r in roots) or 'none'})"


def _inside(target: Path, roots: tuple[Path, ...]) -> bool:
    return any(target == root or target.is_relative_to(root) for root in roots)


_current: ContextVar[FileAccess | None] = ContextVar("crucible_file_access", default=None)


def access_in_effect() -> FileAccess | None:
    """The access a ``using_access`` block made current, or None outside any."""
    return _current.get()


def current_access() -> FileAccess:
    """The access of the run (or pre-flight) in progress; the defaults outside any run."""
    access = _current.get()
    return access if access is not None else FileAccess.default()


_RESTORED: ContextVar[bool] = ContextVar("crucible_restored_stage", default=False)


class restored_stage:
    """Within the block, read paths are checked against the roots but need not exist: the
    options of a stage a resume restores (it reads nothing; its files may have moved since)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _RESTORED.set(True)

    def __exit__(self, *exc: object) -> None:
        _RESTORED.reset(self._token)


class using_access:
    """Make ``access`` current for the block (the engine does this for pre-flight and runs).

    A small class rather than a generator context manager: every run enters one.
    """

    __slots__ = ("_access", "_token")

    def __init__(self, access: FileAccess) -> None:
        self._access = access
        self._token: Token[FileAccess | None] | None = None

    def __enter__(self) -> FileAccess:
        self._token = _current.set(self._access)
        return self._access

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


def _check_read(value: Path, info: ValidationInfo) -> Path:
    try:
        return current_access().readable(value, must_exist=not _RESTORED.get())
    except FileAccessError as err:
        raise PydanticCustomError("file_access", str(err)) from None


def _check_write_dir(value: Path, info: ValidationInfo) -> Path:
    access = current_access()
    try:
        target = access.writable(value)
    except FileAccessError as err:
        raise PydanticCustomError("file_access", str(err)) from None
    if target.exists() and not target.is_dir():  # a folder to write into: not a file
        shown = f"{str(value)!r} ({target})" if access.show_paths else repr(str(value))
        raise PydanticCustomError("file_access", f"{shown} is a file, not a folder")
    return target


ReadFile = Annotated[Path, AfterValidator(_check_read)]
"""An option naming a file to read: resolved and checked against the run's read roots."""

WriteDir = Annotated[Path, AfterValidator(_check_write_dir)]
"""An option naming a folder to write into: resolved and checked against the write roots."""
