"""Where envbuilder keeps its state (git cache, build logs, run database, installed matrix).

The data directory is ~/.envbuilder unless ENVBUILDER_HOME or an explicit path says otherwise.
Callers pass a Settings value down; nothing reads the environment behind their back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    docker_binary: str | None = None  # None: find one that can do BuildKit builds

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None, docker_binary: str | None = None) -> "Settings":
        root = data_dir or os.environ.get("ENVBUILDER_HOME") or Path.home() / ".envbuilder"
        return cls(Path(root).expanduser(), docker_binary or os.environ.get("ENVBUILDER_DOCKER") or None)

    @property
    def git_cache(self) -> Path:
        return self.data_dir / "git"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def runs_db(self) -> Path:
        return self.data_dir / "runs.sqlite3"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def matrix_override(self) -> Path:
        return self.data_dir / "compatibility.json"
