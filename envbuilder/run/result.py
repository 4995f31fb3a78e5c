"""What a run gives back when it is over: RunResult (one run: how it ended, its metrics, where its files are) and
ProjectRun (the image it ran in, with that result or a pipeline's).

Their own module because nothing needs them until the job has ended: `envbuilder run --image` loads this while the
container runs, not before it starts. Must not import docker, pydantic or the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envbuilder.run.launch import ProjectImage


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # completed | failed | stopped
    exit_code: int | None
    metrics: Mapping[str, float]  # the last value of each metric
    artifacts_dir: Path | None
    log_path: Path
    message: str | None = None
    verified: tuple[Any, ...] = ()  # run.onnx.VerifiedModel, one per declared export
    duration_s: float = 0.0
    job: str | None = None
    hint: str | None = None  # what to do about a failed job, read from its output (run.hints)
    notices: tuple[Mapping[str, str], ...] = ()  # {"code", "message"}: a NaN loss, a metrics channel unread...

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "job": self.job, "status": self.status, "exit_code": self.exit_code,
            # JSON has no NaN or infinity: a diverged loss is said as a string rather than as invalid JSON
            "metrics": {k: v if math.isfinite(v) else str(v) for k, v in self.metrics.items()},
            "artifacts_dir": str(self.artifacts_dir) if self.artifacts_dir else None,
            "log_path": str(self.log_path), "message": self.message, "duration_s": round(self.duration_s, 3),
            "verified": [v.to_json() for v in self.verified], "hint": self.hint,
            "notices": [dict(n) for n in self.notices],
        }


@dataclass(frozen=True)
class ProjectRun:
    image: ProjectImage
    result: Any  # RunResult, or run.pipeline.PipelineResult for a pipeline

    @property
    def ok(self) -> bool:
        return self.result.ok

    def to_json(self) -> dict:
        return {**self.result.to_json(), "image": self.image.ref}
