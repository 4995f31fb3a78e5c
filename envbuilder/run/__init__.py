"""Running jobs in images: specs, execution, pipeline, run store, metrics, plots, ONNX verification.

Imports nothing at package level, so that importing one module loads only what it needs.

The small values `envbuilder run --image` makes before its container starts (RunOrigin, MetricPoint,
PublishedPort, ResolvedMount, RunRequest, ProjectImage, ArtifactsHome, PlacedRun) are NamedTuples, not frozen
dataclasses: on Python 3.11 defining a dataclass compiles each of its methods (0.5-2 ms a class), and those
milliseconds were a fifth of what the command adds to a bare `docker run`. Values with many fields, defaults
that must be fresh objects, or `dataclasses.replace` callers (RunOptions, RunSpec, RunRecord) stay dataclasses.
"""
