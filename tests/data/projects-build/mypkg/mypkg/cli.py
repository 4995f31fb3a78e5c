"""The `mypkg-hello` console script: prints the installed version and a value the C extension computes."""

import sys
from importlib.metadata import version


def main() -> int:
    from mypkg import dot

    print(f"mypkg {version('mypkg')} dot={dot([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
