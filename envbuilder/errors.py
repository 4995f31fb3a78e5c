"""Typed errors: every failure a user can cause or meet is an EnvbuilderError with a code and a hint.

Nothing inside the library prints or exits; the CLI maps these to one line and an exit code
(see envbuilder.cli); envbuilder.error_codes catalogs every code with its class, and the class carries the
exit code. Docker's error strings are classified in envbuilder.docker.diagnose.
Must not import docker, subprocess wrappers or the CLI.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Exit codes the CLI returns. 3 is reserved for resolver conflicts, as the resolve contract says.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_DOCKER = 4
EXIT_INTERRUPTED = 130


class EnvbuilderError(Exception):
    """A failure with a stable code (kebab-case), a one-line message and a hint saying what to do.

    The class carries the exit code; envbuilder.error_codes lists every code with its class and meaning.
    A plain class, not a dataclass: every command imports this module, `run --image` included, and defining a
    dataclass (and importing `dataclasses`) costs that command ~10 ms (envbuilder.run's docstring).
    """

    exit_code: ClassVar[int] = EXIT_ERROR

    def __init__(self, code: str, message: str, hint: str | None = None,
                 context: dict[str, Any] | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.hint = hint
        self.context: dict[str, Any] = {} if context is None else context

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, hint={self.hint!r})"

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f". Hint: {self.hint}"
        return text

    def replaced(self, **changes: Any) -> EnvbuilderError:
        """The same error (same class) with some of code, message, hint and context changed: a caller adding
        what it knows (the build's log, a registry's remedy) before raising it on."""
        return type(self)(**{**self._fields(), **changes})

    def _fields(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint, "context": self.context}

    def to_json(self) -> dict[str, Any]:
        """The error as --json prints it, on stdout, whatever the command."""
        return {"status": "error", "code": self.code, "message": self.message, "hint": self.hint,
                "context": self.context, "exit_code": self.exit_code}


class UsageError(EnvbuilderError):
    """The request itself is malformed: flags, targets, values that no project could make right."""

    exit_code: ClassVar[int] = EXIT_USAGE


class ProbeError(EnvbuilderError):
    """A host probe failed in a way the caller may want to report as a finding."""


class ProjectError(EnvbuilderError):
    """The project could not be read (bad TOML, hostile git URL, missing path)."""


class ResolveConflict(EnvbuilderError):
    """The project's own constraints contradict each other, or nothing fits the target."""

    exit_code: ClassVar[int] = EXIT_CONFLICT

    def to_json(self) -> dict[str, Any]:
        # The resolve contract: a conflict is a plan-shaped answer with status "conflict" and its reasons.
        return {**super().to_json(), "status": "conflict", "reasons": self.context.get("reasons", [self.message]),
                "warnings": []}


class DockerError(EnvbuilderError):
    """The Docker engine or CLI failed; classified by envbuilder.docker.diagnose."""

    exit_code: ClassVar[int] = EXIT_DOCKER


class JobEnded(EnvbuilderError):
    """A job ended badly: envbuilder exits with the job's own exit code, so scripts see what the job said."""

    def __init__(self, code: str, message: str, hint: str | None = None, context: dict[str, Any] | None = None,
                 job_exit_code: int = EXIT_ERROR) -> None:
        super().__init__(code, message, hint, context)
        self.job_exit_code = job_exit_code
        self.exit_code = job_exit_code  # type: ignore[misc]  # the one class whose code is the job's

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "job_exit_code": self.job_exit_code}
