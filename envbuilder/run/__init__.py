"""Running jobs in images: specs, execution, pipeline, run store, metrics, plots, ONNX verification.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
