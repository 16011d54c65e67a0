"""The run store: finished runs as JSON files keyed by the hash of what decides them (``RunConfig.key``).

Asking for a stored run returns it without training, after checking that the file holds a whole run of that
configuration: a file that does not (cut short, malformed, a round without a column callers read or with
another type there, another run's, larger than any run of it, or no regular file: a FIFO, a device) is named
in a warning and treated as missing, so the run is trained again and the file replaced; a folder in its place
is refused before training. Files are
written to a temporary name (.fedcore-tmp.NAME.RANDOM.tmp) and renamed into place (mode 0644), so a run killed
midway leaves nothing half-written; the store's own temporary files such a kill leaves behind are removed
after the next run trains, and nothing else. Before training, the free space is checked against the runs'
expected size; a write that fails all the same is a WriteError naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fedcore.config import DETAIL_FIELDS, ConfigError, RunConfig
from fedcore.results import RunResult

REPO_RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"
ENV_VAR = "FEDCORE_RUNS_DIR"
FILE_MODE = 0o644  # results are readable by everyone
TEMP_PREFIX, TEMP_SUFFIX = ".fedcore-tmp.", ".tmp"  # write_atomic writes PREFIX + name + .RANDOM + SUFFIX first
RUN_SUFFIX = ".json"  # a run's file is its key + RUN_SUFFIX
# The temporary names of the store's own files (a key, 16 hex digits, and the suffix): the only files that
# RunStore.remove_stale_temporaries removes.
STORE_TEMPORARY = re.compile(
    rf"{re.escape(TEMP_PREFIX)}[0-9a-f]{{16}}{re.escape(RUN_SUFFIX)}\.[a-z0-9_]+{re.escape(TEMP_SUFFIX)}")
READ_LIMIT = 4  # a stored run larger than this many times its expected size is damaged (see expected_bytes)
log = logging.getLogger(__name__)


class WriteError(OSError):
    """A file that could not be written (a full disk, say); the message names it and why, the errno is kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` so that readers see the old file or the whole new one, never a part;
    WriteError naming ``path`` if that fails."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(err.errno, f"could not write {path}: {err.strerror or err}") from err
        raise


def _existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists."""
    return next(p for p in (path, *path.parents) if p.exists())


def check_writable(path: Path, param: str, folder: bool) -> None:
    """Raise ConfigError naming ``param`` unless a file can be written at ``path`` (a file path) or, with
    ``folder``, inside the folder ``path``. Nothing is created: missing folders are made by the first write,
    so a command stopped by a later check leaves none behind."""
    if not folder and path.is_dir():
        raise ConfigError(f"{param} must be a file path, not a folder; got '{path}'", param=param)
    target = path if folder else path.parent
    existing = _existing(target)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f"{TEMP_PREFIX}write-check.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        what = "a writable folder" if folder else "a file path in a writable folder"
        raise ConfigError(f"{param} must be {what}; cannot write in {existing} ({err.strerror or err}); "
                          f"got '{path}'", param=param) from err


def check_free(path: Path, needed: int, param: str) -> None:
    """Raise ConfigError naming ``param`` unless the file system of ``path`` has ``needed`` bytes free."""
    free = shutil.disk_usage(_existing(path)).free
    if free < needed:
        raise ConfigError(f"{param} must have room for what will be written there: about {_size(needed)} needed, "
                          f"{_size(free)} free; got '{path}'", param=param)


def _size(n: int) -> str:
    """``n`` bytes in the largest unit (GB, MB, KB) of which there is at least one, else in bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def expected_bytes(config: RunConfig, kind: str = "federated") -> int:
    """About the most a stored run of ``config`` takes as JSON (twice or so what runs measure), for free-space
    checks and to cap reads: per round its metrics and per-digit accuracies, and a row per participating
    worker whose cosines with the others grow with their number."""
    participants = 0 if kind == "centralized" else config.per_round
    per_round = 2_000 + participants * (800 + 30 * participants)
    return 10_000 + 50 * config.workers + (config.rounds + 1) * per_round


_NOT_FILES = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device",
              stat.S_ISSOCK: "a socket"}


def _not_a_run(info: os.stat_result, limit: int) -> str | None:
    """Why a store entry of this status cannot be a stored run, before reading it (None: it may be one)."""
    what = next((name for test, name in _NOT_FILES.items() if test(info.st_mode)), None)
    if what is not None:
        return f"is {what}, not a file"
    if info.st_size > limit:
        return f"holds {info.st_size:,} bytes, more than any run of its configuration (at most {limit:,})"
    return None


def _read(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    """(the bytes of the regular file at ``path``, None), (None, why it cannot be a stored run: larger than
    ``limit`` bytes, say), or (None, None) where nothing is stored (no file, or a folder: RunStore.check_room
    refuses that before training)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    except (FileNotFoundError, NotADirectoryError):  # not stored (or no store: check_writable says so)
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    info = os.fstat(fd)
    why = _not_a_run(info, limit)
    if why is not None:
        os.close(fd)
        return None, None if stat.S_ISDIR(info.st_mode) else why
    with open(fd, "rb") as f:
        try:
            return f.read(limit + 1), None
        except OSError as err:
            return None, f"cannot be read ({err.strerror or err})"


def problem(result: RunResult, config: RunConfig, kind: str) -> str | None:
    """Why ``result`` is not a whole ``kind`` run of ``config`` (None when it is). Detail fields are
    not compared: a run recorded with more detail serves a request for less."""
    key = config.key(kind)
    if result.kind != kind or result.key != key:
        return f"holds a {result.kind!r} run with key {result.key!r}, not a {kind!r} run with key {key!r}"
    wanted = {k: v for k, v in config.experiment(kind).items() if k not in DETAIL_FIELDS}
    wrong = [f"{k}={result.config.get(k)!r} (asked {v!r})" for k, v in wanted.items() if result.config.get(k) != v]
    if wrong:
        return "holds a run of another configuration: " + ", ".join(wrong[:3])
    numbers = [row["round"] for row in result.rounds]
    if numbers != list(range(len(numbers))) or not numbers or (len(numbers) != config.rounds + 1
                                                                and not result.diverged):
        return f"holds rounds {numbers[:3]}...{numbers[-1:]} instead of 0 to {config.rounds}"
    return None


def detailed_enough(result: RunResult, config: RunConfig, kind: str) -> bool:
    """Whether ``result`` records at least the detail (DETAIL_FIELDS, e.g. worker scoring) ``config`` asks for."""
    asked = config.experiment(kind)
    return all(result.config.get(k, 0) >= asked[k] for k in DETAIL_FIELDS if k in asked)


class RunStore:
    """A folder of finished runs: the argument, else $FEDCORE_RUNS_DIR, else runs/ in the repository."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root or os.environ.get(ENV_VAR) or REPO_RUNS_DIR)
        self._warned: set[Path] = set()

    def path(self, key: str) -> Path:
        return self.root / f"{key}{RUN_SUFFIX}"

    def check_writable(self) -> None:
        """Raise ConfigError (param ``runs_dir``) unless runs can be written into the store's folder."""
        check_writable(self.root, "runs_dir", folder=True)

    def check_room(self, jobs: Sequence[tuple[RunConfig, str]]) -> None:
        """Raise ConfigError (param ``runs_dir``) unless these (config, kind) runs can be stored: no folder
        where one goes, and free space for their expected size."""
        for config, kind in jobs:
            path = self.path(config.key(kind))
            if path.is_dir():
                raise ConfigError(f"runs_dir must hold each run as a file; {path} is a folder: remove it",
                                  param="runs_dir")
        check_free(self.root, sum(expected_bytes(c, k) for c, k in jobs), "runs_dir")

    def get(self, config: RunConfig, kind: str = "federated") -> RunResult | None:
        """The stored ``kind`` run of ``config``; None when there is none, when it records less detail than
        asked, or when the file is not a whole run of it (a warning names the file, once per store)."""
        path = self.path(config.key(kind))
        text, why = _read(path, READ_LIMIT * expected_bytes(config, kind))
        if text is None and why is None:
            return None
        if why is None:
            try:
                result = RunResult.from_dict(json.loads(text))
                why = problem(result, config, kind)
            except ValueError as err:  # also JSONDecodeError and UnicodeDecodeError
                why = f"cannot be read as a run ({type(err).__name__}: {err})"
        if why is not None:
            self._warn(path, why, "training the run again to replace it")
            return None
        return result if detailed_enough(result, config, kind) else None

    def _warn(self, path: Path, why: str, then: str) -> None:
        """Say in a warning, once per store, that the file at ``path`` is not used, why and what is done instead."""
        if path not in self._warned:
            log.warning("run store: %s %s; %s", path, why, then)
            self._warned.add(path)

    def put(self, result: RunResult) -> Path:
        """Write a run."""
        path = self.path(result.key)
        write_atomic(path, json.dumps(result.to_dict()))
        return path

    def remove_stale_temporaries(self, before: float) -> list[Path]:
        """Delete the temporary files of the store's own writes (named as STORE_TEMPORARY: nothing else, and
        only regular files, not links) last written before ``before`` (a time.time() value), e.g. the start of a
        run just trained: a write in progress takes far less than a run, so such files were left by a writer
        killed midway. Returns the files removed; one that cannot be removed is left."""
        stale = []
        for tmp in self.root.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                info = tmp.lstat()
                if STORE_TEMPORARY.fullmatch(tmp.name) and stat.S_ISREG(info.st_mode) and info.st_mtime < before:
                    tmp.unlink()
                    stale.append(tmp)
            except OSError:  # removed or renamed by another process meanwhile, or not ours to remove
                continue
        return stale
