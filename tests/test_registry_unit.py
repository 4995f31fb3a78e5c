"""Registry logic against the FakeEngine: the key two machines share, reuse before build, push, the CLI's
options, login, `image inspect`'s fit check, and --platform. The real registry is in test_registry_docker.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.certs import pem_certificates
from support.fake_engine import FakeEngine
from test_build_unit import BUILD_LINES, make_plan

from envbuilder.build.image import build_image
from envbuilder.build.key import base_identity
from envbuilder.build.labels import image_fit, provenance_labels, target_labels
from envbuilder.build.registry import (
    RegistryOptions,
    check_repository,
    expand_image_ref,
    push_refs,
    trust_registry_ca,
)
from envbuilder.docker.buildkit import BuildCli, BuildRequest, build_argv, check_platform, parse_buildx_inspect
from envbuilder.errors import DockerError, EnvbuilderError, UsageError
from envbuilder.resolve.matrix import load_matrix
from envbuilder.resolve.plan import Target
from envbuilder.render import RenderOptions
from envbuilder.settings import Settings

BASE = "envbuilder/base-python:3.11-bookworm"
REPO = "127.0.0.1:5000/team/demo"


def engine(base_id: str = "sha256:base", digests: tuple[str, ...] = ()) -> FakeEngine:
    docker = FakeEngine(build_lines=[*BUILD_LINES, "#2 DONE 1.0s"])
    info = docker.add_image(BASE, base_id)
    if digests:
        info["RepoDigests"] = list(digests)
    return docker


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    return root


def build(project: Path, home: Path, docker: FakeEngine, **kwargs):
    options = kwargs.pop("options", RenderOptions(base_image=BASE))
    return build_image(make_plan(), options, project_dir=project, settings=Settings(home), docker=docker, **kwargs)


def test_two_machines_get_the_same_key_when_one_lacks_the_base(project, tmp_path):
    pulled = engine(digests=(f"{BASE.split(':')[0]}@sha256:{'a' * 64}",))
    fresh = FakeEngine(build_lines=list(BUILD_LINES))
    fresh.registry[BASE] = {"Id": "sha256:whatever", "Config": {"Labels": {}}}
    fresh.registry_digest = lambda ref: f"sha256:{'a' * 64}" if ref == BASE else None  # type: ignore[method-assign]
    a = build(project, tmp_path / "a", pulled)
    b = build(project, tmp_path / "b", fresh)
    assert a.build_key == b.build_key


def test_base_identity_prefers_a_pinned_or_pulled_digest_over_the_local_id():
    digest = "sha256:" + "b" * 64
    assert base_identity(f"nvidia/cuda:12@{digest}", None) == digest
    assert base_identity("nvidia/cuda:12", {"Id": "sha256:local", "RepoDigests": [f"nvidia/cuda@{digest}"]}) == digest
    assert base_identity("mine:1", {"Id": "sha256:local", "RepoDigests": []}) == "sha256:local"
    assert base_identity("nvidia/cuda:12", None, digest) == digest
    assert base_identity("nvidia/cuda:12", None, None) == ""


def test_a_base_pushed_under_another_name_keeps_its_image_id_as_identity():
    """A base made here and once pushed elsewhere (a test registry, a mirror) is known by its image id, as on a
    machine that loaded it: the other repository's digest would give the two machines different keys."""
    digest = "sha256:" + "b" * 64
    pushed_elsewhere = {"Id": "sha256:local", "RepoDigests": [f"127.0.0.1:5000/t/x@{digest}"]}
    loaded_copy = {"Id": "sha256:local", "RepoDigests": []}
    ref = "envbuilder/base-python:3.11-bookworm"
    assert base_identity(ref, pushed_elsewhere) == base_identity(ref, loaded_copy) == "sha256:local"


def test_a_ca_bundle_given_or_not_leaves_the_key_as_it_is(project, tmp_path):
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not ca.is_file():
        pytest.skip("needs the host CA bundle")
    docker = engine()
    without = build(project, tmp_path / "h", docker)
    with_ca = build(project, tmp_path / "h", docker, ca_cert=ca)
    assert with_ca.build_key == without.build_key and with_ca.cached


def test_push_builds_once_then_another_machine_reuses(project, tmp_path):
    registry = RegistryOptions(REPO, push=True, tags=("v1",))
    first = engine()
    built = build(project, tmp_path / "a", first, registry=registry)
    assert not built.cached and built.reused is None and len(first.builds) == 1
    assert built.pushed == (f"{REPO}:{built.build_key[:16]}", f"{REPO}:v1") and built.digest.startswith("sha256:")
    second = engine()
    second.registry = first.registry  # the same registry, seen from another machine
    reused = build(project, tmp_path / "b", second, registry=registry)
    assert reused.reused == f"{REPO}:{built.build_key[:16]}" and reused.cached and not second.builds
    assert reused.digest == built.digest and reused.image_id == built.image_id
    assert second.images[reused.image]["Id"] == built.image_id  # the local tags point at the pulled image
    assert ("push", f"{REPO}:v1") in second.calls  # the extra tag is pushed again; the content tag is not
    assert ("push", f"{REPO}:{built.build_key[:16]}") not in second.calls


def test_no_reuse_builds_even_when_the_registry_has_it(project, tmp_path):
    first = engine()
    build(project, tmp_path / "a", first, registry=RegistryOptions(REPO))
    second = engine()
    second.registry = first.registry
    again = build(project, tmp_path / "b", second, registry=RegistryOptions(REPO, reuse=False))
    assert not again.cached and len(second.builds) == 1


def test_the_registry_default_is_read_for_reuse_and_digests(project, tmp_path, monkeypatch):
    """`registry` is one of the layered defaults: the user config's [defaults], $ENVBUILDER_REGISTRY, shown by
    `config show`; a build reuses from it without pushing, and `run --image @sha256:` means a digest in it."""
    from envbuilder.api import effective_defaults
    from envbuilder.defaults import env_layer, machine_defaults, user_layer

    config = tmp_path / "config.toml"
    config.write_text(f'[defaults]\nregistry = "{REPO}/"\n')
    monkeypatch.setenv("ENVBUILDER_CONFIG", str(config))
    settings = Settings(tmp_path / "h")
    assert machine_defaults(settings.config_paths(), {}).value("registry") == REPO
    assert env_layer({"ENVBUILDER_REGISTRY": "ghcr.io/acme/x"}).settings["registry"].value == "ghcr.io/acme/x"
    shown = effective_defaults(None, [user_layer(settings.config_paths(), {})], settings=settings)
    assert shown.defaults.settings["registry"].origin == str(config)
    assert expand_image_ref("@sha256:" + "c" * 64, REPO) == f"{REPO}@sha256:{'c' * 64}"
    config.write_text('[defaults]\nregistry = "Not A Repo:tag"\n')
    with pytest.raises(UsageError, match="registry: must be REGISTRY/REPO") as err:
        user_layer(settings.config_paths(), {})
    assert err.value.code == "defaults-invalid"
    config.write_text(f'registry = "{REPO}"\n')  # the top level, where it is not read: say where it goes
    with pytest.raises(UsageError, match="top-level `registry`") as err:
        user_layer(settings.config_paths(), {})
    assert "[defaults]" in err.value.hint


def test_a_build_reuses_from_the_registry_default_without_pushing(project, tmp_path):
    from envbuilder.api import build_project
    from envbuilder.render.network import NetworkOptions
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags

    (project / "requirements.txt").write_text("torch\n")

    def made(docker: FakeEngine, home: str, **kwargs):
        docker.images[BASE]["Config"] = {"Labels": {"org.envbuilder.python": "3.11"}}
        return build_project(str(project), flags=TargetFlags(os="linux", arch="x86_64", gpu="none"),
                             request=ResolveRequest(offline=True), settings=Settings(tmp_path / home), engine=docker,
                             **kwargs)

    first = engine()
    pushed = made(first, "a", network=NetworkOptions(base_image=BASE), registry=RegistryOptions(REPO))
    second = engine()
    second.registry = first.registry
    reused = made(second, "b", network=NetworkOptions(base_image=BASE, registry=REPO))
    assert reused.image.reused == pushed.image.pushed[0] and not second.builds
    assert not any(call[0] == "push" for call in second.calls)  # the default is read for reuse only


def test_a_digest_with_no_registry_says_what_to_pass():
    with pytest.raises(UsageError, match="no registry holds it") as err:
        expand_image_ref("@sha256:" + "c" * 64, None)
    assert "REGISTRY/REPO@sha256" in err.value.hint


@pytest.mark.parametrize("bad", ["REG/Upper", "reg/repo:tag", "reg/repo@sha256:00", "", "a b/c"])
def test_push_targets_are_checked(bad):
    with pytest.raises(UsageError) as err:
        check_repository(bad)
    assert err.value.code == "bad-registry"


def test_push_refs_put_bare_tags_in_the_repository():
    refs = push_refs(RegistryOptions(REPO, tags=("v1", "other.io/x/y:z")), "ab" * 32)
    assert refs == (f"{REPO}:{'ab' * 8}", f"{REPO}:v1", "other.io/x/y:z")


def test_build_time_labels_leave_the_key_and_the_dockerfile_alone(project, tmp_path):
    from envbuilder.build.spec import BuildRequestOptions

    docker = engine()
    a = build(project, tmp_path / "h", docker, extra=BuildRequestOptions(labels=provenance_labels("https://u:tok@h/r.git", "abc")))
    b = build(project, tmp_path / "h2", engine(), extra=BuildRequestOptions(labels={"org.opencontainers.image.created": "x"}))
    assert a.build_key == b.build_key
    request = docker.builds[0]
    assert request.labels["org.opencontainers.image.source"] == "https://***@h/r.git"  # never the token
    assert request.labels["org.opencontainers.image.revision"] == "abc"
    assert "image.created" not in Path(request.dockerfile).read_text()


def test_cache_options_for_each_kind_of_client():
    request = BuildRequest(Path("/df"), Path("/ctx"), "t", cache_from=("r/x:cache",), cache_to="r/x:cache")
    builtin = build_argv(BuildCli("docker", "builtin", "20.10"), request)
    assert builtin[builtin.index("--cache-from") + 1] == "r/x:cache" and "BUILDKIT_INLINE_CACHE=1" in builtin
    assert "--cache-to" not in builtin
    docker_driver = build_argv(BuildCli("docker", "buildx", "27.0", "docker"), request)
    assert "type=inline" in docker_driver and "type=registry,ref=r/x:cache" in docker_driver
    container = build_argv(BuildCli("docker", "buildx", "27.0", "docker-container"), request)
    assert "type=registry,ref=r/x:cache,mode=max" in container


def test_the_engine_pushes_an_inline_cache_under_the_cache_ref(project, tmp_path):
    from envbuilder.build.spec import BuildRequestOptions

    docker = engine()
    build(project, tmp_path / "h", docker, extra=BuildRequestOptions(cache_to=f"{REPO}:buildcache"))
    assert f"{REPO}:buildcache" in docker.registry


def test_platform_the_builder_cannot_build_is_one_clear_error():
    with pytest.raises(DockerError) as err:
        check_platform(BuildCli("/usr/bin/docker", "builtin", "20.10.24"), "linux/s390x")
    assert err.value.code == "platform-unsupported" and "buildx" in err.value.message
    with pytest.raises(DockerError, match="builds for linux/amd64"):
        check_platform(BuildCli("docker", "buildx", "27", "docker", ("linux/amd64",)), "linux/s390x")
    check_platform(BuildCli("docker", "buildx", "27", "docker-container", ("linux/amd64", "linux/arm64")), "linux/arm64")
    assert parse_buildx_inspect("Name: x\nDriver: docker-container\nPlatforms: linux/amd64*, linux/arm64\n") == \
        ("docker-container", ("linux/amd64", "linux/arm64"))


def test_cli_platform_resolves_the_aarch64_plan_and_says_when_it_cannot_build(cli, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "requirements.txt").write_text("torch\n")
    result = cli("build", str(project), "--gpu", "none", "--platform", "linux/ppc", "--json")
    assert result.exit_code == 2 and "--platform linux/ppc" in result.stderr
    result = cli("build", str(project), "--gpu", "none", "--platform", "linux/arm64", "--target-arch", "x86_64")
    assert result.exit_code == 2 and "disagree" in result.stderr


def test_target_labels_name_the_kernels_of_the_torch_build():
    matrix = load_matrix()
    release = matrix.releases_newest_first[0]
    cuda = next(b for b in release.builds if b.sm and b.os == "linux" and b.arch == "x86_64")
    plan = make_plan()
    plan = plan.model_copy(update={"torch": plan.torch.model_copy(update={
        "version": release.version, "flavor": cuda.flavor, "local": f"{release.version}+{cuda.flavor}",
        "cuda": cuda.flavor[2:-1] + "." + cuda.flavor[-1]}),
        "target": Target(os="linux", arch="x86_64", gpu="nvidia")})
    labels = target_labels(plan, matrix)
    assert labels["org.envbuilder.cuda-sm"] == ",".join(cuda.sm) and labels["org.envbuilder.target"] == "linux/x86_64 nvidia"


def _image(flavor: str, version: str, sm: str = "", target: str = "linux/x86_64 nvidia") -> dict:
    labels = {"org.envbuilder.torch": f"{version}+{flavor}", "org.envbuilder.flavor": flavor,
              "org.envbuilder.target": target}
    if sm:
        labels["org.envbuilder.cuda-sm"] = sm
    return {"Id": "sha256:img", "Config": {"Labels": labels}}


def test_image_fit_uses_the_resolvers_hardware_rule():
    matrix = load_matrix()
    release = matrix.releases_newest_first[0]
    cuda = next(b for b in release.builds if b.sm and b.os == "linux" and b.arch == "x86_64")
    newest = cuda.sm[-1]
    host = Target(os="linux", arch="x86_64", gpu="nvidia", cuda_driver="999.0", compute_capabilities=(newest,))
    assert image_fit("i", _image(cuda.flavor, release.version), host, matrix).fits is True
    old_driver = host.model_copy(update={"cuda_driver": "400.0"})
    fit = image_fit("i", _image(cuda.flavor, release.version), old_driver, matrix)
    assert fit.fits is False and "driver" in fit.why
    arm = host.model_copy(update={"arch": "aarch64"})
    assert image_fit("i", _image(cuda.flavor, release.version), arm, matrix).fits is False
    cpu = image_fit("i", _image("cpu", release.version, target="linux/x86_64 none"), host, matrix)
    assert cpu.fits is True and "unused" in cpu.warnings[0]
    assert image_fit("i", {"Id": "x", "Config": {"Labels": {}}}, host, matrix).fits is None


def test_image_inspect_cli_with_a_fake_nvidia_smi(cli, fake_engine):
    """The host is detected from a fake nvidia-smi on PATH (as tests/test_host.py does); the image from a fake engine."""
    matrix = load_matrix()
    release = matrix.releases_newest_first[0]
    cuda = next(b for b in release.builds if b.sm and b.os == "linux" and b.arch == "x86_64")
    fake_engine.images["demo:1"] = _image(cuda.flavor, release.version, ",".join(cuda.sm))
    result = cli("image", "inspect", "demo:1", "--gpu", "nvidia", "--cuda-driver", "999.1",
                 "--compute-capability", cuda.sm[-1], "--target-os", "linux", "--target-arch", "x86_64", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["fits"] is True
    result = cli("image", "inspect", "demo:1", "--gpu", "nvidia", "--cuda-driver", "400.0",
                 "--compute-capability", cuda.sm[-1], "--target-os", "linux", "--target-arch", "x86_64")
    assert result.exit_code == 1 and "does not fit" in result.stdout
    result = cli("image", "inspect", "missing:1")
    assert result.exit_code == 4 and "image-not-found" in result.stderr


def test_login_reads_stdin_only_and_keeps_no_password(cli, fake_engine, monkeypatch):
    result = cli("login", "127.0.0.1:5000", "-u", "ci")
    assert result.exit_code == 2 and "--password-stdin" in result.stderr
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    result = cli("login", "127.0.0.1:5000", "-u", "ci", "--password-stdin")
    assert result.exit_code == 0 and "Login Succeeded" in result.stdout
    assert fake_engine.calls[-1] == ("login", "127.0.0.1:5000", "ci") and "s3cret" not in repr(fake_engine.calls)


def test_trusting_a_registry_ca_writes_certs_d(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(pem_certificates(1)[0])
    written = trust_registry_ca("reg.local:5000", ca, certs_d=tmp_path / "certs.d")
    assert written == tmp_path / "certs.d" / "reg.local:5000" / "ca.crt" and written.read_text() == ca.read_text()
    (tmp_path / "junk").write_text("no")
    with pytest.raises(EnvbuilderError, match="not a PEM"):
        trust_registry_ca("reg.local:5000", tmp_path / "junk", certs_d=tmp_path / "certs.d")


def test_image_inspect_against_a_host_detected_through_a_fake_nvidia_smi(tmp_path):
    """An H100 host (driver 570.124.06, sm 9.0) as nvidia-smi reports it: a CUDA image whose kernels include 9.0
    fits; a CPU-only host does not run it."""
    from test_host import fake_nvidia_smi, linux

    from envbuilder.api import inspect_image

    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-h100x8.csv", header="nvidia-smi-h100x8.txt")
    host = linux(tmp_path, bin_dir)
    assert host.gpus and host.gpus[0].compute_capability == "9.0"
    matrix = load_matrix()
    release = next(r for r in matrix.releases_newest_first
                   if any(b.flavor == "cu126" and b.os == "linux" and b.arch == "x86_64" for b in r.builds))
    docker = FakeEngine()
    docker.images["demo:cu126"] = _image("cu126", release.version)
    found = inspect_image("demo:cu126", settings=Settings(tmp_path / "h"), engine=docker, host=host)
    assert found.fits is True, found.why
    cpu_host = linux(tmp_path / "cpu", tmp_path / "cpu" / "bin")
    found = inspect_image("demo:cu126", settings=Settings(tmp_path / "h"), engine=docker, host=cpu_host)
    assert found.fits is False


def test_registry_failures_get_the_registrys_hint():
    from envbuilder.build.registry import find_in_registry
    from envbuilder.docker.diagnose import diagnose_docker

    docker = FakeEngine()

    def untrusted(ref):
        raise diagnose_docker("Get https://reg.example:5000/v2/: x509: certificate signed by unknown authority",
                              what="asking the registry")

    docker.registry_digest = untrusted  # type: ignore[method-assign]
    with pytest.raises(DockerError) as err:
        find_in_registry(docker, "reg.example:5000/x:1")
    assert err.value.code == "registry-untrusted" and "login reg.example:5000 --ca-cert" in err.value.hint

    def no_auth(ref):
        raise diagnose_docker('Head "https://reg.example/v2/x/manifests/1": no basic auth credentials', what="asking")

    docker.registry_digest = no_auth  # type: ignore[method-assign]
    with pytest.raises(DockerError) as err:
        find_in_registry(docker, "reg.example/x:1")
    assert err.value.code == "registry-auth" and "envbuilder login reg.example" in err.value.hint
