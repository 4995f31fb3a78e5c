"""ONNX verification for real: the in-container script, in an image with onnxruntime, on good and broken models.

The image is the bootstrapped Debian base plus `pip install onnxruntime numpy onnx` (built once, cached by
BuildKit). The models are made inside that image with the `onnx` helper package, so the host needs neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.run.onnx import ExportCheck, verify_exports

pytestmark = pytest.mark.docker

ONNX_IMAGE = "envbuilder-test/onnxruntime:1"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DOCKERFILE = """\
FROM {base}
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install --no-cache-dir onnxruntime numpy onnx
"""

# Run inside the image: y = x @ W + b (good); sqrt(x - 100) -> NaN (non-finite); a model whose input is
# [N, 3] (shape mismatch with the declaration [1, 2]); reference npz files for the good model, and a wrong one.
MAKE_MODELS = r"""
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
rng = np.random.default_rng(1)
W = rng.standard_normal((2, 2)).astype(np.float32); b = np.array([0.5, -0.5], np.float32)

def save(name, nodes, inits, in_dims):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="envbuilder-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, f"/artifacts/{name}.onnx")

save("good", [helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["logits"])],
     [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")], ["batch", 2])
save("nan", [helper.make_node("Sub", ["input", "c"], ["h"]), helper.make_node("Sqrt", ["h"], ["logits"])],
     [numpy_helper.from_array(np.array([100.0, 100.0], np.float32), "c")], ["batch", 2])
W3 = np.ones((3, 2), np.float32)
save("wide", [helper.make_node("MatMul", ["input", "W"], ["logits"])], [numpy_helper.from_array(W3, "W")], ["batch", 3])
x = rng.standard_normal((8, 2)).astype(np.float32)
np.savez("/artifacts/good.in.npz", input=x)
np.savez("/artifacts/good.out.npz", logits=x @ W + b)
np.savez("/artifacts/good.wrong.npz", logits=x @ W + b + 0.1)
open("/artifacts/garbage.onnx", "wb").write(b"this is not a protobuf" * 10)
"""


@pytest.fixture(scope="module")
def docker_client():
    from envbuilder.docker.engine import Docker

    return Docker()


@pytest.fixture(scope="module")
def onnx_image(docker_client, tmp_path_factory):
    from envbuilder.build.base import bootstrap_base
    from envbuilder.docker.buildkit import BuildRequest

    base = bootstrap_base(docker_client)
    context = tmp_path_factory.mktemp("onnx-image")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base.name))
    docker_client.build(
        BuildRequest(dockerfile=context / "Dockerfile", context=context, tag=ONNX_IMAGE, secrets={"ca": CA_BUNDLE}),
        on_line=lambda _line: None, timeout=900,
    )
    return ONNX_IMAGE


@pytest.fixture(scope="module")
def models(onnx_image, docker_client, tmp_path_factory) -> Path:
    artifacts = tmp_path_factory.mktemp("artifacts")
    os.chmod(artifacts, 0o777)
    code, lines = docker_client.run_once(onnx_image, ["python", "-c", MAKE_MODELS],
                                         mounts=[(str(artifacts), "/artifacts", False)],
                                         user=f"{os.getuid()}:{os.getgid()}", env={"HOME": "/tmp"})
    assert code == 0, "\n".join(lines)
    return artifacts


PLAN = {"torch": "2.13.0", "flavor": "cpu", "python": "3.11", "plan_hash": "0123456789abcdef"}


def _verify(image, docker_client, artifacts, *checks):
    return verify_exports(image=image, artifacts_dir=artifacts, checks=checks, docker=docker_client,
                          built_with=PLAN, user=f"{os.getuid()}:{os.getgid()}")


def test_good_model_passes_and_writes_metadata(onnx_image, docker_client, models):
    good = ExportCheck("good.onnx", inputs={"input": [1, 2]}, reference_inputs="good.in.npz",
                       reference_outputs="good.out.npz", rtol=1e-4, atol=1e-5)
    [result] = _verify(onnx_image, docker_client, models, good)
    assert result.ok, result.reason
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    assert result.metadata_path == models / "good.metadata.json"
    meta = json.loads(result.metadata_path.read_text())
    assert meta["inputs"] == [{"name": "input", "shape": ["batch", 2], "dtype": "float32"}]
    assert meta["outputs"][0]["name"] == "logits"
    assert meta["opsets"] == {"ai.onnx": 17}
    assert meta["ir_version"] == 8
    assert meta["producer"]["name"] == "envbuilder-tests"
    assert meta["size_bytes"] == (models / "good.onnx").stat().st_size
    import hashlib

    assert meta["sha256"] == hashlib.sha256((models / "good.onnx").read_bytes()).hexdigest()
    assert meta["plan"]["plan_hash"] == PLAN["plan_hash"]
    assert meta["verification"]["ok"] is True and meta["verification"]["reference"] is True
    assert "CPUExecutionProvider" in meta["verification"]["providers"]
    assert result.metadata_path.stat().st_uid == os.getuid()


def test_broken_models_fail_with_a_reason(onnx_image, docker_client, models):
    checks = [
        ExportCheck("garbage.onnx", inputs={"input": [1, 2]}),
        ExportCheck("nan.onnx", inputs={"input": [4, 2]}),
        ExportCheck("wide.onnx", inputs={"input": [1, 2]}),
        ExportCheck("good.onnx", inputs={"input": [1, 2]}, reference_inputs="good.in.npz",
                    reference_outputs="good.wrong.npz", rtol=1e-4, atol=1e-5),
        ExportCheck("good.onnx", inputs={"x": [1, 2]}),
        ExportCheck("missing.onnx", inputs={"input": [1, 2]}),
    ]
    results = _verify(onnx_image, docker_client, models, *checks)
    reasons = [r.reason or "" for r in results]
    assert not any(r.ok for r in results), reasons
    assert "cannot load" in reasons[0]
    assert "non-finite" in reasons[1]
    assert "axis 1 is 3 in the model, declared 2" in reasons[2]
    assert "differs from the reference" in reasons[3] and results[3].max_abs_diff == pytest.approx(0.1, rel=1e-3)
    assert "declared input(s) ['x'] not in the model" in reasons[4]
    assert "does not exist" in reasons[5]
    meta = json.loads((models / "nan.metadata.json").read_text())
    assert meta["verification"]["ok"] is False and "non-finite" in meta["verification"]["reason"]


def test_image_without_onnxruntime_is_a_clear_failure(docker_client, models):
    from envbuilder.build.base import bootstrap_base

    base = bootstrap_base(docker_client).name
    [result] = _verify(base, docker_client, models, ExportCheck("good.onnx", inputs={"input": [1, 2]}))
    assert not result.ok and "lacks numpy" in result.reason


def test_no_result_lines_is_an_error(docker_client, models):
    with pytest.raises(EnvbuilderError) as err:
        verify_exports(image="envbuilder-test/does-not-exist:0", artifacts_dir=models,
                       checks=[ExportCheck("good.onnx")], docker=docker_client)
    assert err.value.code in ("image-not-found", "registry-unreachable", "docker-failed")


def test_a_model_that_fails_verification_fails_its_job(onnx_image, docker_client, tmp_path):
    from envbuilder.project.config import Job
    from envbuilder.run.container import execute_run
    from envbuilder.run.spec import run_spec
    from envbuilder.run.store import RunStore
    from envbuilder.settings import Settings

    project = tmp_path / "proj"
    project.mkdir()
    settings = Settings(tmp_path / "home")
    store = RunStore.from_settings(settings)
    job = Job.model_validate({
        "command": ["python", "-c", "open('/artifacts/model.onnx', 'wb').write(b'not a model')"],
        "gpus": "none", "exports": [{"path": "model.onnx", "inputs": {"input": [1, 2]}}],
    })
    lines: list[str] = []
    spec = run_spec(onnx_image, project, job=job, job_name="export", has_nvidia=lambda: False)
    result = execute_run(spec, docker=docker_client, store=store, on_line=lines.append)
    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.message.startswith("ONNX verification failed: model.onnx: onnxruntime cannot load it")
    record = store.get(result.run_id)
    assert record.status == "failed" and record.exit_code == 1 and "model.onnx" in record.error
    assert any("model.onnx FAILED verification" in line for line in lines)
    assert "FAILED verification" in result.log_path.read_text()
    [verified] = result.verified
    assert not verified.ok and (project / "artifacts" / "model.metadata.json").is_file()
