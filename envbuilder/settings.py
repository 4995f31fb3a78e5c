"""Where envbuilder keeps its state (git cache, build logs, run database, installed matrix), and who may read it.

The data directory is ~/.envbuilder unless ENVBUILDER_HOME or an explicit path says otherwise.
Callers pass a Settings value down; nothing reads the environment behind their back.
The data directory holds private things (clones of private repositories, job logs that print secrets, the run
database), so it and the folders envbuilder makes in it are 0700 (private_dir). Must not import anything of ours.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class Settings(NamedTuple):  # not a dataclass: every command makes one first (why in envbuilder.run's docstring)
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

    def config_paths(self, environ: Mapping[str, str] | None = None) -> list[Path]:
        """Where the user config may be, first match wins: $ENVBUILDER_CONFIG, DATA_DIR/config.toml, then
        $XDG_CONFIG_HOME/envbuilder/config.toml (~/.config when unset). One list for every reader of that file."""
        return user_config_paths(self.data_dir, os.environ if environ is None else environ)

    def private_dir(self, path: Path) -> Path:
        """`path` (inside the data dir) made if missing, with the data dir and every folder between them 0700."""
        return private_dir(Path(path), root=self.data_dir)


def user_config_paths(data_dir: Path, environ: Mapping[str, str]) -> list[Path]:
    """The user config's candidate locations, first match wins (see Settings.config_paths)."""
    paths = []
    if environ.get("ENVBUILDER_CONFIG"):
        paths.append(Path(environ["ENVBUILDER_CONFIG"]).expanduser())
    paths.append(Path(data_dir) / "config.toml")
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(xdg).expanduser() / "envbuilder" / "config.toml")
    return paths


def private_dir(path: Path, *, root: Path | None = None) -> Path:
    """Make `path` (and missing parents) 0700; folders from `root` down to `path` that already exist and are ours
    are tightened to 0700 too (an older envbuilder made them 0755). Folders above `root` are left alone."""
    path = Path(path)
    chain = [path]
    if root is not None:
        root = Path(root)
        if path != root and root in path.parents:
            current = path.parent
            while current != root:
                chain.append(current)
                current = current.parent
            chain.append(root)
    for folder in reversed(chain):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
        except FileExistsError:
            _tighten(folder)
    return path


def _tighten(folder: Path) -> None:
    try:
        info = folder.stat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(folder, stat.S_IMODE(info.st_mode) & ~0o077)
    except OSError:  # not ours to change (a shared mount): what is inside is still made private
        pass
