"""Validate a compatibility matrix file and print its counts: `python tools/check_matrix.py [FILE]`.

Exit 0 when the file matches envbuilder's schema (envbuilder.resolve.matrix.parse_matrix), 1 with the error otherwise.
Run it after editing envbuilder/data/compatibility.json, before the test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envbuilder.index.matrix_update import show_matrix  # noqa: E402
from envbuilder.errors import EnvbuilderError  # noqa: E402
from envbuilder.resolve.matrix import PACKAGED_MATRIX, parse_matrix  # noqa: E402


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else PACKAGED_MATRIX
    try:
        matrix = parse_matrix(path.read_bytes(), origin=str(path))
    except (EnvbuilderError, OSError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    counts = show_matrix(matrix)["counts"]
    newest = matrix.releases_newest_first[0].version if matrix.torch else "-"
    print(f"ok: {path} updated {matrix.updated}; newest torch {newest}; "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
