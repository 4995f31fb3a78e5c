"""Checks the built image from inside: `python verify.py EXPECTED_JSON` exits non-zero on a mismatch.

EXPECTED_JSON holds {"python": "3.11", "torch": "2.13.0+cpu", "onnxruntime": "1.x.y"}; keys may be absent.
Prints one JSON line with what it found.
"""

import json
import platform
import sys


def main() -> int:
    expected = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    import onnxruntime
    import torch

    import cpuproj

    found = {
        "python": "%d.%d" % sys.version_info[:2],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": onnxruntime.__version__,
        "prefix": sys.prefix,
        "machine": platform.machine(),
        "greeting": cpuproj.GREETING,
        "forward": list(cpuproj.tiny_model()(torch.ones(1, 4)).shape),
    }
    print(json.dumps(found))
    wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    if wrong:
        print(f"verify: mismatches (expected, found): {wrong}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
