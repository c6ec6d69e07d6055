"""A real `pageq serve` on a socket: the examples of docs/http-api.md (curl and Python) run against it, and
the server's refusals (S1, S5) and TLS."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pageq
from pageq.http import Settings
from pageq.http.serve import check_bind, is_loopback

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "http-api.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SECRET = base64.b64encode(b"k" * 32).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pageq", "serve", "apps.http_app:app", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen[bytes], **client: object) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        try:
            if httpx.get(f"{url}/readyz", timeout=2, **client).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def served(app: pageq.App, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`pageq serve apps.http_app:app` on a free port, with a principal "docs" that may do anything."""
    app.security.create_principal("docs")
    app.security.grant("docs", "*")
    _, token = app.security.create_token("docs")
    port = free_port()
    env = {**env, "PAGEQ_HTTP_KEYS": f"docs-key:docs:{SECRET}"}
    proc = start(env, "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield {**env, "PAGEQ_URL": url, "PAGEQ_TOKEN": token, "PAGEQ_SIGNING_SECRET": SECRET}
    finally:
        stop(proc)


def test_the_documented_examples_run(served: dict[str, str], app: pageq.App) -> None:
    blocks = BLOCK.findall(DOC.read_text())
    assert [kind for kind, _ in blocks].count("python") >= 2 and len(blocks) >= 8
    for kind, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, env=served, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{kind} example failed:\n{code}\n{result.stdout}\n{result.stderr}"
    jobs = app.list_jobs(limit=100)
    emails = [job for job in jobs if job.task == "email.send"]
    assert {job.state for job in emails} == {pageq.JobState.SUCCEEDED} and len(emails) == 3
    assert {row.principal for row in app.security.audit(action="enqueue")} == {"docs"}


def test_refuses_an_exposed_bind_without_tls_or_credentials(app: pageq.App, env: dict[str, str]) -> None:
    for args, message in (
        (["--host", "0.0.0.0"], "without TLS"),
        (["--host", "0.0.0.0", "--insecure"], "no credentials"),
    ):
        command = [sys.executable, "-m", "pageq", "serve", "apps.http_app:app", *args, "--port", "1"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    settings = Settings()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")
    check_bind(app, "127.0.0.1", settings, tls=False, insecure=False)  # loopback: always
    with pytest.raises(pageq.ConfigError, match="without TLS"):
        check_bind(app, "10.1.2.3", settings, tls=False, insecure=False)
    with pytest.raises(pageq.ConfigError, match="no credentials"):
        check_bind(app, "10.1.2.3", settings, tls=True, insecure=False)
    app.security.create_principal("p")
    app.security.create_token("p")
    check_bind(app, "10.1.2.3", settings, tls=True, insecure=False)


def self_signed(folder: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_serves_tls_1_2_or_later(app: pageq.App, env: dict[str, str], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    proc = start(env, "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key))
    url = f"https://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, verify=str(cert))
        assert httpx.get(f"{url}/v1/jobs", verify=str(cert)).status_code == 401
        old = ssl.create_default_context(cafile=str(cert))
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)), socket.create_connection(("127.0.0.1", port)) as raw:
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        stop(proc)
    assert os.path.exists(cert)
