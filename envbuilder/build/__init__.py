"""Building images: keys, contexts, progress, lock files, base images.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
