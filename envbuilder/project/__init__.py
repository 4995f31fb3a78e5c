"""Reading a project: its spec, one reader per format, markers, the [tool.envbuilder] config, git sources.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
