"""An https provider: the certificate is verified (the CA bundle is loaded on the first https
request only, so plain-HTTP runs never pay for it), and ``SSL_CERT_FILE`` is honoured."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_config
from tests.oai_server import Behaviour, StubOpenAIServer

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="needs the openssl binary (apt-get install openssl)")


@pytest.fixture
def https_server(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with StubOpenAIServer(tls=context) as srv:
        srv.set_default(Behaviour(reply="YES"))
        yield srv, cert


def test_a_refused_connection_says_so_not_timeout(fscale_home):
    closed = StubOpenAIServer()
    closed.port = _closed_port()
    write_config(fscale_home, closed)
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert proc.returncode == 4, proc.stderr
    errors = [vote["error"] for vote in json.loads(proc.stdout)["votes"]]
    assert errors and all(e.startswith(f"network: cannot connect to 127.0.0.1:{closed.port} (")
                          for e in errors), errors


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: a connection is refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_openssl
def test_a_certificate_no_trusted_root_signed_is_refused_and_ssl_cert_file_trusts_it(
        https_server, fscale_home):
    server, cert = https_server
    write_config(fscale_home, server)
    assert server.base_url.startswith("https://")
    refused = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert refused.returncode == 4, refused.stderr
    errors = [vote["error"] for vote in json.loads(refused.stdout)["votes"]]
    # It said "timeout: no complete reply within 30s", a few milliseconds after the start.
    assert errors and all(e.startswith("tls: the TLS certificate of 127.0.0.1 did not verify")
                          for e in errors), errors
    assert server.count() == 0
    trusted = run_cli("scale", "q?", "-a", "YES,NO", "--json", env={"SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["answer"] == "YES" and server.count() == 3
