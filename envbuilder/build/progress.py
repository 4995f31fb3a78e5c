"""BuildKit's plain progress lines folded into steps: what runs now, what was cached, how long each took.

The build executor keeps every line in the log and feeds them here; the CLI's live display reads the same
fold. Pure: imports nothing from envbuilder (the CLI imports it on every build, cached ones included).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class BuildStep:
    """One BuildKit vertex as the progress stream reported it."""

    number: int
    title: str  # "[deps 3/6] RUN uv pip install ..."
    status: str = "running"  # running | done | cached | error
    seconds: float | None = None


_STEP_RE = re.compile(r"^#(\d+) (\[[^\]]*\] .*|\S.*)$")
_DONE_RE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
_CACHED_RE = re.compile(r"^#(\d+) CACHED$")
_ERROR_RE = re.compile(r"^#(\d+) (?:ERROR|CANCELED)\b")
_OUTPUT_RE = re.compile(r"^#(\d+) (\d+\.\d+) (.*)$")
_NOISE_RE = re.compile(r"^#\d+ (sha256:[0-9a-f]+|\d+\.\d+ *$)")
_STEP_HEADER_RE = re.compile(r"^#\d+ (\[[^\]]*\] |DONE \d|CACHED$|ERROR|CANCELED|exporting to image)")


def is_step_header(line: str) -> bool:
    """A line that starts or ends a step ("#7 [torch 1/1] RUN ...", "#7 DONE 12.6s", "#7 CACHED", "#7 ERROR ...")."""
    return bool(_STEP_HEADER_RE.match(line))


class BuildProgress:
    """Folds BuildKit's plain progress lines into steps: what runs now, what was cached, how long each took."""

    def __init__(self) -> None:
        self._steps: dict[int, BuildStep] = {}
        self.current: BuildStep | None = None
        self.last_output: str = ""

    def feed(self, line: str) -> BuildStep | None:
        """Take one line; return the step it changed, if any."""
        line = line.rstrip()
        if match := _DONE_RE.match(line):
            return self._update(int(match[1]), status="done", seconds=float(match[2]))
        if match := _CACHED_RE.match(line):
            return self._update(int(match[1]), status="cached", seconds=0.0)
        if match := _ERROR_RE.match(line):
            return self._update(int(match[1]), status="error")
        if match := _OUTPUT_RE.match(line):
            self.last_output = match[3]
            return None
        if _NOISE_RE.match(line):
            return None
        if match := _STEP_RE.match(line):
            number, text = int(match[1]), match[2]
            if number in self._steps:  # "#5 transferring context: 2B done", "#7 extracting sha256:..."
                self.last_output = text
                return None
            step = BuildStep(number, text)
            self._steps[number] = step
            self.current = step
            self.last_output = ""
            return step
        return None

    def _update(self, number: int, **changes) -> BuildStep | None:
        step = self._steps.get(number)
        if step is None:
            return None
        step = dataclasses.replace(step, **changes)
        self._steps[number] = step
        if self.current and self.current.number == number:
            self.current = step
        return step

    @property
    def steps(self) -> tuple[BuildStep, ...]:
        return tuple(self._steps[n] for n in sorted(self._steps))
