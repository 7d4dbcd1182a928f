"""One exception family for the whole library; only the CLI turns these into exit codes."""
from __future__ import annotations


class FmplanError(Exception):
    """Base of every error fmplan raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = 1
    label = "error"
    """How the CLI's one line on stderr starts."""


class InputError(FmplanError):
    """Bad user input: a file, a key path, what was expected and a hint."""

    exit_code = 1

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None,
                 hint: str | None = None):
        self.source = source
        self.key_path = key_path
        self.hint = hint
        where = ": ".join(part for part in (source, key_path) if part)
        text = f"{where}: {message}" if where else message
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)


class InvalidStrategyError(InputError):
    """A strategy that breaks a divisibility or range rule (every factor is in the message)."""


class InfeasibleError(FmplanError):
    """No plan fits: the message names the binding resource and the nearest miss."""

    exit_code = 3


class EnvironmentProblem(FmplanError):
    """Something missing from the environment: torch, a GPU, a solver."""

    exit_code = 4


class Interrupted(FmplanError):
    """Ctrl-C stopped the work before it had anything to report (exit 130, as a shell reports
    SIGINT)."""

    exit_code = 130
    label = "interrupted"


class FmplanWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it on
    stderr as `warning: ...`), e.g. a profile measured on another device than the cluster's."""
