"""A real BuildKit build through a mirror that requires Basic auth, the credentials given in --torch-index-url.

The mirror (support/auth_index.py) serves a stand-in torch wheel (a few KB, named like the CPU build), so the
build takes seconds once the base layers are cached. uv inside the build gets the credentials from the netrc
BuildKit secret only: the build log, the image's labels, its history and its files hold none of them.
"""

from __future__ import annotations

import json
import re

import pytest
from support.auth_index import AuthIndex, torch_stand_in
from support.fixtures import HOST_CA, run_in_image

from envbuilder.proc import run_command

pytestmark = pytest.mark.docker
PASSWORD = "bu1ld-Pa55-7f3a"


def test_a_build_installs_torch_from_an_authenticated_mirror_and_keeps_no_password(cli, base_image, docker_engine,
                                                                                   tmp_path):
    project = tmp_path / "authproj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "authproj"\nversion = "0"\ndependencies = ["torch==2.13.0"]\n')
    (project / ".env").write_text(f"TOKEN={PASSWORD}\n")  # left out of the context by default
    with AuthIndex([torch_stand_in(tmp_path / "wheels")], user="ci", password=PASSWORD) as index:
        result = cli("-v", "build", str(project), "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64",
                     "--python", "3.11", "--base-image", base_image, "--torch-index-url", index.secret_url,
                     "--network", "host", "--ca-cert", str(HOST_CA), "--json")
        refused, authorized, bare_url = list(index.refused), list(index.authorized), index.url
    assert result.exit_code == 0, result.stderr[-3000:]
    built = json.loads(result.stdout)
    assert any(path.startswith("/files/torch-2.13.0") for path in authorized), (authorized, refused)
    log = open(built["log"], encoding="utf-8").read()
    dockerfile = open(re.search(r"# envbuilder: Dockerfile (\S+), log", log).group(1), encoding="utf-8").read()
    assert "id=netrc" in dockerfile and bare_url in dockerfile
    history = run_command(["docker", "history", "--no-trunc", built["image"]], timeout=60).stdout
    labels = json.dumps(docker_engine.image_inspect(built["image"])["Config"]["Labels"])
    for text in (result.stdout, result.stderr, log, history, labels, dockerfile):
        assert PASSWORD not in text
    code, output = run_in_image(docker_engine, built["image"], [
        "sh", "-c", "python -c 'import torch; print(torch.__version__)' && ls -a /workspace/project"])
    assert code == 0, output
    assert "2.13.0+cpu" in output and ".env" not in output
    as_root = run_command(["docker", "run", "--rm", "--user", "0", built["image"], "ls", "-a", "/root"], timeout=60)
    assert as_root.ok and ".netrc" not in as_root.stdout  # a secret mount, in no layer
