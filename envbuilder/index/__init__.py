"""What remote sources serve: reading a mirror into a snapshot, installing a newer matrix, serving wheels on loopback.

Imports nothing at package level, so that importing one module loads only what it needs.
"""
