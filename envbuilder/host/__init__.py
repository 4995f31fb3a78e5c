"""Host detection: what the machine has (types, pure parsers, probes).

Imports nothing at package level, so that importing one module loads only what it needs.
"""
