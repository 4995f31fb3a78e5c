"""The project config: staged loading, every error with its field path, and the JSON schema."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from envbuilder.project.config import (
    ConfigIssue,
    Job,
    ProjectConfig,
    RawConfig,
    check_config,
    config_json_schema,
    load_config,
    read_raw_config,
    typed_config,
)
from envbuilder.errors import EnvbuilderError

GOOD = """
[project]
name = "cifar"

[tool.envbuilder]
system-packages = ["libgl1", "ffmpeg"]
pipeline = ["train", "export"]

[tool.envbuilder.jobs.train]
description = "Train the CIFAR-10 ResNet"
command = "python train.py --epochs 10 --data /data"
mounts = ["data/cifar:/data", "cache:/cache:rw"]
artifacts = "out"
env = { OMP_NUM_THREADS = 4, WANDB_MODE = "offline" }
gpus = 1
shm-size = "8g"
metrics = ["top5=(?P<top5>[0-9.]+)", { name = "ppl", pattern = "perplexity (?P<value>[0-9.]+)" }]
resume-arg = "--resume {checkpoint}"
timeout = 3600

[tool.envbuilder.jobs.export]
command = ["python", "export.py", "--out", "out/model.onnx"]
needs = ["train"]
gpus = "none"
artifacts = "out"

[[tool.envbuilder.jobs.export.exports]]
path = "model.onnx"
inputs = { input = { shape = [1, 3, 32, 32], dtype = "float32" } }
reference-inputs = "ref_in.npz"
reference-outputs = "ref_out.npz"
rtol = 1e-3
atol = 1e-4
"""


def _typed(table):
    """An envbuilder.toml's table as the loader types it (a host application's form takes this path too)."""
    return typed_config(RawConfig("envbuilder.toml", "", table))


def write(tmp_path, text, name="pyproject.toml"):
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_loads_typed_frozen_config(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.source == "pyproject.toml" and config.notes == ()
    assert config.system_packages == ("libgl1", "ffmpeg")
    train = config.jobs["train"]
    assert train.command == ("python", "train.py", "--epochs", "10", "--data", "/data")
    assert [(m.source, m.target, m.read_only) for m in train.mounts] == [("data/cifar", "/data", True),
                                                                          ("cache", "/cache", False)]
    assert train.env == {"OMP_NUM_THREADS": "4", "WANDB_MODE": "offline"}
    assert train.gpus == 1 and train.shm_size == "8g" and train.timeout == 3600
    assert train.resume_args("out/ckpt 3.pt") == ("--resume", "out/ckpt 3.pt")
    assert train.metric_specs() == ("top5=(?P<top5>[0-9.]+)", ("ppl", "perplexity (?P<value>[0-9.]+)"))
    assert train.mounts[0].host_path(tmp_path) == (tmp_path / "data" / "cifar").resolve()
    export = config.jobs["export"]
    assert export.gpus == "none" and export.shm_size == "2g" and export.artifacts == "out"
    assert export.exports[0].inputs["input"].shape == (1, 3, 32, 32)
    assert config.pipeline_order() == ("train", "export")
    with pytest.raises(Exception):
        train.command = ("x",)  # frozen


def test_defaults_and_shorthand(tmp_path):
    config = load_config(write(tmp_path, """
        [tool.envbuilder.jobs.export]
        command = "python export.py"
        needs = ["train"]
        exports = [{ path = "m.onnx", inputs = { x = [1, 8] } }]
        [tool.envbuilder.jobs.train]
        command = "python train.py"
    """))
    train = config.jobs["train"]
    assert train.gpus == "auto" and train.shm_size == "2g" and train.artifacts == "artifacts"
    assert train.mounts == () and train.resume_args("c") == ()
    assert config.jobs["export"].exports[0].inputs["x"].dtype == "float32"
    assert config.pipeline_order() == ("train", "export")  # needs order, not declaration order


def test_snake_case_keys_are_accepted(tmp_path):
    config = load_config(write(tmp_path, """
        system_packages = ["git"]
        [jobs.t]
        command = "x"
        shm_size = "1g"
        resume_arg = "--from {checkpoint}"
    """, name="envbuilder.toml"))
    assert config.system_packages == ("git",) and config.jobs["t"].shm_size == "1g"


def test_envbuilder_toml_wins_with_a_note(tmp_path):
    write(tmp_path, '[tool.envbuilder]\nsystem-packages = ["git"]\n')
    write(tmp_path, 'system-packages = ["ffmpeg"]\n', name="envbuilder.toml")
    config = load_config(tmp_path)
    assert config.system_packages == ("ffmpeg",) and config.source == "envbuilder.toml"
    assert any("envbuilder.toml" in note and "ignoring" in note for note in map(str, config.notes))


def test_no_config_is_an_empty_config(tmp_path):
    write(tmp_path, '[project]\nname = "x"\n')
    config = load_config(tmp_path)
    assert config.jobs == {} and config.source is None and config.pipeline_order() == ()


BAD = """
[tool.envbuilder]
system-packages = ["libgl1", "Bad_Pkg"]
python = "3.12"
pipeline = ["train", "nope"]

[tool.envbuilder.jobs.train]
command = ""
mounts = ["data:relative", { source = "x", target = "/d", read-only = "yes" }]
shm-size = "2x"
gpus = "some"
env = { "BAD NAME" = "1", FLAG = true }
metrics = ["broken(", "v=(?P<value>1)", "no groups"]
resume-arg = "--resume {ckpt}"
timeout = -1
artifacts = "../outside"
shm_sise = "1g"

[tool.envbuilder.jobs.export]
command = "python export.py"
needs = ["trian"]
exports = [{ path = "model.pt", inputs = { x = [1, 0] }, reference-outputs = "o.npz" }]
"""

EXPECTED_PATHS = [
    "tool.envbuilder.system-packages[1]",
    "tool.envbuilder.python",
    "tool.envbuilder.pipeline[1]",
    "tool.envbuilder.jobs.train.command",
    "tool.envbuilder.jobs.train.mounts[0]",
    "tool.envbuilder.jobs.train.mounts[1].read-only",
    "tool.envbuilder.jobs.train.shm-size",
    "tool.envbuilder.jobs.train.gpus",
    "tool.envbuilder.jobs.train.env.FLAG",
    "tool.envbuilder.jobs.train.metrics[0]",
    "tool.envbuilder.jobs.train.metrics[1]",
    "tool.envbuilder.jobs.train.metrics[2]",
    "tool.envbuilder.jobs.train.resume-arg",
    "tool.envbuilder.jobs.train.timeout",
    "tool.envbuilder.jobs.train.artifacts",
    "tool.envbuilder.jobs.train.shm_sise",
    "tool.envbuilder.jobs.export.needs[0]",
    "tool.envbuilder.jobs.export.exports[0].path",
    "tool.envbuilder.jobs.export.exports[0].inputs.x.shape[1]",
]


def test_every_error_is_reported_with_its_field_path(tmp_path):
    write(tmp_path, BAD)
    raw = read_raw_config(tmp_path)
    before = json.dumps(raw.table, sort_keys=True)
    issues = check_config(raw)
    assert json.dumps(raw.table, sort_keys=True) == before  # validation mutates nothing
    paths = [issue.path for issue in issues]
    for path in EXPECTED_PATHS:
        assert path in paths, (path, paths)
    assert any(p.startswith('tool.envbuilder.jobs.train.env."BAD NAME"') for p in paths), paths
    with pytest.raises(EnvbuilderError) as caught:
        load_config(tmp_path)
    error = caught.value
    assert error.code == "config-invalid"
    lines = error.message.splitlines()
    assert lines[0] == f"{len(issues)} problems in [tool.envbuilder] in pyproject.toml:"
    assert len(lines) == len(issues) + 1
    assert "shm-size: invalid size '2x'" in error.message
    assert "unknown job 'trian' (did you mean 'train'?)" in error.message
    assert "unknown key 'shm_sise' (did you mean 'shm-size'?)" in error.message
    assert "envbuilder schema" in error.hint
    assert {e["path"] for e in error.context["errors"]} == set(paths)


@pytest.mark.parametrize(("table", "path", "words"), [
    ({"jobs": {"a": {"command": "x", "needs": ["b"]}, "b": {"command": "y", "needs": ["a"]}}}, "jobs.a.needs", "cycle"),
    ({"jobs": {"a": {"command": "x", "needs": ["a"]}}}, "jobs.a.needs[0]", "itself"),
    ({"jobs": {"a": {"command": "x"}, "b": {"command": "y", "needs": ["a"]}}, "pipeline": ["b", "a"]},
     "pipeline[0]", "runs later"),
    ({"jobs": {"a": {"command": "x", "mounts": ["d:/data", "e:/data"]}}}, "jobs.a.mounts", "two mounts"),
    ({"jobs": {"a": {"command": "x", "mounts": ["d:/"]}}}, "jobs.a.mounts[0].target", "root"),
    ({"jobs": {"a": {"command": "x", "workdir": "rel"}}}, "jobs.a.workdir", "absolute"),
    ({"jobs": {"a": {"command": "x", "gpus": 0}}}, "jobs.a.gpus", "GPU count"),
    ({"jobs": {"a": {"command": "x", "gpus": True}}}, "jobs.a.gpus", "GPU count"),
    ({"jobs": {"a": {"command": "x 'unclosed"}}}, "jobs.a.command", "cannot split"),
    ({"jobs": {"bad name": {"command": "x"}}}, 'jobs."bad name"', "pattern"),
    ({"jobs": {"a": {}}}, "jobs.a.command", "required"),
    ({"jobs": {"a": {"command": "x", "exports": [{"path": "/abs.onnx"}]}}}, "jobs.a.exports[0].path", "relative"),
    ({"jobs": {"a": {"command": "x", "exports": [{"path": "m.onnx", "inputs": {"x": {"shape": [1],
                                                                              "dtype": "complex"}}}]}}},
     "jobs.a.exports[0].inputs.x.dtype", "float32"),
    ({"jobs": "nope"}, "jobs", "dictionary"),
    ({"python": "3.12", "colour": "blue"}, "colour", "unknown key"),
])
def test_invalid_values_are_refused_with_their_path(table, path, words):
    issues = check_config(RawConfig("envbuilder.toml", "", table))
    assert any(issue.path == path and words in issue.message for issue in issues), issues
    with pytest.raises(EnvbuilderError) as caught:
        _typed(table)
    assert caught.value.code == "config-invalid" and path in caught.value.message


@pytest.mark.parametrize("size", ["2g", "512m", "1.5G", "64mb", "1gib", 1024])
def test_docker_sizes(size):
    assert _typed({"jobs": {"a": {"command": "x", "shm-size": size}}}).jobs["a"].shm_size


def test_windows_source_in_mount_string():
    mount = _typed({"jobs": {"a": {"command": "x", "mounts": ["C:/data/set:/data:rw"]}}}).jobs["a"].mounts[0]
    assert (mount.source, mount.target, mount.read_only) == ("C:/data/set", "/data", False)


def test_direct_construction_cannot_bypass_reference_checks():
    with pytest.raises(Exception):
        ProjectConfig(jobs={"a": Job(command=("x",), needs=("ghost",))})


def test_bad_toml_is_config_invalid(tmp_path):
    write(tmp_path, "[tool.envbuilder\n")
    with pytest.raises(EnvbuilderError) as caught:
        load_config(tmp_path)
    assert caught.value.code == "config-invalid" and "not valid TOML" in caught.value.message


def test_issue_text():
    assert str(ConfigIssue(path="jobs.a", message="bad")) == "jobs.a: bad"


def test_json_schema_describes_the_job_fields():
    schema = config_json_schema()
    text = json.dumps(schema)  # it is JSON
    assert json.loads(text) == schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"system-packages", "jobs", "pipeline", "defaults"}
    job = schema["$defs"]["Job"]
    assert {"command", "description", "mounts", "artifacts", "env", "gpus", "shm-size", "workdir", "metrics",
            "resume-arg", "needs", "timeout", "exports"} <= set(job["properties"])
    for name, prop in job["properties"].items():
        assert prop.get("title") and prop.get("description"), name
    assert {"reference-inputs", "reference-outputs", "rtol", "atol", "path", "inputs"} <= set(
        schema["$defs"]["Export"]["properties"])
    # the shorthand forms validate too: a command string, a mount string
    assert {"type": "string"} in job["properties"]["command"]["anyOf"]


_SCHEMA_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def _check_schema_node(node, defs, where="#"):
    """A structural check of the JSON Schema keywords pydantic emits (jsonschema, when installed, does more)."""
    assert isinstance(node, dict), where
    if "$ref" in node:
        assert node["$ref"].startswith("#/$defs/") and node["$ref"].split("/")[-1] in defs, where
    types = node.get("type", [])
    for kind in [types] if isinstance(types, str) else types:
        assert kind in _SCHEMA_TYPES, where
    if "enum" in node:
        assert isinstance(node["enum"], list) and node["enum"], where
    if "pattern" in node:
        re.compile(node["pattern"])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for index, child in enumerate(node.get(key, [])):
            _check_schema_node(child, defs, f"{where}/{key}/{index}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _check_schema_node(node[key], defs, f"{where}/{key}")
    for name, child in node.get("properties", {}).items():
        _check_schema_node(child, defs, f"{where}/properties/{name}")
    for name in node.get("required", []):
        assert name in node["properties"], where


def test_json_schema_is_a_valid_schema(tmp_path):
    schema = config_json_schema()
    defs = schema.get("$defs", {})
    _check_schema_node(schema, defs)
    for name, node in defs.items():
        _check_schema_node(node, defs, f"#/$defs/{name}")
    try:
        import jsonschema
    except ImportError:
        return  # the structural check above stands in for it
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(read_raw_config(write(tmp_path, GOOD)).table, schema)
