"""Air-gap bundles without Docker: the image side is the shared FakeEngine, the wheels come from a real
`pip download` against a loopback index, and the tar, the manifest and every checksum are real.

The docker-marked twin (test_bundle_docker.py) does the same with a real engine and runs the loaded image
with the network set to none."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

from envbuilder.build.bundle import IMAGES, LOCK, MANIFEST, load_bundle, write_bundle
from envbuilder.build.image import BuiltImage
from envbuilder.build.wheelhouse import parse_image_report, pip_download_argv, platform_tags
from envbuilder.errors import EnvbuilderError
from envbuilder.index.server import IndexServer
from envbuilder.render import RenderOptions
from envbuilder.render.lock import read_lock

IMAGE = "envbuilder/tiny:0123456789abcdef"
BASE = "envbuilder/base-python:3.11-bookworm"


def make_wheel(folder: Path, name: str = "tinydep", version: str = "1.0") -> Path:
    """A real, installable pure-Python wheel (PEP 427): a module, METADATA, WHEEL and RECORD."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: envbuilder-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), text)  # the same bytes every time
    return wheel


def image_report(*dists: tuple[str, str, str, bool], python: str = "3.11") -> str:
    return json.dumps({"python": python, "machine": "x86_64", "libc": ["glibc", "2.36"], "dists": [list(d) for d in dists]})


TINY_IMAGE_DISTS = (("pip", "23.0.1", "pip", False), ("setuptools", "65.5.0", "pip", False),
                    ("tinydep", "1.0", "pip", False), ("tiny", "0", "uv", True))


@pytest.fixture
def engine(fake_engine) -> FakeEngine:
    """The shared FakeEngine, which is also the engine an in-process `envbuilder load` opens."""
    fake = fake_engine
    fake.add_image(BASE, "sha256:" + "b" * 64)
    fake.add_image(IMAGE, "sha256:" + "a" * 64, labels={"org.opencontainers.image.base.name": BASE})
    fake.script([image_report(*TINY_IMAGE_DISTS)], image=IMAGE)
    return fake


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    wheels = tmp_path_factory.mktemp("served")
    make_wheel(wheels)
    make_wheel(wheels, version="2.0")  # the newest: a fresh resolve would take it, the bundle must not
    with IndexServer([wheels]) as server:
        yield server


@pytest.fixture
def plan(tmp_path, cli):
    from envbuilder.api import plan_project
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags
    from envbuilder.settings import Settings

    project = tmp_path / "tiny"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "tiny"\nversion = "0"\ndependencies = ["tinydep"]\n')
    _, made = plan_project(str(project), flags=TargetFlags(os="linux", arch="x86_64", gpu="none"),
                           request=ResolveRequest(python="3.11", offline=True), settings=Settings(tmp_path / "home"))
    return made


def _bundle(engine, plan, index, out: Path, **kwargs) -> Path:
    built = BuiltImage(IMAGE, "sha256:" + "a" * 64, "f" * 16, "0123456789abcdef" * 4, True, None, 0.0)
    kwargs.setdefault("check_plan", False)  # the fake image holds tinydep, not the plan's torch
    # Both indexes on loopback: the plan's torch index (download.pytorch.org) is not reachable from here.
    options = RenderOptions(index_url=index.url, torch_index_url=index.url)
    written = write_bundle(built, plan, options, docker=engine, output=out, **kwargs)
    assert written.path == out.resolve()
    return out


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_a_bundle_holds_images_lock_wheels_and_a_manifest_of_them(engine, plan, index, tmp_path):
    out = _bundle(engine, plan, index, tmp_path / "tiny.tar")
    members = _members(out)
    assert list(members) == [IMAGES, LOCK, "wheels/tinydep-1.0-py3-none-any.whl", MANIFEST]
    assert ("save_images", (IMAGE, BASE)) in engine.calls  # one archive: shared layers stored once
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        lock = tar.extractfile(LOCK).read().decode()
        wheel = tar.extractfile("wheels/tinydep-1.0-py3-none-any.whl").read()
        for part in manifest["parts"]:
            data = tar.extractfile(part["path"]).read()
            assert hashlib.sha256(data).hexdigest() == part["sha256"] and len(data) == part["size"]
    assert [(i["ref"], i["role"]) for i in manifest["images"]] == [(IMAGE, "project"), (BASE, "base")]
    assert manifest["plan"]["project_name"] == "tiny" and manifest["python"] == "3.11"
    assert "manylinux_2_36_x86_64" in manifest["platform_tags"]
    # The lock pins what the image holds (1.0, not the index's newest 2.0), by the hash of the bundled wheel.
    assert [(p.name, p.version, p.hashes) for p in read_lock(lock)] == [
        ("tinydep", "1.0", (f"sha256:{hashlib.sha256(wheel).hexdigest()}",))]  # the venv's bootstrap and the project itself are not wheels


def test_load_verifies_then_loads_and_unpacks(engine, plan, index, tmp_path):
    out = _bundle(engine, plan, index, tmp_path / "tiny.tar")
    engine.images.clear()
    loaded = load_bundle(out, docker=engine)
    assert set(loaded.loaded) == {IMAGE, BASE} and engine.images[IMAGE]["Id"] == "sha256:" + "a" * 64
    assert loaded.into == tmp_path / "tiny-bundle"
    assert (loaded.into / LOCK).is_file() and (loaded.into / "wheels" / "tinydep-1.0-py3-none-any.whl").is_file()
    assert not (loaded.into / IMAGES).exists()  # the images are in the engine, not copied out again
    assert not any(p.name.startswith(".envbuilder-") for p in loaded.into.iterdir())
    assert load_bundle(out, docker=engine).into == loaded.into  # loading again replaces its own unpacked files
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "train.py").write_text("")
    with pytest.raises(EnvbuilderError) as caught:
        load_bundle(out, docker=engine, into=tmp_path / "project")
    assert caught.value.code == "bundle-output-invalid" and "other files" in caught.value.message


def _flip(path: Path, member: str, at: int = 0) -> None:
    offset = _members(path)[member].offset_data + at
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("member, at", [(IMAGES, 5), (LOCK, 3), ("wheels/tinydep-1.0-py3-none-any.whl", 40)])
def test_a_flipped_byte_anywhere_refuses_the_whole_bundle(engine, plan, index, tmp_path, cli, member, at):
    out = _bundle(engine, plan, index, tmp_path / "tiny.tar")
    _flip(out, member, at)
    engine.images.clear()
    engine.calls.clear()
    result = cli("load", str(out))
    assert result.exit_code == 1 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("envbuilder: bundle-tampered: ") and member in last
    assert "nothing was loaded" in result.stderr and "Traceback" not in result.stderr
    assert not any(call[0] == "load_images" for call in engine.calls) and not engine.images
    assert not (tmp_path / "tiny-bundle" / LOCK).exists()


def test_the_manifest_digest_pins_the_manifest_itself(engine, plan, index, tmp_path, cli):
    out = _bundle(engine, plan, index, tmp_path / "tiny.tar")
    with tarfile.open(out) as tar:
        digest = hashlib.sha256(tar.extractfile(MANIFEST).read()).hexdigest()
    wrong = cli("load", str(out), "--expect", "sha256:" + "0" * 64)
    assert wrong.exit_code == 1 and "bundle-digest-mismatch" in wrong.stderr
    # An edit inside the manifest that keeps it valid JSON is caught by the digest `bundle` printed.
    _flip(out, MANIFEST, _members(out)[MANIFEST].size // 2)
    edited = cli("load", str(out), "--expect", f"sha256:{digest}")
    assert edited.exit_code == 1 and ("bundle-digest-mismatch" in edited.stderr or "bundle-invalid" in edited.stderr)
    ok = cli("load", str(_bundle(engine, plan, index, tmp_path / "again.tar")), "--json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["manifest_sha256"].startswith("sha256:")


def test_a_truncated_or_padded_bundle_is_refused(engine, plan, index, tmp_path, cli):
    out = _bundle(engine, plan, index, tmp_path / "tiny.tar")
    data = out.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: _members(out)[MANIFEST].offset - 700])
    result = cli("load", str(cut))
    assert result.exit_code == 1 and "bundle-incomplete" in result.stderr
    extra = tmp_path / "extra.tar"
    extra.write_bytes(data)
    with tarfile.open(extra, "a") as tar:
        info = tarfile.TarInfo("wheels/evil-1.0-py3-none-any.whl")
        info.size = 3
        tar.addfile(info, __import__("io").BytesIO(b"abc"))
    result = cli("load", str(extra))
    assert result.exit_code == 1 and "bundle-tampered" in result.stderr and "not in its manifest" in result.stderr
    traversal = tmp_path / "traversal.tar"
    with tarfile.open(traversal, "w") as tar:
        info = tarfile.TarInfo("../../etc/x")
        info.size = 1
        tar.addfile(info, __import__("io").BytesIO(b"x"))
    result = cli("load", str(traversal))
    assert result.exit_code == 1 and "unexpected member" in result.stderr
    assert cli("load", str(tmp_path / "missing.tar")).exit_code == 2


def test_a_lock_is_checked_against_the_image_and_used_by_hash(engine, plan, index, tmp_path):
    wheel = make_wheel(tmp_path / "w", version="1.0")
    good = tmp_path / "good.lock"
    good.write_text(f"--index-url {index.url}\ntinydep==1.0 \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    out = _bundle(engine, plan, index, tmp_path / "locked.tar", lock=good)
    with tarfile.open(out) as tar:
        assert tar.extractfile(LOCK).read().decode() == good.read_text()
    stale = tmp_path / "stale.lock"
    stale.write_text(f"--index-url {index.url}\ntinydep==2.0 \\\n    --hash=sha256:{'0' * 64}\n")
    engine.script([image_report(*TINY_IMAGE_DISTS)], image=IMAGE)
    with pytest.raises(EnvbuilderError) as caught:
        _bundle(engine, plan, index, tmp_path / "stale.tar", lock=stale)
    assert caught.value.code == "bundle-lock-mismatch" and not (tmp_path / "stale.tar").exists()
    forged = tmp_path / "forged.lock"
    forged.write_text(f"--index-url {index.url}\ntinydep==1.0 \\\n    --hash=sha256:{'0' * 64}\n")
    with pytest.raises(EnvbuilderError) as caught:
        _bundle(engine, plan, index, tmp_path / "forged.tar", lock=forged)
    assert caught.value.code == "bundle-download-failed" and "HASH" in caught.value.message.upper()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".envbuilder-bundle-*"))


def test_the_plan_check_refuses_an_image_without_the_plans_torch(engine, plan, index, tmp_path):
    with pytest.raises(EnvbuilderError) as caught:
        _bundle(engine, plan, index, tmp_path / "x.tar", check_plan=True)
    assert caught.value.code == "lock-stale" and "torch" in caught.value.message


def test_image_report_leaves_out_the_bootstrap_and_the_project():
    report = parse_image_report(image_report(
        ("pip", "23.0.1", "pip", False), ("uv", "0.9.5", "pip", False), ("setuptools", "80.0", "uv", False),
        ("torch", "2.13.0+cpu", "uv", False), ("proj", "0", "uv", True), ("from-a-wheel-file", "1", "pip", False)))
    assert report.packages == (("from-a-wheel-file", "1"), ("setuptools", "80.0"), ("torch", "2.13.0+cpu"))
    assert report.installer == "0.9.5" and report.glibc == "2.36"


def test_platform_tags_cover_every_older_glibc_and_the_legacy_names():
    tags = platform_tags("aarch64", "2.28")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags and "manylinux_2_5_aarch64" in tags
    assert {"manylinux2014_aarch64", "manylinux2010_aarch64", "manylinux1_aarch64"} <= set(tags)
    assert "manylinux_2_29_aarch64" not in tags and tags[-1] == "linux_aarch64"
    assert platform_tags("x86_64", None) == ("linux_x86_64",)


def test_pip_download_is_binary_only_for_the_images_python(tmp_path):
    argv = pip_download_argv(tmp_path / "w", tmp_path / "r.txt", "3.12", ("manylinux_2_17_x86_64",), hashed=True,
                             ca_cert=Path("/ca.pem"), pip_python="/py")
    assert argv[:4] == ["/py", "-m", "pip", "download"]
    for flag in ("--isolated", "--no-deps", "--require-hashes"):
        assert flag in argv
    assert argv[argv.index("--only-binary") + 1] == ":all:" and argv[argv.index("--abi") + 1] == "cp312"
    assert argv[argv.index("--cert") + 1] == "/ca.pem" and argv[-2:] == ["-r", str(tmp_path / "r.txt")]


def test_members_with_long_names_and_huge_sizes_stay_readable(tmp_path):
    """Wheel names past tar's 100 characters (manylinux multi-tag names) and image archives past 8 GiB."""
    from envbuilder.build.bundle import _add_member, _header

    long_name = "wheels/markupsafe-3.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
    assert len(_header(long_name, 9 * 2**30)) == len(_header(long_name, 0)) > 512
    assert len(_header(IMAGES, 9 * 2**30)) == 512
    path = tmp_path / "t.tar"
    with open(path, "wb") as out:
        part = _add_member(out, long_name, [b"abc", b"def"], "wheel")
        _add_member(out, MANIFEST, [b"{}"], "manifest")
        out.write(b"\0" * 1024)
    assert part.size == 6 and part.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    with tarfile.open(path) as tar:
        assert tar.getnames() == [long_name, MANIFEST] and tar.extractfile(long_name).read() == b"abcdef"
