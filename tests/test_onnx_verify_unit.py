"""The host side of ONNX verification (requests, result parsing) and the in-container header reader."""

from __future__ import annotations

import json
from pathlib import Path

from envbuilder.project.config import load_config
from envbuilder.run.incontainer.verify_onnx import RESULT_PREFIX as SCRIPT_PREFIX
from envbuilder.run.incontainer.verify_onnx import read_onnx_header
from envbuilder.run.onnx import (
    RESULT_PREFIX,
    ExportCheck,
    VerifiedModel,
    build_request,
    export_checks,
    failure_message,
    parse_results,
    plan_summary,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tinynet"


def test_prefixes_agree():
    assert RESULT_PREFIX == SCRIPT_PREFIX


def test_checks_from_the_example_config():
    [check] = export_checks(load_config(EXAMPLE).job("export").exports)
    assert check == ExportCheck("tinynet.onnx", inputs={"input": {"shape": [1, 2], "dtype": "float32"}},
                                reference_inputs="tinynet.reference-inputs.npz",
                                reference_outputs="tinynet.reference-outputs.npz", rtol=1e-4, atol=1e-5)
    assert check.metadata_name == "tinynet.metadata.json"


def test_request_uses_container_paths():
    request = build_request([ExportCheck("models/a.onnx", inputs={"x": [1, 3]}, reference_inputs="a.in.npz")],
                            {"torch": "2.13.0"})
    [model] = request["models"]
    assert model["path"] == "/artifacts/models/a.onnx"
    assert model["metadata_path"] == "/artifacts/models/a.metadata.json"
    assert model["reference_inputs"] == "/artifacts/a.in.npz" and model["reference_outputs"] is None
    assert request["plan"] == {"torch": "2.13.0"} and request["seed"] == 0
    json.dumps(request)  # it travels as one argv item


def test_results_map_back_to_the_host(tmp_path):
    lines = [
        "some warning from onnxruntime",
        RESULT_PREFIX + json.dumps({"path": "/artifacts/a.onnx", "ok": True, "max_abs_diff": 1e-6,
                                    "metadata_path": "/artifacts/a.metadata.json", "providers": ["CPUExecutionProvider"]}),
        RESULT_PREFIX + json.dumps({"path": "/artifacts/b.onnx", "ok": False, "reason": "output 'y' has non-finite values"}),
    ]
    a, b = parse_results(lines, tmp_path)
    assert a == VerifiedModel(tmp_path / "a.onnx", True, None, 1e-6, tmp_path / "a.metadata.json", ("CPUExecutionProvider",))
    assert not b.ok and b.metadata_path is None
    assert failure_message([a, b]) == "ONNX verification failed: b.onnx: output 'y' has non-finite values"
    assert failure_message([a]) is None


def test_plan_summary_from_labels():
    labels = {"org.envbuilder.torch": "2.13.0+cpu", "org.envbuilder.flavor": "cpu", "org.envbuilder.python": "3.11",
              "org.envbuilder.plan-hash": "abc"}
    assert plan_summary(image_labels=labels) == {"torch": "2.13.0+cpu", "flavor": "cpu", "python": "3.11", "plan_hash": "abc"}


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_header_reader_on_a_hand_made_model_proto(tmp_path):
    opset = _field(1, b"") + _field(2, 17)
    ml_opset = _field(1, b"ai.onnx.ml") + _field(2, 3)
    graph = b"\x00" * 300  # skipped by seeking, never parsed
    proto = (_field(1, 9) + _field(2, b"pytorch") + _field(3, b"2.13.0") + _field(7, graph)
             + _field(8, opset) + _field(8, ml_opset))
    model = tmp_path / "m.onnx"
    model.write_bytes(proto)
    assert read_onnx_header(str(model)) == {"ir_version": 9, "producer_name": "pytorch", "producer_version": "2.13.0",
                                            "opsets": {"ai.onnx": 17, "ai.onnx.ml": 3}}


def test_header_reader_refuses_garbage(tmp_path):
    import pytest

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError):
        read_onnx_header(str(bad))
