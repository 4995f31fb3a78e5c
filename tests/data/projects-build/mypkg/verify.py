"""Checks the image from inside: the console script is on PATH, the metadata reads, the C extension computes.

Prints one JSON line; exits non-zero when a check fails.
"""

import json
import shutil
import subprocess
import sys
from importlib.metadata import version


def main() -> int:
    import mypkg._speedups as speedups

    script = shutil.which("mypkg-hello")
    hello = subprocess.run([script or "mypkg-hello"], capture_output=True, text=True) if script else None
    found = {
        "version": version("mypkg"),
        "dot": speedups.dot([1.0, 2.0], [3.0, 4.0]),
        "extension": speedups.__file__,
        "script": script,
        "hello": hello.stdout.strip() if hello else None,
    }
    print(json.dumps(found))
    ok = found["version"] == "0.3.1" and found["dot"] == 11.0 and found["hello"] == "mypkg 0.3.1 dot=32.0"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
