"""Export the trained TinyNet to ONNX, with reference inputs and outputs to verify it against.

Reads $ENVBUILDER_ARTIFACTS/checkpoint.pt, writes tinynet.onnx and tinynet.reference-{inputs,outputs}.npz
next to it. Uses the TorchScript exporter (dynamo=False): it needs the `onnx` package, not `onnxscript`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from tinynet.data import two_moons
from tinynet.model import TinyNet


def main(argv: list[str] | None = None) -> int:
    artifacts = Path(os.environ.get("ENVBUILDER_ARTIFACTS", "artifacts"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=artifacts / "checkpoint.pt")
    parser.add_argument("--output", type=Path, default=artifacts / "tinynet.onnx")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)

    if not args.checkpoint.is_file():
        print(f"no checkpoint at {args.checkpoint}: run the train job first", file=sys.stderr)
        return 2
    model = TinyNet()
    model.load_state_dict(torch.load(args.checkpoint, map_location="cpu")["model"])
    model.eval()

    example = torch.zeros(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces itself
        torch.onnx.export(model, (example,), str(args.output), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=args.opset, dynamo=False)

    x, _ = two_moons(16, seed=123)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    stem = args.output.with_suffix("")
    np.savez(f"{stem}.reference-inputs.npz", input=x)
    np.savez(f"{stem}.reference-outputs.npz", logits=logits)
    print(f"exported {args.output} ({args.output.stat().st_size} bytes, opset {args.opset}) "
          f"with 16 reference points", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
