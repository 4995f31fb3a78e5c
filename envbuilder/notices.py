"""Notices: the warnings, findings and notes envbuilder reports, as values with a code, and the catalog of codes.

A Notice is what HostInfo.findings (the probes), ProjectSpec.notes (the readers) and Plan.warnings (the resolver)
hold: `code` is stable and listed in NOTICE_CODES, so a host application can act on it (hide a known one, turn
one into a failure in CI) without parsing words; `message` is what the CLI prints, unchanged from before codes;
`hint` says what to do, where there is something to do. In JSON a notice is {"code", "message", "hint"}.
tests/test_notices.py checks that every code used in the package is listed here, and every listed one is used;
docs/notices.md is generated from the table (`python -m envbuilder.notices > docs/notices.md`).
A frozen stdlib dataclass, which pydantic validates and serializes inside the models that carry it.
Foundation: imports nothing of ours, nor pydantic (detection uses it before anything heavy is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notice:
    """One thing worth telling the user that is not an error: a code from NOTICE_CODES, the words, a hint."""

    code: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:  # the words, wherever a notice is printed or joined into a sentence
        return self.message


# (what reports it, meaning) per code. Grouped by the value that carries them.
NOTICE_CODES: dict[str, tuple[str, str]] = {
    # HostInfo.findings: envbuilder.host.probes
    "probe-failed": ("detect", "a probe program failed, timed out or is missing; what it would tell is unknown"),
    "nvidia-smi-too-old": ("detect", "nvidia-smi cannot report compute capability; it is left unknown"),
    "no-nvidia-gpus": ("detect", "nvidia-smi runs but lists no GPU"),
    "probe-lines-ignored": ("detect", "nvidia-smi printed lines that are not GPU rows (MIG listings, warnings)"),
    "compute-capability-unknown": ("detect", "a GPU's compute capability could not be read"),
    "cuda-version-unknown": ("detect", "the driver's CUDA version could not be read"),
    "rocm-fallback": ("detect", "rocminfo failed; rocm_agent_enumerator named the GPUs instead"),
    "rocm-version-unknown": ("detect", "the ROCm version could not be read"),
    "rosetta": ("detect", "Python runs under Rosetta 2; the CPU is reported as arm64"),
    "mixed-gpus": ("detect", "the GPUs differ (compute capability or gfx architecture); a build must cover all"),
    "cpu-only-host": ("detect", "no supported GPU was found; the host runs on CPU only"),
    # ProjectSpec.notes: envbuilder.project readers
    "entry-skipped": ("inspect", "a declared requirement or dependency entry was not used (not a named requirement, "
                                 "an environment variable, an editable or path install, a non-Python conda package)"),
    "option-ignored": ("inspect", "a requirements-file option was ignored (--hash, --trusted-host, others)"),
    "range-widened": ("inspect", "a version range PEP 440 cannot express was read wider (`|`, `||`, a conda python)"),
    "dynamic-metadata": ("inspect", "dependencies are dynamic or computed (setup.py, [tool.setuptools.dynamic]); "
                                    "read from files or literals where possible, never executed"),
    "file-not-read": ("inspect", "a file was found or named but not read (a second requirements file, a URL, "
                                 "outside the project, missing, not a conda environment)"),
    "metadata-fallback": ("inspect", "no project metadata besides requirements files: read them as the requirements"),
    "no-metadata": ("inspect", "the folder declares no dependencies at all"),
    "poetry-scope": ("inspect", "which poetry tables or groups were read, and which were left out"),
    "index-ignored": ("inspect", "a declared index or source has no URL, is not declared, or is not an index"),
    "duplicate-requirement": ("inspect", "a package is declared more than once; the declarations are combined"),
    "lock-pins": ("inspect", "the project's own lock file pins declared requirements; the plan uses its versions"),
    "lock-pin-skipped": ("inspect", "a lock entry was not used (a non-index source, outside the declared range, "
                                    "several versions without markers)"),
    "config-file-chosen": ("inspect", "envbuilder.toml and [tool.envbuilder] both exist; envbuilder.toml is used"),
    "project-not-installed": ("inspect", "the project is not installed as a package (no entry points, no metadata)"),
    # Plan.warnings: envbuilder.resolve and envbuilder.api
    "dependencies-not-checked": ("resolve", "offline, no uv, or no index reachable: the project's other "
                                            "dependencies were not checked against the chosen Python"),
    "dependencies-do-not-install": ("resolve", "on no candidate Python does every dependency install; the plan "
                                               "keeps the matrix's Python, and the build will likely fail"),
    "mirror-unread": ("resolve", "the torch mirror could not be read; the plan comes from the matrix alone"),
    "gpu-arch-unknown": ("resolve", "no AMD gfx architecture known; the ROCm build is assumed to support the GPU"),
    "driver-unknown": ("resolve", "no NVIDIA driver version known; assumed new enough"),
    "compute-capability-not-checked": ("resolve", "no compute capability known; the build's kernels are not checked"),
    "ptx-jit": ("resolve", "the GPU runs the build's kernels through PTX JIT (slow first start)"),
    "minor-version-compat": ("resolve", "the driver runs the build only through CUDA minor-version compatibility"),
    "outside-project-bounds": ("resolve", "no build within the project's torch bounds runs on the target; the plan "
                                          "takes the nearest one that does"),
    "cpu-fallback": ("resolve", "no GPU build runs on the target; the plan falls back to the CPU build"),
    "gpu-hint": ("resolve", "what would let the GPU be used (a driver to install, a bound to relax)"),
    "companion-missing": ("resolve", "no companion release (torchvision, torchaudio) is built for the chosen torch"),
    "companion-from-default-index": ("resolve", "the torch mirror has no page for a companion; it comes from the "
                                                "default index"),
    "companion-yanked": ("resolve", "the chosen companion release is yanked on PyPI (taken because pinned exactly)"),
    "onnxruntime-cpu": ("resolve", "no onnxruntime-gpu release pairs with torch's CUDA; ONNX runs on the CPU"),
    "onnxruntime-unavailable": ("resolve", "no onnxruntime release in the matrix fits the Python; left to the installer"),
    "unlisted-wheel": ("resolve", "the torch wheel named by URL is outside the matrix; what the matrix cannot "
                                  "tell (kernels, driver floor, companions) is not checked"),
    # BuiltImage.notices (printed as build lines too): envbuilder.build.context
    "secret-in-context": ("build", "files that look like secrets (.env, keys, cloud credentials) are in the build "
                                   "context, so the image keeps them; the default ignores leave the common ones out"),
    "large-context": ("build", "the build context is over 200 MB: its biggest folders are named; data belongs in "
                               ".dockerignore and run-time mounts, not in an image layer"),
    # Submission.notices (kept on the run too): envbuilder.cluster.submit
    "cluster-mounts-dropped": ("submit", "the job's data mounts the Kubernetes profile maps no volume for are not "
                                         "in the Job (map them in [clusters.NAME.volumes])"),
    "metrics-file-not-read": ("submit", "the job's $ENVBUILDER_METRICS file is on the pod or SkyPilot node, not "
                                        "readable from here: metrics come from its output (ENVBUILDER_METRIC "
                                        "lines, else the log heuristics)"),
}


def markdown() -> str:
    """docs/notices.md: the catalog as a table."""
    lines = ["# Notices", "",
             "Warnings (`resolve`), findings (`detect`) and notes (`inspect`) are values with a code: in `--json` each",
             'is `{"code": ..., "message": ..., "hint": ...}`. The codes are stable; the messages may be reworded.',
             "Generated from `envbuilder/notices.py` (`python -m envbuilder.notices > docs/notices.md`).", "",
             "| code | reported by | meaning |", "|---|---|---|"]
    lines += [f"| `{code}` | {who} | {meaning} |" for code, (who, meaning) in NOTICE_CODES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
