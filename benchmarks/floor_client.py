"""The least any Python client can do for `run --image IMAGE -- CMD` with a record (bench_run.py's floor row).

Standard library only, no envbuilder code: the modules a run needs (json, sqlite3, socket, dataclasses, pathlib,
re, datetime, threading) are imported, then one image inspect, a SQLite row, create, attach (as `docker run` does),
start, wait, remove and the row's update, over the local engine socket. What `envbuilder run` costs above this is its own code: its modules,
the run's folder, log and metrics, the checks.

    python benchmarks/floor_client.py DB IMAGE CMD...
"""

from __future__ import annotations

import dataclasses  # noqa: F401 - imported by any real client; part of the floor
import datetime
import json
import pathlib  # noqa: F401
import re  # noqa: F401
import socket
import sqlite3
import sys
import threading  # noqa: F401
import time
import urllib.parse

SOCKET = "/var/run/docker.sock"


def call(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    """One request on its own connection (Connection: close, so the body is whatever follows the head)."""
    data = json.dumps(body).encode() if body is not None else b""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(SOCKET)
        conn.sendall(f"{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():  # the engine chunks JSON answers: size line, data, ...
        body_parts, rest_view = [], rest
        while rest_view:
            size_line, _, rest_view = rest_view.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body_parts.append(rest_view[:size])
            rest_view = rest_view[size + 2:]
        rest = b"".join(body_parts)
    return status, rest


def main(db_path: str, image: str, command: list[str]) -> int:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, status TEXT, started TEXT, container TEXT, "
               "exit_code INTEGER)")
    run_id = f"r-{time.time_ns()}"
    status, _ = call("GET", f"/images/{urllib.parse.quote(image, safe='/:')}/json")
    if status != 200:
        return 125
    with db:
        db.execute("INSERT INTO runs VALUES (?, 'running', ?, NULL, NULL)",
                   (run_id, datetime.datetime.now(datetime.timezone.utc).isoformat()))
    _, created = call("POST", "/containers/create", {"Image": image, "Cmd": command, "Labels": {"run-id": run_id},
                                                      "AttachStdout": True, "AttachStderr": True})
    container = json.loads(created)["Id"]
    # Attached before start, as `docker run` and envbuilder are: the only way to be sure of every line of output.
    with socket.socket(socket.AF_UNIX) as output:
        output.connect(SOCKET)
        output.sendall(f"POST /v1.41/containers/{container}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                       "Host: docker\r\nContent-Length: 0\r\n\r\n".encode())
        call("POST", f"/containers/{container}/start")
        while output.recv(65536):  # to the end of the job's output
            pass
    _, waited = call("POST", f"/containers/{container}/wait")
    code = json.loads(waited)["StatusCode"]
    call("DELETE", f"/containers/{container}")
    with db:
        db.execute("UPDATE runs SET status = ?, exit_code = ?, container = ? WHERE id = ?",
                   ("completed" if code == 0 else "failed", code, container, run_id))
    return code


if __name__ == "__main__":
    code = main(sys.argv[1], sys.argv[2], sys.argv[3:])
    import gc

    gc.freeze()  # as envbuilder's program does: the interpreter's last garbage collection is skipped
    sys.exit(code)
