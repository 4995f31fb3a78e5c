"""The packaged compatibility matrix: it loads, every table has provenance, and its facts are self-consistent.

Most tests are parametrized from the matrix itself, so adding a release or a CUDA toolkit (one data edit)
is checked without touching this file.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from packaging.version import Version

from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.matrix import PACKAGED_MATRIX, flavor_cuda, flavor_kind, flavor_rocm, load_matrix, parse_matrix

MATRIX = load_matrix(PACKAGED_MATRIX)
RAW = json.loads(PACKAGED_MATRIX.read_text())
TABLES = ("torch", "cuda", "cuda_minor_compat", "rocm", "onnxruntime", "indexes", "gpus")
CC_RE = re.compile(r"^\d{1,2}\.\d$")
PY_RE = re.compile(r"^3\.\d{1,2}$")
DRIVER_RE = re.compile(r"^\d{3}(\.\d{1,3}){0,2}$")
ALL_BUILDS = [(r.version, b) for r in MATRIX.torch for b in r.builds]
CUDA_BUILDS = [(v, b) for v, b in ALL_BUILDS if flavor_kind(b.flavor) == "cuda"]


def _cc(value: str) -> Version:
    return Version(value)


def _bid(item) -> str:
    version, build = item
    return f"{version}-{build.os}-{build.arch}-{build.flavor}"


def test_packaged_matrix_loads_and_is_not_empty():
    assert MATRIX.schema_version == 2
    assert len(MATRIX.torch) >= 30
    assert MATRIX.release("2.14.1") is not None
    assert MATRIX.release("1.13.0") is not None


def test_the_top_level_symlink_points_at_the_packaged_file():
    top = PACKAGED_MATRIX.parents[2] / "compatibility.json"
    if top.exists():
        assert top.resolve() == PACKAGED_MATRIX.resolve()


@pytest.mark.parametrize("table", TABLES)
def test_every_table_has_provenance(table):
    prov = MATRIX.sources[table]
    assert prov.source.strip()
    assert prov.url and prov.url.startswith("https://")
    assert re.match(r"^\d{4}-\d{2}-\d{2}$", prov.retrieved)


def test_every_patch_release_from_1_13_is_listed():
    expected = {
        "1.13.0", "1.13.1", "2.0.0", "2.0.1", "2.1.0", "2.1.1", "2.1.2", "2.2.0", "2.2.1", "2.2.2", "2.3.0", "2.3.1",
        "2.4.0", "2.4.1", "2.5.0", "2.5.1", "2.6.0", "2.7.0", "2.7.1", "2.8.0", "2.9.0", "2.9.1", "2.14.1",
    }
    assert expected <= {r.version for r in MATRIX.torch}


@pytest.mark.parametrize("release", MATRIX.torch, ids=lambda r: r.version)
def test_release_dates_follow_versions(release):
    older = [r for r in MATRIX.torch if Version(r.version) < Version(release.version)]
    assert all(r.released <= release.released for r in older)


@pytest.mark.parametrize("release", MATRIX.torch, ids=lambda r: r.version)
def test_python_lists_are_sane(release):
    for versions in [release.python] + [b.python for b in release.builds if b.python is not None]:
        assert versions, "an empty Python list"
        assert all(PY_RE.match(v) for v in versions), versions
        assert list(versions) == sorted(versions, key=Version), "Python versions must be sorted"
        assert len(set(versions)) == len(versions)
        minors = [Version(v).minor for v in versions]
        assert minors == list(range(minors[0], minors[-1] + 1)), "Python versions must be contiguous"
        assert 7 <= minors[0] and minors[-1] <= 15


@pytest.mark.parametrize("release", MATRIX.torch, ids=lambda r: r.version)
def test_companion_pairing_follows_the_rule(release):
    """torchvision 0.(minor+15).patch and torchaudio major.minor.patch for torch 2.x; 1.13 -> 0.14/0.13; the
    newest listed companion is the one the rule names, and any older one is yanked on PyPI.

    2.0.x is the known exception: torchvision 0.15.1/0.15.2 and torchaudio 2.0.1/2.0.2 went with 2.0.0/2.0.1,
    and torch 2.0.0 also had the yanked 0.15.0 / 2.0.0.
    """
    v = Version(release.version)
    if v.major == 1:
        tv, ta = f"0.14.{v.micro}", f"0.13.{v.micro}"
    elif (v.major, v.minor) == (2, 0):
        tv, ta = f"0.15.{v.micro + 1}", f"2.0.{v.micro + 1}"
    else:
        tv, ta = f"0.{v.minor + 15}.{v.micro}", f"{v.major}.{v.minor}.{v.micro}"
    for name, newest in (("torchvision", tv), ("torchaudio", ta)):
        built = release.companions(name)
        assert not built or built[-1] == newest, (name, built)
        assert all(MATRIX.is_yanked(name, older) for older in built[:-1]), (name, built)


def test_torch_2_0_0_lists_its_yanked_first_companions():
    release = MATRIX.release("2.0.0")
    assert release.torchvision == ("0.15.0", "0.15.1") and release.torchaudio == ("2.0.0", "2.0.1")
    assert MATRIX.is_yanked("torchvision", "0.15.0") and not MATRIX.is_yanked("torchvision", "0.15.1")
    assert MATRIX.is_yanked("torchvision", "0.15.0+cu118")  # the flavour's local tag does not hide it


def test_companions_are_known_for_every_release_up_to_2_11():
    for release in MATRIX.torch:
        if Version(release.version) < Version("2.12"):
            assert release.torchvision and release.torchaudio, release.version


@pytest.mark.parametrize("release", MATRIX.torch, ids=lambda r: r.version)
def test_every_release_has_cpu_builds_and_no_duplicates(release):
    keys = [(b.os, b.arch, b.flavor) for b in release.builds]
    assert len(keys) == len(set(keys))
    assert ("linux", "x86_64", "cpu") in keys
    assert any(b.os == "macos" and b.arch == "arm64" and b.flavor == "default" for b in release.builds)


@pytest.mark.parametrize("release", MATRIX.torch, ids=lambda r: r.version)
def test_platform_rules(release):
    for b in release.builds:
        kind = flavor_kind(b.flavor)
        if b.os == "macos":
            assert kind == "default"
            assert b.arch == "arm64" or Version(release.version) < Version("2.3"), "macOS x86_64 wheels stopped after 2.2"
        else:
            assert kind != "default"
        if kind == "rocm":
            assert (b.os, b.arch) == ("linux", "x86_64")
        if b.os == "windows":
            assert b.arch == "x86_64"


def test_macos_x86_64_stops_after_2_2():
    has_x86 = {r.version for r in MATRIX.torch if any(b.os == "macos" and b.arch == "x86_64" for b in r.builds)}
    assert "2.2.2" in has_x86 and "2.3.0" not in has_x86


@pytest.mark.parametrize("item", CUDA_BUILDS, ids=_bid)
def test_cuda_builds_list_sorted_valid_capabilities(item):
    _, build = item
    assert build.sm
    assert all(CC_RE.match(cc) for cc in build.sm), build.sm
    assert list(build.sm) == sorted(build.sm, key=_cc)
    assert len(set(build.sm)) == len(build.sm)
    if build.ptx is not None:
        assert CC_RE.match(build.ptx) and build.ptx in build.sm


@pytest.mark.parametrize("item", CUDA_BUILDS, ids=_bid)
def test_cuda_13_builds_carry_no_pre_turing_sass(item):
    """CUDA 13 removed offline compilation for Maxwell, Pascal and Volta."""
    _, build = item
    if flavor_cuda(build.flavor).startswith("13."):
        assert _cc(build.sm[0]) >= Version("7.5")


@pytest.mark.parametrize("flavor", sorted({b.flavor for _, b in CUDA_BUILDS}))
def test_every_cuda_flavour_has_a_driver_row_and_a_minor_compat_row(flavor):
    cuda = flavor_cuda(flavor)
    row = MATRIX.cuda_toolkit(cuda)
    assert row is not None
    assert DRIVER_RE.match(row.min_driver_linux) and DRIVER_RE.match(row.min_driver_windows or "")
    floor = MATRIX.minor_compat(int(cuda.split(".")[0]))
    assert floor is not None
    assert Version(floor.min_driver_linux) <= Version(row.min_driver_linux)


def test_driver_floors_rise_with_the_toolkit():
    rows = sorted(MATRIX.cuda, key=lambda c: Version(c.version))
    linux = [Version(c.min_driver_linux) for c in rows]
    assert linux == sorted(linux)


def test_known_driver_floors():
    assert MATRIX.cuda_toolkit("12.8").min_driver_linux == "570.26"
    assert MATRIX.cuda_toolkit("11.8").min_driver_windows == "520.06"
    assert MATRIX.minor_compat(12).min_driver_linux == "525.60.13"


def test_first_hand_cu130_wheel_facts():
    """Read from torch-2.14.1 (PyPI, +cu130): cuobjdump lists SASS for these and no PTX."""
    build = next(b for b in MATRIX.release("2.14.1").builds if (b.os, b.arch, b.flavor) == ("linux", "x86_64", "cu130"))
    assert build.sm == ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0")
    assert build.ptx is None
    assert MATRIX.release("2.14.1").torchvision == ("0.29.1",)


@pytest.mark.parametrize("flavor", sorted({b.flavor for _, b in ALL_BUILDS if flavor_kind(b.flavor) == "rocm"}))
def test_every_rocm_flavour_has_gfx_targets(flavor):
    from envbuilder.resolve.matrix import TorchBuild

    gfx = MATRIX.rocm_gfx(TorchBuild(os="linux", arch="x86_64", flavor=flavor))
    assert gfx and all(re.match(r"^gfx[0-9a-f]{3,4}$", g) for g in gfx)
    assert flavor_rocm(flavor)


def test_indexes_cover_every_flavour():
    flavours = {b.flavor for _, b in ALL_BUILDS}
    assert MATRIX.indexes["default"] == "https://pypi.org/simple"
    for f in flavours - {"default"}:
        assert MATRIX.indexes[f] == f"https://download.pytorch.org/whl/{f}"


@pytest.mark.parametrize("row", MATRIX.onnxruntime, ids=lambda r: r.version)
def test_onnxruntime_rows(row):
    assert all(PY_RE.match(v) for v in row.python)
    if row.gpu_cuda_major is not None:
        assert row.gpu_cuda_major in (11, 12, 13)
        assert row.cudnn_major in (8, 9)


@pytest.mark.parametrize(
    "name,cc",
    [
        ("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA GH200 480GB", "9.0"), ("NVIDIA A100-SXM4-40GB", "8.0"),
        ("NVIDIA A10G", "8.6"), ("NVIDIA A10", "8.6"), ("NVIDIA L40S", "8.9"), ("NVIDIA L4", "8.9"),
        ("Tesla T4", "7.5"), ("Tesla V100-SXM2-16GB", "7.0"), ("Tesla P100-PCIE-16GB", "6.0"),
        ("NVIDIA GeForce GTX 1080 Ti", "6.1"), ("Tesla K80", "3.7"), ("NVIDIA GeForce RTX 4090", "8.9"),
        ("NVIDIA GeForce RTX 3090", "8.6"), ("NVIDIA GeForce RTX 5090", "12.0"), ("NVIDIA B200", "10.0"),
        ("NVIDIA GB200", "10.0"), ("NVIDIA B300", "10.3"), ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "12.0"),
        ("NVIDIA RTX 6000 Ada Generation", "8.9"), ("NVIDIA RTX A6000", "8.6"), ("Quadro RTX 6000", "7.5"),
        ("NVIDIA GB10", "12.1"), ("Orin (nvgpu)", "8.7"), ("NVIDIA Thor", "11.0"), ("NVIDIA H200", "9.0"),
    ],
)
def test_gpu_patterns(name, cc):
    assert MATRIX.gpu_compute_capability(name) == cc


# --- malformed input is refused with a matrix-invalid error ---

def _broken(mutate) -> bytes:
    raw = copy.deepcopy(RAW)
    mutate(raw)
    return json.dumps(raw).encode()


def _build(raw, flavor):
    return next(b for r in raw["torch"] for b in r["builds"] if b["flavor"] == flavor)


@pytest.mark.parametrize(
    "data,fragment",
    [
        (b"{not json", "not valid JSON"),
        (_broken(lambda r: r.pop("cuda")), "cuda"),
        (_broken(lambda r: r["sources"].pop("rocm")), "provenance"),
        (_broken(lambda r: _build(r, "cu126").update(flavor="cuda126")), "unknown flavour"),
        (_broken(lambda r: _build(r, "cu126").pop("sm")), "compute capabilities"),
        (_broken(lambda r: _build(r, "cpu").update(sm=["8.0"])), "not a CUDA flavour"),
        (_broken(lambda r: r.update(schema_version=3)), "schema_version"),
        (_broken(lambda r: r["torch"][0].update(torchvision=["0.14.1", "0.14.0"])), "oldest first"),
        (_broken(lambda r: r["torch"][0].update(torchaudio=["not-a-version"])), "torchaudio"),
        (_broken(lambda r: r["sources"].pop("yanked")), "provenance"),
        (_broken(lambda r: r["torch"].append(copy.deepcopy(r["torch"][0]))), "listed twice"),
        (_broken(lambda r: r.update(cuda=[c for c in r["cuda"] if c["version"] != "12.6"])), "no row in 'cuda'"),
        (_broken(lambda r: r["torch"][0].update(surprise=1)), "surprise"),
    ],
)
def test_malformed_matrices_are_refused(data, fragment):
    with pytest.raises(EnvbuilderError) as info:
        parse_matrix(data, origin="bad.json")
    assert info.value.code == "matrix-invalid"
    assert fragment in str(info.value)


def test_a_schema_1_matrix_still_loads_with_one_companion_per_release():
    """An override installed by an older `compat update` holds strings (or null) where schema 2 holds lists."""
    raw = copy.deepcopy(RAW)
    raw["schema_version"] = 1
    raw.pop("yanked")
    raw["sources"].pop("yanked")
    for release in raw["torch"]:
        for name in ("torchvision", "torchaudio"):
            release[name] = release[name][-1] if release[name] else None
    old = parse_matrix(json.dumps(raw).encode())
    assert old.release("2.0.0").torchvision == ("0.15.1",)
    assert old.release("2.15.0").torchvision == ()
    assert not old.is_yanked("torchvision", "0.15.0")


@pytest.mark.parametrize("version", ["2.9.0", "2.9.1", "2.10.0", "2.11.0"])
def test_linux_cu129_builds_of_2_9_to_2_11(version):
    """Published on download.pytorch.org/whl/cu129 (see the torch table's notes), with 12.0 PTX like 2.8's."""
    build = next(b for b in MATRIX.release(version).builds if (b.os, b.arch, b.flavor) == ("linux", "x86_64", "cu129"))
    assert build.ptx == "12.0" and {"8.0", "9.0", "10.0", "12.0"} <= set(build.sm)


def test_check_matrix_tool_validates_the_packaged_file(tmp_path):
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "check_matrix.py"
    ok = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**RAW, "schema_version": 9}))
    refused = subprocess.run([sys.executable, str(tool), str(bad)], capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "schema_version" in refused.stderr
