"""Checks the CUDA image from inside (no GPU needed): prints torch's version and the CUDA it was built for."""

import json
import sys

import torch

found = {"python": "%d.%d" % sys.version_info[:2], "torch": torch.__version__, "cuda": torch.version.cuda}
print(json.dumps(found))
expected = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
sys.exit(1 if any(found.get(k) != v for k, v in expected.items()) else 0)
