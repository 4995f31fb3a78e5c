"""Package indexes: reading what a mirror serves, and serving wheel folders on loopback.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
