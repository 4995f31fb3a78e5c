"""The resolver over table-driven hardware x constraint cases, checked against the packaged matrix."""

from __future__ import annotations

import pytest
from packaging.version import Version

from envbuilder.errors import EnvbuilderError, ResolveConflict
from envbuilder.host.types import GpuInfo, HostInfo
from envbuilder.resolve.candidates import hardware_fit, sass_fit
from envbuilder.resolve.matrix import TorchBuild, flavor_cuda, flavor_kind, load_matrix
from envbuilder.resolve.plan import ResolveRequest, Target, TargetFlags
from envbuilder.project.spec import IndexDecl, ProjectSource, ProjectSpec
from envbuilder.resolve.resolver import resolve
from envbuilder.resolve.target import target_for

MATRIX = load_matrix()
LINUX = dict(os="linux", arch="x86_64")


def project(*reqs: str, requires_python: str | None = None, optional=None, indexes=()) -> ProjectSpec:
    return ProjectSpec(source=ProjectSource(path="."), formats=("pep621",), requirements=reqs, requires_python=requires_python,
                       optional=optional or {}, indexes=tuple(indexes))


def nvidia(driver: str, *ccs: str, os: str = "linux") -> Target:
    return Target(os=os, arch="x86_64", gpu="nvidia", cuda_driver=driver, compute_capabilities=ccs)


def build_of(plan):
    release = MATRIX.release(plan.torch.version)
    return next(b for b in release.builds if b.flavor == plan.torch.flavor and b.os == plan.target.os and b.arch == plan.target.arch)


def newest_release_with(pred) -> str:
    for rel in MATRIX.releases_newest_first:
        if any(pred(b) for b in rel.builds):
            return rel.version
    raise AssertionError("no release matches")


def has_sass(build, cc: str) -> bool:
    major, minor = cc.split(".")
    return any(s.split(".")[0] == major and int(s.split(".")[1]) <= int(minor) for s in build.sm)


# --- plain hardware cases -------------------------------------------------------------------------

def test_cpu_only_linux_picks_newest_cpu_build():
    plan = resolve(project("torch>=2.1"), Target(**LINUX), MATRIX)
    assert plan.status == "ok"
    assert plan.torch.flavor == "cpu"
    assert plan.torch.local == f"{plan.torch.version}+cpu"
    assert plan.torch.version == newest_release_with(lambda b: b.os == "linux" and b.arch == "x86_64" and b.flavor == "cpu")
    assert plan.torch.index_url.endswith("/cpu")


def test_h100_on_a_570_driver_gets_the_highest_cuda_that_driver_runs():
    plan = resolve(project("torch"), nvidia("570.86.10", "9.0"), MATRIX)
    assert plan.status == "ok"
    assert flavor_kind(plan.torch.flavor) == "cuda"
    floor = MATRIX.cuda_toolkit(plan.torch.cuda).min_driver_linux
    assert Version(floor) <= Version("570.86.10")
    assert Version(plan.torch.cuda) <= Version("12.8")  # 12.9 needs 575+, 13.0 needs 580+
    assert has_sass(build_of(plan), "9.0")


def test_h100_with_torch_below_2_gets_the_nearest_release_that_runs_and_says_so():
    plan = resolve(project("torch<2.0"), nvidia("570.86.10", "9.0"), MATRIX)
    assert plan.status == "potential-incompatibility"
    assert plan.torch.version.startswith("2.0.")
    assert any("torch<2.0" in w for w in map(str, plan.warnings))
    assert has_sass(build_of(plan), "9.0")


def test_blackwell_with_torch_below_2_7_moves_to_the_first_cu128_release():
    plan = resolve(project("torch<2.7"), nvidia("570.86.10", "12.0"), MATRIX)
    assert plan.status == "potential-incompatibility"
    assert plan.torch.version == "2.7.0"
    assert plan.torch.flavor == "cu128"


def test_blackwell_never_runs_a_cu124_build_through_ptx():
    plan = resolve(project("torch"), nvidia("575.57.08", "12.0"), MATRIX)
    assert Version(plan.torch.cuda) >= Version("12.8")
    assert has_sass(build_of(plan), "12.0")


def test_blackwell_on_a_driver_older_than_the_gpu_falls_back_to_cpu_with_the_driver_to_install():
    plan = resolve(project("torch"), nvidia("550.54.14", "12.0"), MATRIX)
    assert plan.status == "cpu-fallback"
    assert plan.torch.flavor == "cpu"
    assert any("driver to >= 57" in w for w in map(str, plan.warnings)), plan.warnings


@pytest.mark.parametrize("cc", ["6.0", "6.1", "7.0"])
def test_pascal_and_volta_on_new_drivers_get_a_build_that_still_carries_their_kernels(cc):
    plan = resolve(project("torch"), nvidia("580.95.05", cc), MATRIX)
    assert plan.status == "ok"
    assert has_sass(build_of(plan), cc), (plan.torch.local, build_of(plan).sm)
    newest = newest_release_with(lambda b: b.os == "linux" and b.arch == "x86_64" and flavor_kind(b.flavor) == "cuda" and has_sass(b, cc))
    assert plan.torch.version == newest


def test_old_driver_uses_minor_version_compatibility_and_warns_about_ptx_and_triton():
    plan = resolve(project("torch"), nvidia("470.82.01", "8.6"), MATRIX)
    assert plan.status == "minor-version-compat"
    assert plan.torch.cuda.startswith("11.")
    assert any("PTX" in w and "Triton" in w for w in map(str, plan.warnings))


def test_driver_too_old_for_any_cuda_falls_back_to_cpu():
    plan = resolve(project("torch"), nvidia("418.40", "7.5"), MATRIX)
    assert plan.status == "cpu-fallback"
    assert plan.torch.flavor == "cpu"
    assert any("update the NVIDIA driver to >=" in w for w in map(str, plan.warnings))


def test_explicit_minor_compat_prefers_the_newest_torch():
    strict = resolve(project("torch"), nvidia("550.54.14", "9.0"), MATRIX, ResolveRequest(cuda_compat="strict"))
    minor = resolve(project("torch"), nvidia("550.54.14", "9.0"), MATRIX, ResolveRequest(cuda_compat="minor"))
    assert Version(minor.torch.version) >= Version(strict.torch.version)
    assert strict.status == "ok"


def test_mi300x_gets_a_rocm_build_listing_gfx942():
    plan = resolve(project("torch"), Target(**LINUX, gpu="amd", gpu_archs=("gfx942",)), MATRIX)
    assert plan.status == "ok"
    assert flavor_kind(plan.torch.flavor) == "rocm"
    assert "gfx942" in MATRIX.rocm_gfx(build_of(plan))


def test_unknown_amd_arch_falls_back_to_cpu():
    plan = resolve(project("torch"), Target(**LINUX, gpu="amd", gpu_archs=("gfx803",)), MATRIX)
    assert plan.status == "cpu-fallback"


def test_apple_silicon_gets_the_default_pypi_wheel():
    plan = resolve(project("torch", "torchaudio"), Target(os="macos", arch="arm64", gpu="apple"), MATRIX)
    assert plan.torch.flavor == "default"
    assert plan.torch.local == plan.torch.version
    assert plan.companions["torchaudio"].version == MATRIX.release(plan.torch.version).torchaudio[-1]


def test_windows_uses_windows_driver_floors():
    plan = resolve(project("torch"), nvidia("560.94", "8.6", os="windows"), MATRIX)
    assert plan.target.os == "windows"
    floor = MATRIX.cuda_toolkit(plan.torch.cuda).min_driver_windows
    assert Version(floor) <= Version("560.94")


def test_linux_aarch64_cpu():
    plan = resolve(project("torch"), Target(os="linux", arch="aarch64"), MATRIX)
    assert plan.torch.flavor == "cpu"
    assert plan.target.arch == "aarch64"


# --- software constraints ---------------------------------------------------------------------------

def test_companions_are_paired_with_the_chosen_torch():
    plan = resolve(project("torch>=2.4,<2.6", "torchvision", "torchaudio"), nvidia("570.86.10", "8.0"), MATRIX)
    release = MATRIX.release(plan.torch.version)
    assert plan.torch.version.startswith("2.5.")
    assert plan.companions["torchvision"].version == f"{release.torchvision[-1]}+{plan.torch.flavor}"
    assert plan.companions["torchaudio"].version == f"{release.torchaudio[-1]}+{plan.torch.flavor}"


def test_torchvision_bound_limits_torch_through_the_pairing_table():
    plan = resolve(project("torch", "torchvision<0.20"), Target(**LINUX), MATRIX)
    assert Version(plan.torch.version) < Version("2.5")
    assert plan.companions["torchvision"].version.startswith("0.19.")


def test_python_is_the_highest_every_choice_allows():
    plan = resolve(project("torch==2.4.1"), Target(**LINUX), MATRIX)
    assert plan.python == max(MATRIX.release("2.4.1").python, key=Version)
    plan = resolve(project("torch==2.4.1", requires_python="<3.11"), Target(**LINUX), MATRIX)
    assert plan.python == "3.10"


def test_python_pin():
    plan = resolve(project("torch"), Target(**LINUX), MATRIX, ResolveRequest(python="3.11"))
    assert plan.python == "3.11"
    assert "3.11" in MATRIX.release(plan.torch.version).python


def test_declared_pytorch_index_restricts_the_flavour():
    idx = IndexDecl(url="https://download.pytorch.org/whl/cu121", kind="extra-index-url", origin="requirements.txt")
    plan = resolve(project("torch", indexes=[idx]), nvidia("570.86.10", "8.6"), MATRIX)
    assert plan.torch.flavor == "cu121"
    assert plan.torch.version == newest_release_with(lambda b: b.flavor == "cu121" and b.os == "linux")
    assert any("cu121" in r for r in plan.reasons)


def test_uv_source_markers_are_evaluated_for_the_target_not_the_host():
    indexes = [
        IndexDecl(url="https://download.pytorch.org/whl/cu128", kind="uv-index", name="cu128", packages=("torch",),
                  marker="sys_platform == 'linux'", explicit=True),
        IndexDecl(url="https://download.pytorch.org/whl/cpu", kind="uv-index", name="cpu", packages=("torch",),
                  marker="sys_platform != 'linux'", explicit=True),
    ]
    linux = resolve(project("torch", indexes=indexes), nvidia("570.86.10", "9.0"), MATRIX)
    assert linux.torch.flavor == "cu128"
    windows_cpu = resolve(project("torch", indexes=indexes), Target(os="windows", arch="x86_64"), MATRIX)
    assert windows_cpu.torch.flavor == "cpu"


def test_local_version_pin_fixes_version_and_flavour():
    plan = resolve(project("torch==2.7.0+cu128"), nvidia("570.86.10", "9.0"), MATRIX)
    assert plan.torch.local == "2.7.0+cu128"


def test_direct_url_fixes_version_flavour_and_python():
    url = "https://download.pytorch.org/whl/cu128/torch-2.7.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"
    plan = resolve(project(f"torch @ {url}"), nvidia("570.86.10", "9.0"), MATRIX)
    assert (plan.torch.local, plan.python) == ("2.7.0+cu128", "3.11")


def test_extras_add_companions_only_when_selected():
    spec = project("torch", optional={"onnx": ("onnxruntime>=1.17",)})
    assert "onnxruntime" not in resolve(spec, Target(**LINUX), MATRIX).companions
    plan = resolve(spec, Target(**LINUX), MATRIX, ResolveRequest(extras=("onnx",)))
    assert "onnxruntime" in plan.companions


def test_onnxruntime_becomes_the_gpu_build_matching_torchs_cuda_major():
    plan = resolve(project("torch", "onnxruntime"), nvidia("570.86.10", "9.0"), MATRIX)
    ort = plan.companions["onnxruntime-gpu"]
    row = next(o for o in MATRIX.onnxruntime if o.version == ort.version)
    assert row.gpu_cuda_major == int(plan.torch.cuda.split(".")[0])


def test_other_dependencies_pass_through_with_markers_evaluated():
    plan = resolve(project("torch", "numpy>=1.26", "pywin32; sys_platform == 'win32'"), Target(**LINUX), MATRIX)
    assert plan.dependencies == ("numpy>=1.26",)


# --- conflicts and bad input ----------------------------------------------------------------------

def test_requires_python_against_torch_bounds_is_a_conflict_naming_both():
    with pytest.raises(ResolveConflict) as info:
        resolve(project("torch<2.5", requires_python=">=3.13"), Target(**LINUX), MATRIX)
    assert info.value.exit_code == 3
    assert "requires-python" in info.value.message and "torch<2.5" in info.value.message


def test_torchvision_pairing_conflict():
    with pytest.raises(ResolveConflict) as info:
        resolve(project("torch>=2.5", "torchvision<0.16"), Target(**LINUX), MATRIX)
    assert "torchvision" in info.value.message


def test_torch_range_with_no_release_is_a_conflict():
    with pytest.raises(ResolveConflict, match="matches no release"):
        resolve(project("torch<1.0"), Target(**LINUX), MATRIX)


@pytest.mark.parametrize("flags,code", [
    (TargetFlags(compute_capability=("4.2",)), "unknown-compute-capability"),
    (TargetFlags(cuda_driver="latest"), "target-invalid"),
    (TargetFlags(gpu_arch=("navi31",)), "target-invalid"),
    (TargetFlags(os="macos", gpu="nvidia"), "target-invalid"),
])
def test_bad_target_flags_are_refused(flags, code):
    with pytest.raises(EnvbuilderError) as info:
        target_for(None, flags, MATRIX)
    assert info.value.code == code


# --- targets from detection and flags ----------------------------------------------------------------

H100_HOST = HostInfo(os="linux", arch="x86_64", gpu_vendor="nvidia", nvidia_driver="570.86.10",
                     gpus=(GpuInfo(index=0, vendor="nvidia", name="NVIDIA H100 80GB HBM3", compute_capability="9.0"),))


def test_detected_host_becomes_the_target():
    target = target_for(H100_HOST, TargetFlags(), MATRIX)
    assert (target.gpu, target.cuda_driver, target.compute_capabilities, target.source) == ("nvidia", "570.86.10", ("9.0",), "detected")


def test_flags_replace_detection_field_by_field():
    target = target_for(H100_HOST, TargetFlags(cuda_driver="535.104.05"), MATRIX)
    assert target.cuda_driver == "535.104.05" and target.compute_capabilities == ("9.0",) and target.source == "mixed"
    cpu = target_for(H100_HOST, TargetFlags(gpu="none"), MATRIX)
    assert cpu.gpu == "none" and cpu.cuda_driver is None


def test_gpu_name_maps_to_compute_capability_when_the_driver_is_too_old_to_say():
    host = H100_HOST.model_copy(update={"gpus": (GpuInfo(index=0, vendor="nvidia", name="Tesla V100-SXM2-16GB"),)})
    assert target_for(host, TargetFlags(), MATRIX).compute_capabilities == ("7.0",)


def test_declared_cloud_target_on_a_cpu_machine():
    cpu_host = HostInfo(os="linux", arch="x86_64")
    target = target_for(cpu_host, TargetFlags(gpu="nvidia", cuda_driver="570.86", compute_capability=("9.0",)), MATRIX)
    assert target.gpu == "nvidia" and target.source == "declared"
    assert flavor_cuda(resolve(project("torch"), target, MATRIX).torch.flavor)


def test_constraint_files_bound_torch():
    spec = project("torch").model_copy(update={"constraints": ("torch<2.6",)})
    plan = resolve(spec, Target(**LINUX), MATRIX)
    assert Version(plan.torch.version) < Version("2.6")


# --- invariants, parametrized from the matrix ---------------------------------------------------------

DRIVERS = sorted({c.min_driver_linux for c in MATRIX.cuda} | {"450.80.02", "470.82.01", "535.104.05", "999.0"}, key=Version)


@pytest.mark.parametrize("cc", [c.version for c in MATRIX.compute_capabilities])
@pytest.mark.parametrize("driver", DRIVERS)
def test_every_gpu_generation_on_every_driver_gets_a_build_that_runs(cc, driver):
    plan = resolve(project("torch"), nvidia(driver, cc), MATRIX)
    if plan.status == "cpu-fallback":
        assert plan.torch.flavor == "cpu"
        assert any("driver" in w or "kernels" in w for w in map(str, plan.warnings)), plan.warnings
        return
    build = build_of(plan)
    toolkit = MATRIX.cuda_toolkit(plan.torch.cuda)
    generation = MATRIX.compute_capability(cc)
    assert Version(plan.torch.cuda) >= Version(generation.min_cuda)
    if plan.status == "ok":
        assert Version(driver) >= Version(toolkit.min_driver_linux)
        assert has_sass(build, cc) or (build.ptx and Version(build.ptx) <= Version(cc) and any("PTX" in w for w in map(str, plan.warnings)))
    else:
        assert plan.status == "minor-version-compat"
        floor = MATRIX.minor_compat(int(plan.torch.cuda.split(".")[0])).min_driver_linux
        assert Version(driver) >= Version(floor) and has_sass(build, cc)


@pytest.mark.parametrize("version", [r.version for r in MATRIX.torch])
@pytest.mark.parametrize("cc", ["7.5", "9.0", "12.0"])
def test_an_exact_torch_pin_is_kept_or_the_violation_is_named(version, cc):
    plan = resolve(project(f"torch=={version}"), nvidia("999.0", cc), MATRIX)
    if plan.torch.version == version:
        assert plan.status == "ok"
        assert has_sass(build_of(plan), cc) or any("PTX" in w for w in map(str, plan.warnings))
    else:
        assert plan.status == "potential-incompatibility"
        assert any(f"torch=={version}" in w for w in map(str, plan.warnings))
        assert has_sass(build_of(plan), cc)


def test_minor_compat_reason_names_the_floor_it_relies_on():
    plan = resolve(project("torch"), nvidia("470.82.01", "8.6"), MATRIX)
    torch_reason = next(r for r in plan.reasons if r.startswith("torch "))
    assert "through minor-version compatibility" in torch_reason
    assert MATRIX.minor_compat(11).min_driver_linux in torch_reason


def test_an_nvidia_target_that_cannot_get_onnxruntime_gpu_is_warned():
    plan = resolve(project("torch", "onnxruntime"), nvidia("470.82.01", "8.6"), MATRIX)
    if "onnxruntime" in plan.companions:
        assert any("CPU runtime" in w for w in map(str, plan.warnings))
    else:
        assert "onnxruntime-gpu" in plan.companions


# --- kernels and the CUDA rule, unit by unit --------------------------------------------------------------------

PTX_ONLY_FOR_HOPPER = TorchBuild(os="linux", arch="x86_64", flavor="cu128", sm=("8.0",), ptx="8.0")


def test_sass_for_an_earlier_minor_runs_whatever_toolkit_built_it():
    cu117 = next(b for b in MATRIX.release("1.13.1").builds if (b.os, b.flavor) == ("linux", "cu117"))
    ok, warnings = sass_fit(cu117, nvidia("535.104.05", "8.9"), jit_allowed=False, matrix=MATRIX)
    assert ok and not warnings  # sm_86 SASS on an sm_89 GPU: no JIT, and CUDA 11.7 needs not know Ada
    ok, why = sass_fit(cu117, nvidia("535.104.05", "9.0"), jit_allowed=True, matrix=MATRIX)
    assert not ok and "Hopper needs CUDA >= 11.8" in why[0]  # another major: only PTX could serve, and 11.7 is too old


@pytest.mark.parametrize("driver,compat,ok,words", [
    ("575.57.08", "auto", True, "PTX JIT"),           # the toolkit's own driver: PTX may JIT
    ("560.35.03", "auto", False, "minor-version compatibility cannot do"),  # minor compat would need the JIT
    ("560.35.03", "minor", False, "minor-version compatibility cannot do"),
    ("560.35.03", "strict", False, "needs driver >= 570.26"),
])
def test_minor_version_compatibility_never_serves_a_gpu_that_needs_ptx_jit(driver, compat, ok, words):
    fit = hardware_fit(PTX_ONLY_FOR_HOPPER, nvidia(driver, "9.0"), MATRIX, compat)
    assert fit.ok is ok
    assert words in (" ".join(map(str, fit.warnings)) if ok else fit.why_not)


def test_auto_allows_minor_compatibility_only_with_the_gpu_known():
    build = next(b for b in MATRIX.release("2.14.1").builds if (b.os, b.arch, b.flavor) == ("linux", "x86_64", "cu126"))
    assert hardware_fit(build, nvidia("535.104.05", "8.0"), MATRIX, "auto").mode == "minor"
    unknown = hardware_fit(build, nvidia("535.104.05"), MATRIX, "auto")
    assert not unknown.ok and "--compute-capability" in unknown.why_not
    assert hardware_fit(build, nvidia("535.104.05"), MATRIX, "minor").ok


def test_every_minor_compat_plan_carries_sass_for_the_gpu():
    for cc in ("7.5", "8.0", "8.6", "8.9", "9.0", "12.0"):
        plan = resolve(project("torch"), nvidia("535.104.05", cc), MATRIX)
        if plan.status == "minor-version-compat":
            assert has_sass(build_of(plan), cc), (cc, plan.torch.local)
