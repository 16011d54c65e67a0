"""fedcore: federated averaging on badly split data, the engine behind the Ten Wrongs report."""

from fedcore.config import ConfigError, RunConfig
from fedcore.runner import run, run_many

__all__ = ["ConfigError", "RunConfig", "run", "run_many"]
