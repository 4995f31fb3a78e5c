"""Running jobs in images: specs, execution, pipeline, run store, metrics, plots, ONNX verification.

Imports nothing at package level, so that importing one module loads only what it needs.

The values `envbuilder run --image` makes before its container is created (RunOrigin, MetricPoint, PublishedPort,
ResolvedMount, RunRequest, ProjectImage, ArtifactsHome, PlacedRun, RunOptions, RunSpec; envbuilder.settings'
Settings and envbuilder.errors' exceptions too) are NamedTuples or plain classes, not dataclasses: on Python 3.11
importing `dataclasses` costs ~7 ms and defining a dataclass compiles each of its methods (0.5-2 ms a class),
together a third of what the command adds to a bare `docker run`. A changed copy is `value._replace(...)`.
RunRecord stays a frozen dataclass (keyword-only fields with defaults among them, in the order `runs list --json`
prints, which a NamedTuple cannot keep); it is made while the engine creates the container (run.container).
"""
