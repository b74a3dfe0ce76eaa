"""``promoguard serve --tls-cert --tls-key`` serves HTTPS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.serving import serving


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
    trust = ssl.create_default_context(cafile=str(cert))
    env = {"PROMOGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'tls.db'}"}

    with serving(env, "--tls-cert", str(cert), "--tls-key", str(key), trust=trust) as base:
        response = httpx.get(f"{base}/healthz", verify=trust, timeout=2)
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(base.replace("https://", "http://") + "/healthz", timeout=2)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
