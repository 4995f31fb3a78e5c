"""The one Docker engine interface and its implementations, BuildKit discovery, error diagnosis.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
