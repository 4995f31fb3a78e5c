"""Resolving a plan: target, matrix, candidates, explanation. Pure: no subprocess, socket, urllib or docker.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
