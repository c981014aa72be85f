"""Credentials for a networked deployment, with real keys, certificates and TLS handshakes.

The coordinator proves who it is with a certificate from the consortium's private CA; sites and the
admin prove who they are with bearer tokens that the coordinator knows only by their SHA-256.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from fedcare.interfaces import cli
from fedcare.core.errors import ConfigError
from fedcare.transports.network.credentials import (
    AdminCredential,
    Registry,
    SiteCredential,
    client_ssl_context,
    init_authority,
    issue_site,
    list_sites,
    revoke_site,
    server_tls_files,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@pytest.fixture
def authority(tmp_path):
    return init_authority(tmp_path / "pki")


def _handshake(directory: Path, ca_pem: bytes, server_hostname: str) -> tuple[bytes, str]:
    """One TLS connection on 127.0.0.1 to a server holding the coordinator's certificate and key."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*server_tls_files(directory))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except OSError:  # ssl.SSLError included: the client refused us
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ssl_context(ca_pem).wrap_socket(raw, server_hostname=server_hostname) as tls:
                    return tls.recv(5), tls.version()
        finally:
            thread.join(10)


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_coordinator_certificate_passes_a_real_handshake_by_dns_name_and_ip(authority, name):
    ca_pem = authority.ca_cert.read_bytes()
    data, version = _handshake(authority.directory, ca_pem, name)
    assert data == b"hello"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_different_ca_fails_the_handshake(authority, tmp_path):
    other = init_authority(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(authority.directory, other.ca_cert.read_bytes(), "localhost")


def test_a_host_name_not_in_the_certificate_fails_the_handshake(authority):
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)hostname|ip address"):
        _handshake(authority.directory, authority.ca_cert.read_bytes(), "coordinator.example.org")


def test_client_context_trusts_the_private_ca_only_with_tls_1_2_or_newer(authority):
    ctx = client_ssl_context(authority.ca_cert.read_bytes())
    assert len(ctx.get_ca_certs()) == 1  # no system CAs: a publicly signed certificate is refused
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError, match="CA certificate"):
        client_ssl_context(b"not a certificate")


def test_certificates_say_what_they_are_for(tmp_path):
    auth = init_authority(tmp_path / "pki", hosts=["coord.example.org", "10.1.2.3"], days=30)
    ca = x509.load_pem_x509_certificate(auth.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(auth.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30


@pytest.mark.parametrize("hosts, days", [([], 365), (["bad_host!"], 365), (["localhost"], 0)])
def test_init_refuses_bad_hosts_and_days(tmp_path, hosts, days):
    with pytest.raises(ConfigError):
        init_authority(tmp_path / "pki", hosts=hosts, days=days)
    assert not (tmp_path / "pki").exists()


# ---------------------------------------------------------------- files


@posix_only
def test_secrets_are_mode_0600_and_no_temporary_files_remain(authority):
    d = authority.directory
    issue_site(d, "st-marys")
    issue_site(d, "st-marys")  # rewritten files keep their mode too
    for name in ("ca-key.pem", "coordinator-key.pem", "admin.json", "registry.json", "sites/st-marys.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o600, name
    assert not [p for p in d.rglob("*") if p.name.endswith(".tmp")]


def test_init_refuses_to_overwrite_an_authority(authority):
    d = authority.directory
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="already holds an authority") as err:
        init_authority(d)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


def test_registry_stores_token_hashes_never_tokens(authority):
    d = authority.directory
    site = SiteCredential.load(issue_site(d, "st-marys"))
    admin = AdminCredential.load(authority.admin_credential)
    text = (d / "registry.json").read_text()
    assert site.token not in text and admin.token not in text
    entry = json.loads(text)["sites"]["st-marys"]
    assert set(entry) == {"token_sha256", "issued", "revoked"} and entry["revoked"] is None
    assert site.token not in repr(site) and admin.token not in repr(admin)


def test_credential_files_hold_what_an_agent_needs(authority):
    site = SiteCredential.load(issue_site(authority.directory, "st-marys"))
    assert site.site_id == "st-marys" and len(site.token) >= 43  # 256 bits, URL-safe base64
    assert site.ca_pem == authority.ca_cert.read_bytes()
    assert AdminCredential.load(authority.admin_credential).ca_pem == site.ca_pem


@pytest.mark.parametrize("content", [None, "{not json", '{"site_id": "a", "token": "t"}',
                                     '{"site_id": "a", "token": "t", "ca_pem": "junk"}',
                                     '{"site_id": "../a", "token": "t", "ca_pem": "junk"}'])
def test_a_missing_or_corrupt_credential_is_a_clear_error(tmp_path, content):
    path = tmp_path / "site.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="credential file") as err:
        SiteCredential.load(path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- tokens and the registry


def test_site_for_maps_tokens_and_refuses_unknown_and_revoked(authority):
    d = authority.directory
    a = SiteCredential.load(issue_site(d, "a"))
    registry = Registry.load(d)
    b = SiteCredential.load(issue_site(d, "b"))  # issued after loading: seen without a restart
    assert registry.site_for(a.token) == "a" and registry.site_for(b.token) == "b"
    assert registry.site_ids() == ["a", "b"]
    for bad in ("", "x" * 43, a.token + "x", a.token[:-1], "é" * 10, "\ud800", None, "x" * 10_000):
        assert registry.site_for(bad) is None
    revoke_site(d, "a")
    assert registry.site_for(a.token) is None  # the already-loaded registry sees the revocation
    assert registry.site_for(b.token) == "b"
    assert registry.site_ids() == ["b"]
    assert [(r.site_id, r.revoked is not None) for r in list_sites(d)] == [("a", True), ("b", False)]


def test_reissue_replaces_the_token_and_keeps_the_site_order(authority):
    d = authority.directory
    old_a = SiteCredential.load(issue_site(d, "a"))
    issue_site(d, "b")
    registry = Registry.load(d)
    new_a = SiteCredential.load(issue_site(d, "a"))
    assert new_a.token != old_a.token
    assert registry.site_for(old_a.token) is None and registry.site_for(new_a.token) == "a"
    assert registry.site_ids() == ["a", "b"]
    revoke_site(d, "a")
    again = SiteCredential.load(issue_site(d, "a"))  # re-issuing a revoked site reactivates it
    assert registry.site_for(again.token) == "a" and registry.site_for(new_a.token) is None


def test_admin_token_is_separate_from_site_tokens(authority):
    d = authority.directory
    admin = AdminCredential.load(authority.admin_credential)
    site = SiteCredential.load(issue_site(d, "a"))
    registry = Registry.load(d)
    assert registry.is_admin(admin.token)
    assert not registry.is_admin(site.token) and not registry.is_admin("") and not registry.is_admin(None)
    assert registry.site_for(admin.token) is None


def test_revoking_an_unknown_site_is_an_error_and_revoking_twice_keeps_the_first_time(authority):
    d = authority.directory
    with pytest.raises(ConfigError, match="no site 'ghost'"):
        revoke_site(d, "ghost")
    issue_site(d, "a")
    revoke_site(d, "a")
    first = list_sites(d)[0].revoked
    revoke_site(d, "a")
    assert list_sites(d)[0].revoked == first


def test_a_registry_that_becomes_unreadable_fails_closed(authority):
    d = authority.directory
    token = SiteCredential.load(issue_site(d, "a")).token
    registry = Registry.load(d)
    (d / "registry.json").write_text("{broken")
    with pytest.raises(ConfigError, match="corrupt"):
        registry.site_for(token)
    (d / "registry.json").unlink()
    with pytest.raises(ConfigError, match="registry"):
        registry.site_for(token)


@pytest.mark.parametrize("site_id", ["", ".hidden", "..", "a/b", "a b", "x" * 65, "ünï", "a\n"])
def test_bad_site_ids_are_refused(authority, site_id):
    with pytest.raises(ConfigError, match="site id"):
        issue_site(authority.directory, site_id)
    assert not (authority.directory / "sites").exists() or not list((authority.directory / "sites").iterdir())


@pytest.mark.parametrize("site_id", ["a", "St-Marys_2.north", "x" * 64, "_x", "0"])
def test_good_site_ids_are_accepted(authority, site_id):
    assert issue_site(authority.directory, site_id).name == f"{site_id}.json"


def test_server_tls_files_says_what_to_do_when_missing(tmp_path):
    with pytest.raises(ConfigError, match="certs init"):
        server_tls_files(tmp_path)


# ---------------------------------------------------------------- the `fedcare certs` commands


def test_certs_commands(tmp_path):
    runner = CliRunner()
    d = str(tmp_path / "pki")

    def run(*args: str):
        result = runner.invoke(cli.app, ["certs", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    out = run("init", "--dir", d, "--host", "coord.example.org", "--host", "10.0.0.5", "--days", "30")
    assert "admin.json" in out
    san = x509.load_pem_x509_certificate((tmp_path / "pki" / "coordinator.pem").read_bytes()) \
        .extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    out = run("site", "st-marys", "--dir", d)
    assert "st-marys.json" in out and "replaced" not in out
    first = SiteCredential.load(tmp_path / "pki" / "sites" / "st-marys.json")
    out = run("site", "st-marys", "--dir", d)
    assert "replaced" in out and "old token no longer works" in out
    second = SiteCredential.load(tmp_path / "pki" / "sites" / "st-marys.json")
    run("site", "general", "--dir", d)
    out = run("revoke", "general", "--dir", d)
    assert "revoked" in out
    out = run("list", "--dir", d)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 4}
    assert set(rows) == {"st-marys", "general"}
    assert rows["st-marys"].rstrip(" │").endswith("-") and not rows["general"].rstrip(" │").endswith("-")
    admin = AdminCredential.load(tmp_path / "pki" / "admin.json")
    for token in (first.token, second.token, admin.token):
        assert token not in out
    registry = Registry.load(tmp_path / "pki")
    assert registry.site_ids() == ["st-marys"] and registry.site_for(second.token) == "st-marys"


def test_certs_errors_are_fedcare_errors(tmp_path):
    runner = CliRunner()
    runner.invoke(cli.app, ["certs", "init", "--dir", str(tmp_path)])
    for args in (["site", "../evil"], ["revoke", "ghost"], ["init"]):
        result = runner.invoke(cli.app, ["certs", *args, "--dir", str(tmp_path)])
        assert result.exit_code != 0 and isinstance(result.exception, ConfigError), args
        assert "\n" not in str(result.exception)


def test_a_bad_site_id_is_one_error_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    """Through `main`, as the installed `fedcare` command runs."""
    init_authority(tmp_path)
    monkeypatch.setattr(sys, "argv", ["fedcare", "certs", "site", ".bad", "--dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["error: site id '.bad' is invalid: use 1-64 letters, digits, "
                                            "'.', '_' or '-', not starting with '.'"]
    assert captured.out == ""
    assert not (tmp_path / "sites").exists()
