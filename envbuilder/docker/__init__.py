"""Docker, behind one interface. engine.py: the `Engine` Protocol and `open_engine` (alias `Docker`), which picks
socket_engine.SocketEngine (stdlib, local engine; HTTP/1.1 through unixhttp.py) or sdk_engine.SdkEngine (docker
SDK, remote/TLS) once; both build on base_engine.EngineBase and streams.py. buildkit.py: builds through a docker
CLI. diagnose.py: Docker's error strings as typed errors. service.py: engine status and start (`envbuilder engine`).

Imports nothing at package level, so that importing one module loads only what it needs.
"""
