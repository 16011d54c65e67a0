"""The error every user mistake raises, below every other module so that any of them can raise it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter outside its allowed range; the message (and ``param``) name the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param or message.split(" ", 1)[0]
