"""The run store: finished runs as JSON files keyed by the hash of what decides them (``RunConfig.key``).

Asking for a stored run returns it without training, after checking that the file holds a whole run
of that configuration: a file that does not (cut short, malformed, another run's) is named in a
warning and treated as missing, so the run is trained again and the file replaced. Files are written
to a temporary name and renamed into place (mode 0644), so a run killed midway leaves nothing
half-written; temporary files such a kill leaves behind are removed after the next run trains.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path

import torch

from fedcore.config import DETAIL_FIELDS, ConfigError, RunConfig
from fedcore.results import Checkpoint, RunResult

REPO_RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"
ENV_VAR = "FEDCORE_RUNS_DIR"
FILE_MODE = 0o644  # results are readable by everyone
TEMP_SUFFIX = ".tmp"
log = logging.getLogger(__name__)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path, param: str, folder: bool) -> None:
    """Raise ConfigError naming ``param`` unless a file can be written at ``path`` (a file path) or, with
    ``folder``, inside the folder ``path``; missing folders are created, as writing would."""
    if not folder and path.is_dir():
        raise ConfigError(f"{param} must be a file path, not a folder; got '{path}'", param=param)
    target = path if folder else path.parent
    existing = next(p for p in (target, *target.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".write-check.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        what = "a writable folder" if folder else "a file path in a writable folder"
        raise ConfigError(f"{param} must be {what}; cannot write in {target} ({err.strerror or err}); "
                          f"got '{path}'", param=param) from err


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
        return self.root / f"{key}.json"

    def checkpoint_path(self, key: str) -> Path:
        return self.root / f"{key}.checkpoint.pt"

    def check_writable(self) -> None:
        """Raise ConfigError (param ``runs_dir``) unless runs can be written into the store's folder."""
        check_writable(self.root, "runs_dir", folder=True)

    def get(self, config: RunConfig, kind: str = "federated") -> RunResult | None:
        """The stored ``kind`` run of ``config``; None when there is none, when it records less detail than
        asked, or when the file is not a whole run of it (a warning names the file, once per store)."""
        path = self.path(config.key(kind))
        try:
            text = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # not stored (or no store: check_writable says so)
            return None
        try:
            result = RunResult.from_dict(json.loads(text))
            why = problem(result, config, kind)
        except ValueError as err:  # also JSONDecodeError and UnicodeDecodeError
            result, why = None, f"cannot be read as a run ({type(err).__name__}: {err})"
        if why is not None:
            if path not in self._warned:
                log.warning("run store: %s %s; training the run again to replace it", path, why)
                self._warned.add(path)
            return None
        return result if detailed_enough(result, config, kind) else None

    def put(self, result: RunResult, checkpoint: bool = False) -> Path:
        """Write a run (and, with ``checkpoint``, its checkpoint beside it, so that a longer run can continue it)."""
        path = self.path(result.key)
        if checkpoint and result.checkpoint is not None:
            buffer = io.BytesIO()
            torch.save({"params": result.checkpoint.params, "server": result.checkpoint.server}, buffer)
            write_atomic(self.checkpoint_path(result.key), buffer.getvalue())
        write_atomic(path, json.dumps(result.to_dict()))
        return path

    def shorter(self, config: RunConfig, rounds: int) -> RunResult | None:
        """The stored whole (not diverged) federated run of ``config`` with ``rounds`` rounds and its checkpoint,
        for the run of ``config`` to continue; None where there is none."""
        if not 0 < rounds < config.rounds:
            return None
        result = self.get(config.replace(rounds=rounds), "federated")
        if result is None or result.diverged:
            return None
        try:
            saved = torch.load(self.checkpoint_path(result.key), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
            if not isinstance(err, FileNotFoundError):
                log.warning("run store: %s cannot be read (%s); training from the start",
                            self.checkpoint_path(result.key), err)
            return None
        result.checkpoint = Checkpoint(saved["params"], saved["server"])
        return result

    def remove_stale_temporaries(self, before: float) -> list[Path]:
        """Delete temporary files last written before ``before`` (a time.time() value), e.g. the start of
        a run just trained: a write in progress takes far less than a run, so such files were left by a
        writer killed midway. Returns the files removed."""
        stale = []
        for tmp in self.root.glob(f".*{TEMP_SUFFIX}"):
            try:
                if tmp.stat().st_mtime < before:
                    tmp.unlink()
                    stale.append(tmp)
            except FileNotFoundError:  # another process removed or renamed it meanwhile
                continue
        return stale
