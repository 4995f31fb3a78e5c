"""Docker and BuildKit output is classified in one place, into codes with hints."""

from __future__ import annotations

import pytest

from envbuilder.docker.diagnose import diagnose_docker
from envbuilder.errors import EXIT_DOCKER

CASES = [
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", "docker-not-running"),
    ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock", "docker-permission"),
    ('could not select device driver "" with capabilities: [[gpu]]', "nvidia-runtime-missing"),
    ("pull access denied for python, repository does not exist or may require 'docker login'", "image-not-found"),
    ("#6 2.9 WARNING: Retrying after connection broken by 'ProxyError('Cannot connect to proxy.', ...)'\n"
     "#6 10.4 ERROR: No matching distribution found for uv==0.9.5", "proxy-unreachable"),
    ("#7 1.2 error: Request failed: invalid peer certificate: UnknownIssuer", "tls-untrusted"),
    ("#5 0.3 [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate", "tls-untrusted"),
    ("unknown flag: --mount", "buildkit-missing"),
    ("#7 1.6   × No solution found when resolving dependencies:\n#7 1.6   ╰─▶ Because torch==9.9 ...", "dependency-unresolvable"),
    ("write /var/lib/docker/tmp/x: no space left on device", "disk-full"),
    ("something nobody has seen before\nthe last line says why", "docker-failed"),
]


@pytest.mark.parametrize("output,code", CASES)
def test_docker_output_is_classified(output, code):
    error = diagnose_docker(output, what="docker build")
    assert error.code == code
    assert error.exit_code == EXIT_DOCKER
    assert error.hint and "\n" not in error.message


def test_the_message_quotes_the_line_that_matched():
    error = diagnose_docker("#1 ok\n#2 ERROR: pull access denied for x\n#3 more", what="docker build")
    assert error.message == "docker build failed: #2 ERROR: pull access denied for x"
