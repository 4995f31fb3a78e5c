"""ONNX verification of an export job's models, inside the image that produced them.

The host never loads a model: it runs `envbuilder/run/incontainer/verify_onnx.py` in the SAME image (tools
mounted read-only at /opt/envbuilder-tools, the artifacts directory at /artifacts), so the model is checked
with the onnxruntime the project ships. That script writes `<model>.metadata.json` next to each model and
prints one `ENVBUILDER_ONNX_RESULT {json}` line per model, which is parsed here.
Must not import the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from envbuilder.errors import EnvbuilderError
from envbuilder.run.incontainer import CONTAINER_TOOLS_DIR, TOOLS_DIR
from envbuilder.imagelayout import LABEL_ROLE
from envbuilder.run.record import plan_summary

CONTAINER_ARTIFACTS = "/artifacts"
RESULT_PREFIX = "ENVBUILDER_ONNX_RESULT "
VERIFY_SEED = 0


@dataclass(frozen=True)
class ExportCheck:
    """One declared ONNX export: paths are relative to the artifacts directory."""

    path: str
    inputs: Mapping[str, Any] = field(default_factory=dict)  # name -> shape list, or {"shape": [...], "dtype": "float32"}
    outputs: tuple[str, ...] = ()
    reference_inputs: str | None = None
    reference_outputs: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-5

    @property
    def metadata_name(self) -> str:
        return str(PurePosixPath(self.path).with_suffix("")) + ".metadata.json"


@dataclass(frozen=True)
class VerifiedModel:
    path: Path  # on the host
    ok: bool
    reason: str | None = None
    max_abs_diff: float | None = None
    metadata_path: Path | None = None
    providers: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"path": str(self.path), "ok": self.ok, "reason": self.reason, "max_abs_diff": self.max_abs_diff,
                "metadata_path": str(self.metadata_path) if self.metadata_path else None, "providers": list(self.providers)}


def export_checks(exports: Iterable[Any]) -> list[ExportCheck]:
    """ExportCheck values from the config's export declarations (objects or dicts, kebab- or snake-case keys)."""
    checks = []
    for item in exports:
        get = (lambda key, default=None: _field(item, key, default))
        inputs = get("inputs") or {}
        checks.append(ExportCheck(
            path=str(get("path")),
            inputs={name: _plain(spec) for name, spec in dict(inputs).items()},
            outputs=tuple(get("outputs") or ()),
            reference_inputs=_opt_str(get("reference_inputs")),
            reference_outputs=_opt_str(get("reference_outputs")),
            rtol=float(get("rtol", 1e-4) if get("rtol") is not None else 1e-4),
            atol=float(get("atol", 1e-5) if get("atol") is not None else 1e-5),
        ))
    return checks


def _field(item: Any, key: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        for k in (key, key.replace("_", "-")):
            if k in item:
                return item[k]
        return default
    return getattr(item, key, default)


def _plain(spec: Any) -> Any:
    """Shapes as lists, and {"shape", "dtype"} as a dict, whatever value type the config used."""
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump()
    if isinstance(spec, Mapping):
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in spec.items() if v is not None}
    return list(spec)


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def build_request(checks: Iterable[ExportCheck], plan: Mapping[str, Any]) -> dict:
    """The JSON the in-container script takes; every path is a container path under /artifacts."""
    def inside(rel: str | None) -> str | None:
        return None if rel is None else str(PurePosixPath(CONTAINER_ARTIFACTS) / rel)

    models = [{
        "path": inside(c.path), "inputs": dict(c.inputs), "outputs": list(c.outputs),
        "reference_inputs": inside(c.reference_inputs), "reference_outputs": inside(c.reference_outputs),
        "rtol": c.rtol, "atol": c.atol, "metadata_path": inside(c.metadata_name),
    } for c in checks]
    return {"models": models, "plan": dict(plan), "seed": VERIFY_SEED}


def parse_results(lines: Iterable[str], artifacts_dir: Path) -> list[VerifiedModel]:
    """The models' results from the script's output; container paths are mapped back to the host."""
    def host(path: str | None) -> Path | None:
        if not path:
            return None
        rel = PurePosixPath(path).relative_to(CONTAINER_ARTIFACTS) if path.startswith(CONTAINER_ARTIFACTS + "/") else PurePosixPath(path)
        return artifacts_dir / rel

    results = []
    for line in lines:
        if not line.startswith(RESULT_PREFIX):
            continue
        data = json.loads(line[len(RESULT_PREFIX):])
        results.append(VerifiedModel(
            path=host(data["path"]), ok=bool(data.get("ok")), reason=data.get("reason"),
            max_abs_diff=data.get("max_abs_diff"), metadata_path=host(data.get("metadata_path")),
            providers=tuple(data.get("providers") or ()),
        ))
    return results


def verify_exports(
    *,
    image: str,
    artifacts_dir: Path,
    checks: Iterable[ExportCheck],
    docker: Any,
    built_with: Mapping[str, Any] | None = None,
    user: str | None = None,
    gpus: str | int | None = None,
    on_line: Callable[[str], None] | None = None,
) -> list[VerifiedModel]:
    """Verify every declared model in one container of `image`; one VerifiedModel per check, in order.

    built_with: plan_summary() of the image's plan, written into each model's metadata; None reads it from the
    image's labels.

    Raises EnvbuilderError("onnx-verify-crashed") when the script gave no result for some model (the image
    has no Python, the tools could not be mounted); a model that fails verification is a result, not an error.
    """
    checks = list(checks)
    if not checks:
        return []
    artifacts_dir = Path(artifacts_dir).resolve()
    if built_with is None:
        info = docker.image_inspect(image) or {}
        built_with = plan_summary(image_labels=(info.get("Config") or {}).get("Labels") or {})
    request = build_request(checks, built_with)
    command = ["python", f"{CONTAINER_TOOLS_DIR}/verify_onnx.py", json.dumps(request)]
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line and not line.startswith(RESULT_PREFIX):
            on_line(line)

    container = docker.run_detached(
        image, command,
        mounts=[(str(TOOLS_DIR), CONTAINER_TOOLS_DIR, True), (str(artifacts_dir), CONTAINER_ARTIFACTS, False)],
        env={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
        user=user, workdir=CONTAINER_ARTIFACTS, gpus=gpus,
        labels={LABEL_ROLE: "onnx-verify"}, attach=True,
    )
    try:
        docker.follow_to_exit(container, collect)
    finally:
        docker.remove_container(container)
    results = parse_results(lines, artifacts_dir)
    if len(results) != len(checks):
        tail = "; ".join(ln for ln in lines[-5:] if ln.strip()) or "no output"
        raise EnvbuilderError(
            "onnx-verify-crashed",
            f"ONNX verification in {image} gave {len(results)} result(s) for {len(checks)} model(s): {tail[:400]}",
            "the image needs python with onnxruntime and numpy; rerun with -v to see the full output",
            context={"output": lines[-40:]},
        )
    return results


def failure_message(results: Iterable[VerifiedModel]) -> str | None:
    """One line naming each model that failed and why, or None when all passed."""
    failed = [f"{r.path.name}: {r.reason}" for r in results if not r.ok]
    return ("ONNX verification failed: " + "; ".join(failed)) if failed else None
