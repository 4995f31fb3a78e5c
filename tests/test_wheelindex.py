"""Resolving against what a torch index really serves: filename parsing, page parsing, snapshots, plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError, ResolveConflict
from envbuilder.resolve.matrix import load_matrix
from envbuilder.resolve.plan import ResolveRequest, Target
from envbuilder.project.spec import ProjectSource, ProjectSpec
from envbuilder.resolve.resolver import resolve
from envbuilder.index.snapshot import snapshot_index, snapshot_wheelhouse
from envbuilder.resolve.served import IndexSnapshot, WheelFile, parse_simple_page, parse_wheel_filename, platform_matches
from envbuilder.index.server import IndexServer

MATRIX = load_matrix()
CPU_WHEELS = Path("/opt/wheels")
PYPI_MORE = Path("/opt/pypi-more")
LINUX_CPU = Target(os="linux", arch="x86_64")
H100 = Target(os="linux", arch="x86_64", gpu="nvidia", cuda_driver="580.95.05", compute_capabilities=("9.0",))


def project(*reqs: str) -> ProjectSpec:
    return ProjectSpec(source=ProjectSource(path="."), requirements=reqs)


def wheel(name: str, version: str, py: str = "3.11", plat: str = "manylinux_2_28_x86_64") -> WheelFile:
    return WheelFile(name=name, version=version, pythons=(py,), platforms=(plat,))


@pytest.mark.parametrize("filename,expected", [
    ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", ("torch", "2.13.0+cpu", ("3.11",), ("manylinux_2_28_x86_64",))),
    ("torch-2.7.0%2Bcu128-cp312-cp312-win_amd64.whl".replace("%2B", "+"), ("torch", "2.7.0+cu128", ("3.12",), ("win_amd64",))),
    ("torchvision-0.29.1-cp311-cp311-manylinux_2_28_x86_64.manylinux2014_x86_64.whl",
     ("torchvision", "0.29.1", ("3.11",), ("manylinux2014_x86_64", "manylinux_2_28_x86_64"))),
    ("onnx-1.17.0-cp39-abi3-macosx_12_0_universal2.whl", ("onnx", "1.17.0", (), ("macosx_12_0_universal2",))),
])
def test_wheel_filenames(filename, expected):
    w = parse_wheel_filename(filename)
    assert (w.name, w.version, w.pythons, w.platforms) == expected


def test_not_a_wheel():
    assert parse_wheel_filename("torch-2.0.0.tar.gz") is None


def test_simple_pages_html_and_json():
    html = '<a href="../../files/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl#sha256=ab">x</a><a href="x.tar.gz">s</a>'
    assert parse_simple_page(html) == ["torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl"]
    js = '{"files": [{"filename": "torch-2.13.0+cpu-cp311-cp311-win_amd64.whl"}, {"filename": "torch-2.13.0.tar.gz"}]}'
    assert parse_simple_page(js) == ["torch-2.13.0+cpu-cp311-cp311-win_amd64.whl"]


@pytest.mark.parametrize("plats,os,arch,ok", [
    (("manylinux_2_28_x86_64",), "linux", "x86_64", True),
    (("manylinux_2_28_aarch64",), "linux", "x86_64", False),
    (("manylinux_2_28_aarch64",), "linux", "aarch64", True),
    (("win_amd64",), "windows", "x86_64", True),
    (("macosx_11_0_arm64",), "macos", "arm64", True),
    (("macosx_11_0_arm64",), "linux", "aarch64", False),
    (("any",), "windows", "x86_64", True),
])
def test_platform_tags(plats, os, arch, ok):
    assert platform_matches(plats, os, arch) is ok


def test_a_mirror_with_only_2_13_cpu_gives_that_build_and_its_python():
    snap = IndexSnapshot(url="http://mirror/simple", listed=("torch",), wheels=(wheel("torch", "2.13.0+cpu"),))
    plan = resolve(project("torch>=2.1"), LINUX_CPU, MATRIX, available=snap)
    assert (plan.torch.local, plan.python) == ("2.13.0+cpu", "3.11")
    assert any("http://mirror/simple serves" in r for r in plan.reasons)


def test_a_plain_version_wheel_is_the_build_pypi_serves():
    snap = IndexSnapshot(url="http://mirror/simple", listed=("torch", "torchvision"),
                         wheels=(wheel("torch", "2.14.1"), wheel("torchvision", "0.29.1")))
    plan = resolve(project("torch", "torchvision"), H100, MATRIX, available=snap)
    assert plan.torch.local == "2.14.1" and plan.torch.flavor == "cu130"
    assert plan.companions["torchvision"].version == "0.29.1"


def test_companions_missing_from_a_listed_page_rule_the_release_out():
    snap = IndexSnapshot(url="http://m/simple", listed=("torch", "torchvision"),
                         wheels=(wheel("torch", "2.13.0+cpu"), wheel("torch", "2.12.1+cpu"), wheel("torchvision", "0.27.1+cpu")))
    plan = resolve(project("torch", "torchvision"), LINUX_CPU, MATRIX, available=snap)
    assert plan.torch.local == "2.12.1+cpu"


def test_nothing_that_fits_is_a_conflict_naming_the_index():
    snap = IndexSnapshot(url="http://m/simple", listed=("torch",), wheels=(wheel("torch", "2.13.0+cpu"),))
    with pytest.raises(ResolveConflict) as info:
        resolve(project("torch<2.5"), LINUX_CPU, MATRIX, available=snap)
    assert info.value.code == "index-has-no-fit" and "http://m/simple" in info.value.message


def test_python_pin_against_the_served_tags():
    snap = IndexSnapshot(url="http://m/simple", listed=("torch",), wheels=(wheel("torch", "2.13.0+cpu"),))
    with pytest.raises(ResolveConflict):
        resolve(project("torch"), LINUX_CPU, MATRIX, ResolveRequest(python="3.12"), available=snap)


@pytest.mark.skipif(not CPU_WHEELS.is_dir(), reason="needs /opt/wheels (this machine's CPU torch wheel)")
def test_snapshot_over_http_from_a_loopback_index():
    with IndexServer(wheels=[CPU_WHEELS]) as index:
        snap = snapshot_index(index.url)
    assert "torch" in snap.listed and "torchvision" not in snap.listed
    assert any(w.version == "2.13.0+cpu" for w in snap.files("torch"))
    plan = resolve(project("torch"), LINUX_CPU, MATRIX, available=snap)
    assert plan.torch.local == "2.13.0+cpu"


@pytest.mark.skipif(not PYPI_MORE.is_dir(), reason="needs /opt/pypi-more")
def test_snapshot_of_an_existing_simple_tree():
    with IndexServer(root=PYPI_MORE) as index:
        snap = snapshot_index(index.url)
    assert {"torch", "torchvision"} <= set(snap.listed)
    plan = resolve(project("torch", "torchvision"), H100, MATRIX, available=snap)
    assert (plan.torch.local, plan.torch.cuda, plan.python) == ("2.14.1", "13.0", "3.11")


def test_unreachable_index_is_a_clear_error():
    with pytest.raises(EnvbuilderError) as info:
        snapshot_index("http://127.0.0.1:9/simple", timeout=2)
    assert info.value.code == "index-unreachable"


def test_wheelhouse_snapshot(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (tmp_path / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    snap = snapshot_wheelhouse([tmp_path, "https://wheels.example/"])
    assert snap.listed == ("torch",) and snap.files("torch")[0].version == "2.13.0+cpu" and snap.find_links
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").unlink()
    assert snapshot_wheelhouse([tmp_path]) is None  # no torch there: torch comes from its index, unconstrained


def test_a_find_links_wheelhouse_limits_the_plan_and_refuses_a_python_it_lacks(tmp_path):
    """--find-links DIR with torch wheels is read before resolving, like a --torch-index-url mirror: the plan picks
    the Python and build the folder holds, keeps the flavour's index, and a Python it lacks is refused at once."""
    from envbuilder.api import plan_project
    from envbuilder.render.network import NetworkOptions
    from envbuilder.resolve.plan import TargetFlags
    from envbuilder.settings import Settings

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp310-cp310-manylinux_2_28_x86_64.whl").write_bytes(b"")
    source = tmp_path / "proj"
    source.mkdir()
    (source / "requirements.txt").write_text("torch\n")
    flags = TargetFlags(os="linux", arch="x86_64", gpu="none")
    network = NetworkOptions(find_links=(str(wheels),))
    settings = Settings(tmp_path / "home")
    _, plan = plan_project(str(source), flags=flags, request=ResolveRequest(offline=True), network=network,
                           settings=settings)
    assert (plan.torch.local, plan.python) == ("2.13.0+cpu", "3.10")
    assert plan.torch.index_url == MATRIX.index_url("cpu")  # a folder is no index
    with pytest.raises(ResolveConflict) as err:
        plan_project(str(source), flags=flags, request=ResolveRequest(offline=True, python="3.12"), network=network,
                     settings=settings)
    assert err.value.code == "index-has-no-fit" and "Python 3.10 only" in err.value.message
    assert str(wheels) in err.value.message
