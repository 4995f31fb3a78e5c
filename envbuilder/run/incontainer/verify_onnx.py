"""Verify exported ONNX models inside the project's image, and write each one's metadata JSON.

Runs INSIDE the image (`python /opt/envbuilder-tools/verify_onnx.py REQUEST_JSON`), with the image's
onnxruntime and numpy, so it must import nothing from envbuilder and nothing but the standard library at
module level. The request is one JSON object: {"models": [{path, inputs, outputs, reference_inputs,
reference_outputs, rtol, atol, metadata_path}], "plan": {...}, "seed": 0}. For each model it prints one line
`ENVBUILDER_ONNX_RESULT {json}` that the host parses; the exit status is 0 when every model passed.

The ONNX header (ir_version, opsets, producer) is read from the protobuf directly, so the `onnx` package is
not needed: ModelProto fields 1 (ir_version), 2/3 (producer name/version), 8 (opset_import: 1 domain, 2 version).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback

RESULT_PREFIX = "ENVBUILDER_ONNX_RESULT "

# ONNX tensor element types as onnxruntime names them, and the numpy dtype that feeds them.
_ORT_TO_NUMPY = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


class VerificationFailed(Exception):
    pass


# --- the ONNX header, without the onnx package --------------------------------------------------------


def _read_varint(f) -> int | None:
    shift, value = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _parse_fields(data: bytes) -> dict[int, list]:
    import io

    fields: dict[int, list] = {}
    f = io.BytesIO(data)
    while (key := _read_varint(f)) is not None:
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(number, []).append(_read_varint(f))
        elif wire == 2:
            fields.setdefault(number, []).append(f.read(_read_varint(f)))
        elif wire == 1:
            f.read(8)
        elif wire == 5:
            f.read(4)
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return fields


def read_onnx_header(path: str) -> dict:
    """ir_version, producer and opsets from the top level of a ModelProto, skipping the graph by seeking."""
    header: dict = {"ir_version": None, "producer_name": None, "producer_version": None, "opsets": {}}
    with open(path, "rb") as f:
        while (key := _read_varint(f)) is not None:
            number, wire = key >> 3, key & 7
            if wire == 0:
                value = _read_varint(f)
                if number == 1:
                    header["ir_version"] = value
            elif wire == 2:
                length = _read_varint(f)
                if number in (2, 3, 8):
                    payload = f.read(length)
                    if number == 2:
                        header["producer_name"] = payload.decode("utf-8", "replace")
                    elif number == 3:
                        header["producer_version"] = payload.decode("utf-8", "replace")
                    else:
                        opset = _parse_fields(payload)
                        domain = opset.get(1, [b""])[0].decode("utf-8", "replace") or "ai.onnx"
                        header["opsets"][domain] = opset.get(2, [None])[0]
                else:
                    f.seek(length, os.SEEK_CUR)
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            else:
                raise ValueError(f"not an ONNX model (wire type {wire} at the top level)")
    if header["ir_version"] is None:
        raise ValueError("not an ONNX model (no ir_version)")
    return header


def file_digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# --- verification ------------------------------------------------------------------------------------


def _declared(spec) -> tuple[list, str | None]:
    """A declared input is a shape list, or {"shape": [...], "dtype": "float32"}."""
    if isinstance(spec, dict):
        return list(spec.get("shape") or []), spec.get("dtype")
    return list(spec), None


def _feed(session, model: dict, np, rng) -> dict:
    declared = model.get("inputs") or {}
    session_inputs = {i.name: i for i in session.get_inputs()}
    missing = sorted(set(declared) - set(session_inputs))
    if missing:
        raise VerificationFailed(f"declared input(s) {missing} not in the model (it has {sorted(session_inputs)})")
    undeclared = sorted(set(session_inputs) - set(declared))
    if undeclared and declared:
        raise VerificationFailed(f"model input(s) {undeclared} are not declared in the export's inputs")
    feed = {}
    for name, meta in session_inputs.items():
        shape, dtype = _declared(declared[name]) if name in declared else ([], None)
        model_dtype = _ORT_TO_NUMPY.get(meta.type)
        if model_dtype is None:
            raise VerificationFailed(f"input {name!r} has type {meta.type}, which verification cannot feed")
        if dtype and np.dtype(dtype) != np.dtype(model_dtype):
            raise VerificationFailed(f"input {name!r} is {model_dtype} in the model, declared {dtype}")
        if not shape:
            shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        if len(shape) != len(meta.shape):
            raise VerificationFailed(f"input {name!r} has rank {len(meta.shape)} {list(meta.shape)}, declared {shape}")
        for axis, (have, want) in enumerate(zip(meta.shape, shape)):
            if isinstance(have, int) and have != want:
                raise VerificationFailed(f"input {name!r} axis {axis} is {have} in the model, declared {want}")
        if np.issubdtype(np.dtype(model_dtype), np.floating):
            feed[name] = rng.standard_normal(shape).astype(model_dtype)
        elif model_dtype == "bool":
            feed[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[name] = rng.integers(0, 10, shape).astype(model_dtype)
    return feed


def _run_checked(session, feed, np, output_names, inputs):
    """The model's outputs on `feed`; a crash or a NaN/inf output fails verification, naming the inputs."""
    try:
        outputs = session.run(None, feed)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise VerificationFailed(f"running it on {inputs} failed: {first}") from None
    _check_finite(np, output_names, outputs, inputs)
    return outputs


def _check_finite(np, names, outputs, what: str) -> None:
    for name, value in zip(names, outputs):
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise VerificationFailed(f"output {name!r} has non-finite values on {what}")


def verify_model(model: dict, seed: int, result: dict) -> None:
    """Fill result in place (so a failure keeps what was learnt before it); raise VerificationFailed."""
    import numpy as np
    import onnxruntime as ort

    path = model["path"]
    if not os.path.isfile(path):
        raise VerificationFailed("the file does not exist (did the export job write it?)")
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        session = ort.InferenceSession(path, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise VerificationFailed(f"onnxruntime cannot load it: {str(exc).strip().splitlines()[0][:300]}") from None
    result["providers"] = session.get_providers()
    result["inputs"] = [{"name": i.name, "shape": list(i.shape), "dtype": _ORT_TO_NUMPY.get(i.type, i.type)} for i in session.get_inputs()]
    result["outputs"] = [{"name": o.name, "shape": list(o.shape), "dtype": _ORT_TO_NUMPY.get(o.type, o.type)} for o in session.get_outputs()]
    output_names = [o.name for o in session.get_outputs()]
    missing_outputs = sorted(set(model.get("outputs") or ()) - set(output_names))
    if missing_outputs:
        raise VerificationFailed(f"declared output(s) {missing_outputs} not in the model (it has {output_names})")

    rng = np.random.default_rng(seed)
    _run_checked(session, _feed(session, model, np, rng), np, output_names, "random inputs of the declared shapes")

    if model.get("reference_inputs"):
        with np.load(model["reference_inputs"]) as ref_in:
            ref_feed = {name: ref_in[name] for name in ref_in.files}
        got = _run_checked(session, ref_feed, np, output_names, "the reference inputs")
        if model.get("reference_outputs"):
            rtol, atol = float(model.get("rtol", 1e-4)), float(model.get("atol", 1e-5))
            with np.load(model["reference_outputs"]) as ref_out:
                expected = {name: ref_out[name] for name in ref_out.files}
            worst = 0.0
            for name, value in zip(output_names, got):
                if name not in expected:
                    continue
                want = expected[name]
                if want.shape != value.shape:
                    raise VerificationFailed(f"output {name!r} has shape {list(value.shape)}, the reference {list(want.shape)}")
                diff = float(np.max(np.abs(value.astype(np.float64) - want.astype(np.float64)))) if value.size else 0.0
                worst = max(worst, diff)
                if not np.allclose(value, want, rtol=rtol, atol=atol):
                    result["max_abs_diff"] = worst
                    raise VerificationFailed(f"output {name!r} differs from the reference: max abs diff {diff:.3g} "
                                             f"(rtol={rtol:g}, atol={atol:g})")
            unknown = sorted(set(expected) - set(output_names))
            if unknown:
                raise VerificationFailed(f"reference outputs {unknown} name no output of the model ({output_names})")
            result["max_abs_diff"] = worst
    result["ok"] = True


def metadata(model: dict, result: dict, plan: dict) -> dict:
    path = model["path"]
    meta: dict = {"model": os.path.basename(path)}
    if os.path.isfile(path):
        sha256, size = file_digest(path)
        meta.update(sha256=sha256, size_bytes=size)
        try:
            header = read_onnx_header(path)
            meta.update(ir_version=header["ir_version"], opsets=header["opsets"],
                        producer={"name": header["producer_name"], "version": header["producer_version"]})
        except (ValueError, OSError) as exc:
            meta["header_error"] = str(exc)
    meta["inputs"] = result.get("inputs", [])
    meta["outputs"] = result.get("outputs", [])
    meta["plan"] = plan
    meta["verification"] = {
        "ok": result["ok"], "reason": result["reason"], "max_abs_diff": result["max_abs_diff"],
        "rtol": model.get("rtol"), "atol": model.get("atol"), "providers": result.get("providers", []),
        "reference": bool(model.get("reference_outputs")),
    }
    try:
        import onnxruntime

        meta["verification"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return meta


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: verify_onnx.py REQUEST_JSON", file=sys.stderr)
        return 2
    request = json.loads(argv[0])
    all_ok = True
    for model in request["models"]:
        result: dict = {"path": model["path"], "ok": False, "reason": None, "max_abs_diff": None, "providers": []}
        try:
            verify_model(model, int(request.get("seed", 0)), result)
        except VerificationFailed as exc:
            result["reason"] = str(exc)
        except ImportError as exc:
            result["reason"] = f"the image lacks {exc.name or exc}: add onnxruntime and numpy to the project's dependencies"
        except Exception as exc:  # report, don't crash: the host needs one line per model
            traceback.print_exc()
            result["reason"] = f"verification crashed: {type(exc).__name__}: {exc}"
        meta_path = model.get("metadata_path")
        if meta_path:
            try:
                with open(meta_path, "w") as f:
                    json.dump(metadata(model, result, request.get("plan") or {}), f, indent=2, sort_keys=True)
                    f.write("\n")
                result["metadata_path"] = meta_path
            except OSError as exc:
                result.update(ok=False, reason=f"cannot write {meta_path}: {exc}")
        all_ok = all_ok and result["ok"]
        brief = {k: result.get(k) for k in ("path", "ok", "reason", "max_abs_diff", "metadata_path", "providers")}
        print(RESULT_PREFIX + json.dumps(brief), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
