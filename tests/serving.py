"""Run ``promoguard serve`` as a real process for a test, and stop it afterwards."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    env: dict[str, str],
    *extra: str,
    trust: ssl.SSLContext | None = None,
    cwd: Path | None = None,
) -> Iterator[str]:
    """Start ``promoguard serve`` with ``env`` added to the environment (in the working directory
    ``cwd``, else this one); yield its base URL once ``/healthz`` answers (over HTTPS, trusting
    ``trust``, when ``extra`` asks for TLS)."""
    port = free_port()
    scheme = "https" if trust is not None else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("promoguard")), "serve", "--port", str(port), *extra],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"promoguard serve exited: {error}")
            try:
                if httpx.get(f"{base}/healthz", verify=trust or True, timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{base} did not come up")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
