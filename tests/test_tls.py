"""``promoguard serve --tls-cert --tls-key`` serves HTTPS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed to make a test certificate"
)
def test_serve_speaks_https_with_the_given_certificate(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PROMOGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'tls.db'}"}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("promoguard")),
            "serve",
            "--port",
            str(port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        response = None
        for _ in range(100):
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust, timeout=2)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert response is not None, "the HTTPS server did not come up"
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)  # plain HTTP is not served
    finally:
        server.terminate()
        server.wait(timeout=20)
