"""Fixtures shared by the end-to-end test files."""
import subprocess

import pytest


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate and key for mx2.test (inbound STARTTLS)."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=mx2.test"], check=True,
                   capture_output=True)
    return cert, key
