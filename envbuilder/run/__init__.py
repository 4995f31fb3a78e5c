"""Running jobs in images: specs, execution, pipeline, run store, metrics, plots, ONNX verification.

Imports nothing at package level, so that importing one module loads only what it needs.

The values `envbuilder run --image` makes before its container starts (RunOrigin, MetricPoint, PublishedPort,
ResolvedMount, RunRequest, ProjectImage, ArtifactsHome, PlacedRun, RunOptions, RunSpec) are NamedTuples, not frozen
dataclasses: on Python 3.11 defining a dataclass compiles each of its methods (0.5-2 ms a class), and those
milliseconds were a fifth of what the command adds to a bare `docker run`. A changed copy is `value._replace(...)`.
RunRecord stays a frozen dataclass: its fields are keyword-only with defaults among them, in the order
`runs list --json` prints, which a NamedTuple cannot keep.
"""
