"""A failed build names its cause: logs of real builds that failed on this machine (tests/data/build-failures/,
made by pointing envbuilder builds at a dead port, a 404 index, a dead proxy, an unresolvable host, the
intercepting proxy without its CA, a base image with another Python, a mirror without the plan's cpXY, and no
registry) are read into typed errors that name the host, the package and a hint. Also the resolver's refusal,
before building, of a mirror whose torch wheels are all for other Pythons.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

from envbuilder.build.failure import (
    BuildFacts,
    explain_build_failure,
    failed_step,
    local_base_hint,
    plan_python_of,
)
from envbuilder.build.image import build_image
from envbuilder.errors import DockerError, ResolveConflict
from envbuilder.imagelayout import LABEL_BASE, LABEL_PYTHON
from envbuilder.project.spec import ProjectSource, ProjectSpec
from envbuilder.render import RenderOptions
from envbuilder.resolve.matrix import load_matrix
from envbuilder.resolve.plan import Plan, ResolveRequest, Target, TorchChoice
from envbuilder.resolve.resolver import resolve
from envbuilder.resolve.served import IndexSnapshot, WheelFile
from envbuilder.settings import Settings

FAILURES = Path(__file__).parent / "data" / "build-failures"
BASE = "envbuilder/base-python:3.11-bookworm"
DEAD_PROXY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
ENGINE_SAID = DockerError("docker-failed", "docker build failed: executor failed running [...]", "rerun with -v")


def lines(name: str) -> list[str]:
    return (FAILURES / f"{name}.log").read_text(encoding="utf-8").splitlines()


# (captured log, what the build was given, code, words the message must have, words the hint must have)
CASES = [
    ("pip-connection-refused", {}, "download-failed",
     ["uv", "127.0.0.1:1", "connection refused"], ["nothing listens at 127.0.0.1:1", "--network host"]),
    ("uv-connection-refused", {}, "download-failed",
     ["torch", "127.0.0.1:1", "connection refused"], ["envbuilder index serve"]),
    ("pip-dns", {}, "download-failed",
     ["uv", "no-such-host.invalid", "does not resolve", "Name or service not known"], ["check the host name"]),
    ("uv-dns", {}, "download-failed", ["torch", "no-such-host.invalid", "does not resolve"], ["check the host name"]),
    ("uv-pytorch-unreachable", {}, "download-failed",
     ["torch", "download.pytorch.org", "does not resolve"], ["--torch-index-url", "envbuilder index serve"]),
    ("pip-404", {}, "package-not-found", ["uv==0.9.5", "http://127.0.0.1:43453/simple"], ["--index-url"]),
    ("uv-404", {}, "package-not-found",
     ["torch", "http://127.0.0.1:41699/simple", "http://127.0.0.1:46785/simple"], ["mirrors this package"]),
    ("pip-http-index-ignored", {}, "index-insecure", ["no-such-host.invalid", "plain http"], ["https"]),
    ("pip-tls-untrusted", {}, "tls-untrusted",
     ["uv", "pypi.org", "self-signed certificate in certificate chain"], ["--ca-cert", "--host-ca"]),
    ("uv-tls-untrusted", {}, "tls-untrusted", ["torch", "pypi.org", "UnknownIssuer"], ["--ca-cert"]),
    ("uv-tls-untrusted", {"ca_cert": True}, "tls-untrusted", ["torch", "pypi.org"], ["the CA bundle given"]),
    ("pip-proxy-dead", {"proxies": DEAD_PROXY}, "proxy-unreachable",
     ["uv", "http://127.0.0.1:9", "cannot connect to proxy"], ["--https-proxy", "--no-proxy"]),
    # uv only says "connection refused" for the URL: the proxies the build was given say whose connection it was.
    ("uv-proxy-dead", {"proxies": DEAD_PROXY}, "proxy-unreachable",
     ["torch", "http://127.0.0.1:9", "connection refused", "localhost:46785"], ["--no-proxy"]),
    ("uv-proxy-dead-loopback", {"proxies": DEAD_PROXY}, "proxy-unreachable",
     ["torch", "http://127.0.0.1:9", "127.0.0.1:41975"], ["--https-proxy"]),
    ("uv-proxy-dead-loopback", {"proxies": {**DEAD_PROXY, "NO_PROXY": "127.0.0.1,localhost"}}, "download-failed",
     ["torch", "127.0.0.1:41975", "connection refused"], ["nothing listens"]),
    ("uv-no-python-wheel", {}, "no-wheel-for-python",
     ["torch 2.13.0+cpu", "http://127.0.0.1:37989/simple", "Python 3.12 only", "needs Python 3.11"], ["cp311"]),
    ("base-python-mismatch", {"base_image": BASE}, "base-python-mismatch",
     [BASE, "has Python 3.11", "plan is for Python 3.12"], ["--python 3.11", "--base-image"]),
    ("registry-unreachable", {"plan_python": "3.11", "local_bases": [(BASE, "3.11")]}, "registry-unreachable",
     ["python:3.11-slim-bookworm", "registry-1.docker.io does not resolve"], [f"--base-image {BASE} (Python 3.11)"]),
    ("registry-unreachable", {}, "registry-unreachable", ["python:3.11-slim-bookworm"], ["envbuilder base bootstrap"]),
]


@pytest.mark.parametrize("log, facts, code, message, hint", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_captured_failure_names_its_cause(log, facts, code, message, hint):
    error = explain_build_failure(lines(log), ENGINE_SAID, BuildFacts(**facts))
    assert error.code == code, str(error)
    assert isinstance(error, DockerError)  # a build failure exits 4, whatever its cause
    for word in message:
        assert word in error.message, (word, error.message)
    for word in hint:
        assert word in (error.hint or ""), (word, error.hint)
    assert "executor failed running" not in str(error) and "RUN" not in error.message


def test_every_captured_log_is_in_the_table():
    assert {p.stem for p in FAILURES.glob("*.log")} == {case[0] for case in CASES}


def test_the_failed_step_is_the_one_with_the_error_line():
    step = failed_step(lines("uv-no-python-wheel"))
    assert step.stage == "torch" and "uv pip install" in step.command
    assert step.output[0] == "Using Python 3.11.2 environment at: /opt/venv"  # the timestamp is gone
    assert "cp312" in step.text and step.error.startswith("executor failed running")
    base = failed_step(lines("registry-unreachable"))
    assert base.stage == "internal" and base.command == "load metadata for docker.io/library/python:3.11-slim-bookworm"


def test_a_log_that_does_not_say_keeps_the_engines_diagnosis():
    assert explain_build_failure(["#1 [base 1/1] FROM x", "#1 DONE 0.1s"], ENGINE_SAID) is ENGINE_SAID
    odd = ["#5 [torch 1/1] RUN make", "#5 0.1 make: *** No rule to make target", "#5 ERROR: executor failed running [make]"]
    assert explain_build_failure(odd, ENGINE_SAID) is ENGINE_SAID


def test_buildx_error_lines_are_read_too():
    # buildx words the step's end differently from the 20.10 client; the step's own output is the same.
    log = [line.replace("ERROR: executor failed running [", 'ERROR: process "') for line in lines("uv-dns")]
    assert explain_build_failure(log, ENGINE_SAID).code == "download-failed"


def test_credentials_in_a_failed_url_are_not_repeated():
    log = [line.replace("http://no-such-host.invalid", "http://user:s3cret@no-such-host.invalid") for line in lines("uv-dns")]
    error = explain_build_failure(log, ENGINE_SAID)
    assert "s3cret" not in str(error) and "s3cret" not in str(error.context)


def test_local_base_hint_prefers_the_plans_python():
    bases = [("envbuilder/base-python:3.13-trixie", "3.13"), (BASE, "3.11")]
    assert local_base_hint(bases, "3.11").index(BASE) < local_base_hint(bases, "3.11").index("3.13-trixie")
    assert "the plan then uses its Python" in local_base_hint(bases, "3.12")
    assert "envbuilder base bootstrap" in local_base_hint((), "3.11")


def test_the_plans_python_is_read_from_a_rendered_dockerfile():
    assert plan_python_of('LABEL org.envbuilder.torch="2.13.0+cpu" \\\n    org.envbuilder.python="3.12" \\') == "3.12"
    assert plan_python_of("FROM scratch\n") is None


# --- through build_image, at the Docker boundary ----------------------------------------------------------
def _plan() -> Plan:
    return Plan(status="ok", python="3.11", project_name="failproj", target=Target(os="linux", arch="x86_64"),
                torch=TorchChoice(version="2.13.0", flavor="cpu", local="2.13.0+cpu",
                                  index_url="https://download.pytorch.org/whl/cpu"))


def _failing_build(tmp_path, log: str, options: RenderOptions, engine: FakeEngine | None = None):
    engine = engine or FakeEngine()
    engine.add_image(BASE, "sha256:base", labels={LABEL_BASE: "debootstrap-bookworm", LABEL_PYTHON: "3.11"})
    engine.build_lines = lines(log)
    engine.build_error = DockerError("docker-failed", "docker build failed: executor failed running [...]")
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    (project / "train.py").write_text("print(1)\n")
    with pytest.raises(DockerError) as caught:
        build_image(_plan(), options, project_dir=project, settings=Settings(tmp_path / "home"), docker=engine)
    return caught.value


def test_build_image_raises_the_cause_and_keeps_the_log(tmp_path):
    error = _failing_build(tmp_path, "uv-dns", RenderOptions(base_image=BASE))
    assert error.code == "download-failed" and "no-such-host.invalid" in error.message
    log = Path(error.context["log"])
    assert log.is_file() and "# envbuilder: failed: download-failed: could not download torch" in log.read_text()
    assert str(log) in error.hint


def test_a_base_that_cannot_be_pulled_names_the_local_bases(tmp_path):
    engine = FakeEngine()
    # Built FROM the base, so it inherits the base's labels, but it is a project image, not a base.
    engine.add_image("0-derived/app:latest", "sha256:derived", layers=4,
                     labels={LABEL_BASE: "debootstrap-bookworm", LABEL_PYTHON: "3.11"})
    error = _failing_build(tmp_path, "registry-unreachable", RenderOptions(), engine)
    assert error.code == "registry-unreachable"
    assert f"--base-image {BASE} (Python 3.11)" in error.hint and "plan's Python" in error.hint
    assert "derived" not in error.hint


# --- before building: a mirror whose torch wheels are all for other Pythons ----------------------------------
def _mirror(*pythons: str) -> IndexSnapshot:
    wheels = tuple(WheelFile(name="torch", version="2.13.0+cpu", pythons=(py,), platforms=("manylinux_2_28_x86_64",))
                   for py in pythons)
    return IndexSnapshot(url="http://mirror.example/simple", listed=("torch",), wheels=wheels)


def test_a_mirror_without_the_plans_python_is_refused_with_the_pythons_it_has():
    project = ProjectSpec(source=ProjectSource(path="."), requirements=("torch==2.13.0",))
    with pytest.raises(ResolveConflict) as caught:
        resolve(project, Target(os="linux", arch="x86_64"), load_matrix(), ResolveRequest(python="3.11"),
                _mirror("3.12", "3.13"))
    error = caught.value
    assert error.code == "index-has-no-fit" and error.exit_code == 3
    assert "http://mirror.example/simple serves torch for Python 3.12, 3.13 only" in error.message
    assert "needs Python 3.11" in error.message
    assert "cp311" in error.hint and "--python 3.13" in error.hint
    assert error.context["mirror_pythons"] == ["3.12", "3.13"]


def test_a_mirror_with_the_plans_python_resolves():
    project = ProjectSpec(source=ProjectSource(path="."), requirements=("torch==2.13.0",))
    plan = resolve(project, Target(os="linux", arch="x86_64"), load_matrix(), ResolveRequest(), _mirror("3.12"))
    assert plan.python == "3.12"
