"""The run store: finished runs as JSON files keyed by the hash of their configuration.

Asking for a stored run returns it without training. Files are written to a temporary name and
renamed into place, so a run killed midway leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from fedcore.results import RunResult

REPO_RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"
ENV_VAR = "FEDCORE_RUNS_DIR"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """A folder of finished runs: the argument, else $FEDCORE_RUNS_DIR, else runs/ in the repository."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root or os.environ.get(ENV_VAR) or REPO_RUNS_DIR)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> RunResult | None:
        """The stored run, or None."""
        try:
            return RunResult.from_dict(json.loads(self.path(key).read_text()))
        except FileNotFoundError:
            return None

    def put(self, result: RunResult) -> Path:
        path = self.path(result.key)
        write_atomic(path, json.dumps(result.to_dict()))
        return path
