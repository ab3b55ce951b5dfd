"""``fip central dev-cert``: a local CA and a server certificate that a real TLS client trusts."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from federation.cli import main
from portal_central.devcert import DevCert, make_dev_cert

SECONDS = 5.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> DevCert:
    return make_dev_cert(tmp_path_factory.mktemp("tls") / "tls")


@contextmanager
def tls_server(cert: DevCert) -> Iterator[tuple[int, list[str]]]:
    """A TLS echo server on 127.0.0.1 using the dev certificate; yields (port, outcomes)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.certfile, cert.keyfile)
    outcomes: list[str] = []
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.05)

        def serve() -> None:
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                with raw:
                    raw.settimeout(SECONDS)
                    try:
                        with context.wrap_socket(raw, server_side=True) as tls:
                            tls.sendall(b"pong:" + tls.recv(64))
                        outcomes.append("ok")
                    except (ssl.SSLError, OSError) as error:
                        outcomes.append(f"failed: {error}")

        thread = threading.Thread(target=serve, name="tls-echo", daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1], outcomes
        finally:
            stop.set()
            thread.join(SECONDS)
    assert not thread.is_alive()


def _talk(port: int, context: ssl.SSLContext, hostname: str) -> tuple[bytes, list[Any]]:
    """Send a ping over TLS; the answer and the issuer of the server's certificate."""
    with socket.create_connection(("127.0.0.1", port), timeout=SECONDS) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"ping")
            answer = tls.recv(64)
            peer: Any = tls.getpeercert()
            return answer, [pair for rdn in peer["issuer"] for pair in rdn]


# ---------------------------------------------------------------- the files


def test_the_three_files_are_written_and_the_key_is_private(cert: DevCert) -> None:
    folder = cert.ca_file.parent
    assert cert.ca_file == folder / "ca.pem"
    assert cert.certfile == folder / "server.pem"
    assert cert.keyfile == folder / "server-key.pem"
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]
    assert _mode(cert.keyfile) == 0o600
    assert _mode(folder) & 0o077 == 0, "the folder holding the key is the owner's only"
    assert b"PRIVATE KEY" in cert.keyfile.read_bytes()
    assert b"PRIVATE KEY" not in cert.ca_file.read_bytes(), "the CA file for sites has no key"
    assert b"PRIVATE KEY" not in cert.certfile.read_bytes()


def test_the_ca_signs_a_server_certificate_for_this_machine(cert: DevCert) -> None:
    ca = x509.load_pem_x509_certificate(cert.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(cert.certfile.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_other_names_can_be_asked_for(tmp_path: Path) -> None:
    made = make_dev_cert(tmp_path / "tls", names=("central.lan", "10.0.0.5"))
    server = x509.load_pem_x509_certificate(made.certfile.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["central.lan"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]


def test_making_it_again_keeps_the_key_private(tmp_path: Path) -> None:
    """A key file left readable by others (copied, restored from a backup) is made 0600 again."""
    folder = tmp_path / "tls"
    first = make_dev_cert(folder)
    old_key = first.keyfile.read_bytes()
    first.keyfile.chmod(0o644)
    again = make_dev_cert(folder)
    assert again.keyfile.read_bytes() != old_key, "a new key is made"
    assert _mode(again.keyfile) == 0o600


# ---------------------------------------------------------------- a real handshake


def test_a_client_trusting_the_ca_completes_a_tls_handshake(cert: DevCert) -> None:
    trusting = ssl.create_default_context(cafile=str(cert.ca_file))
    with tls_server(cert) as (port, outcomes):
        for hostname in ("127.0.0.1", "localhost"):
            answer, issuer = _talk(port, trusting, hostname)
            assert answer == b"pong:ping"
            assert ("commonName", "FIP development CA") in issuer
    assert outcomes == ["ok", "ok"]


def test_a_client_without_the_ca_or_for_another_name_refuses(cert: DevCert) -> None:
    untrusting = ssl.create_default_context()
    trusting = ssl.create_default_context(cafile=str(cert.ca_file))
    with tls_server(cert) as (port, outcomes):
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            _talk(port, untrusting, "127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
            _talk(port, trusting, "central.example.org")
    assert len(outcomes) == 2 and all(o.startswith("failed") for o in outcomes)


# ---------------------------------------------------------------- the command


def test_fip_central_dev_cert_prints_the_ca_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("FIP_CENTRAL_DATA_DIR", str(tmp_path / "central-data"))
    out = tmp_path / "certs"
    copy = tmp_path / "for-sites"

    assert main(["central", "dev-cert", "--out", str(out), "--ca-copy", str(copy)]) == 0

    printed = capsys.readouterr().out
    assert str(out / "ca.pem") in printed
    assert "give it to the sites" in printed
    assert f"--certfile {out / 'server.pem'} --keyfile {out / 'server-key.pem'}" in printed
    assert _mode(out / "server-key.pem") == 0o600
    assert (copy / "ca.pem").read_bytes() == (out / "ca.pem").read_bytes()
    assert sorted(p.name for p in copy.iterdir()) == ["ca.pem"], "only the CA goes to the sites"
    assert list(work.iterdir()) == [], "nothing is written into the working directory"
