"""Credentials for a networked deployment: a private CA, the coordinator's TLS certificate, and
per-site and admin bearer tokens.

Sites connect outbound only, so the coordinator authenticates itself with TLS (a certificate from a
private CA that every agent pins) and the sites authenticate with bearer tokens. Tokens are 256-bit
random strings, so the registry stores only their SHA-256 (a slow KDF guards guessable passwords,
not random ones). A token appears once, in the credential file it is issued into, and nowhere else.

Files of an authority directory (secrets are created with mode 0600; every file is written whole):

    ca.pem, ca-key.pem                   the private CA (the key is needed only to re-issue certificates)
    coordinator.pem, coordinator-key.pem the coordinator's TLS certificate and key (uvicorn)
    registry.json                        site id → token hash, issue and revocation times; admin hash
    admin.json                           the admin credential (starts and stops runs)
    sites/<site_id>.json                 each site's credential, to hand to that hospital
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.core.errors import ConfigError

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "coordinator.pem", "coordinator-key.pem"
REGISTRY, ADMIN, SITES = "registry.json", "admin.json", "sites"

_SITE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_TOKEN = 256  # longer presented tokens are refused before hashing


# ---------------------------------------------------------------- issuing (the consortium's admin)


@dataclass(frozen=True)
class Authority:
    """Where `init_authority` put things."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    admin_credential: Path


@dataclass(frozen=True)
class SiteRecord:
    """One site in the registry, as `fedcare certs list` shows it (never the token)."""

    site_id: str
    issued: str
    revoked: str | None


def init_authority(directory: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 365) -> Authority:
    """Create the CA, the coordinator's certificate for `hosts` (DNS names or IP addresses), an empty
    registry and the admin credential. Refuses to touch an existing authority: its keys and tokens
    are in use at the sites."""
    directory = Path(directory)
    names = _host_names([hosts] if isinstance(hosts, str) else list(hosts))
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a whole number >= 1, not {days!r}")
    existing = [n for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, REGISTRY, ADMIN) if (directory / n).exists()]
    if existing:
        raise ConfigError(f"{directory} already holds an authority ({existing[0]}); it is in use at the sites, "
                          "so it is never overwritten: choose another directory or remove this one yourself")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # 5 min: clock skew at sites
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcare private CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcare consortium")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(cert_sign=True), critical=True)
               .add_extension(ca_ski, critical=False)
               .sign(ca_key, hashes.SHA256()))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(names[0].value))]))
                   .issuer_name(ca_name)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(cert_sign=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
                   .sign(ca_key, hashes.SHA256()))

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    admin_token = _new_token()
    _write(directory / CA_KEY, _key_pem(ca_key), secret=True)
    _write(directory / CA_CERT, ca_pem)
    _write(directory / SERVER_KEY, _key_pem(server_key), secret=True)
    _write(directory / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM))
    _write_json(directory / ADMIN, {"token": admin_token, "ca_pem": ca_pem.decode("ascii")}, secret=True)
    # last: a crash before this line leaves no registry, so no coordinator starts on a half-made authority
    _write_json(directory / REGISTRY, {"version": 1, "admin_token_sha256": _sha256(admin_token), "sites": {}}, secret=True)
    return Authority(directory, directory / CA_CERT, directory / SERVER_CERT, directory / SERVER_KEY, directory / ADMIN)


def issue_site(directory: Path, site_id: str) -> Path:
    """Write `sites/<site_id>.json` with a new token and record its hash. Issuing to a site that
    already has a token (active or revoked) replaces it: the old token stops working. A site keeps
    its place in the registry's order, so the federation's site order does not change."""
    directory = Path(directory)
    check_site_id(site_id)
    registry = _read_registry(directory)
    token = _new_token()
    ca_pem = _read_file(directory / CA_CERT, "the CA certificate").decode("ascii")
    (directory / SITES).mkdir(mode=0o700, exist_ok=True)
    path = directory / SITES / f"{site_id}.json"
    _write_json(path, {"site_id": site_id, "token": token, "ca_pem": ca_pem}, secret=True)
    registry["sites"][site_id] = {"token_sha256": _sha256(token), "issued": _now(), "revoked": None}
    _write_json(directory / REGISTRY, registry, secret=True)
    return path


def revoke_site(directory: Path, site_id: str) -> None:
    """Mark a site revoked: a running coordinator refuses its token from its next request on.
    Revoking a revoked site changes nothing; issuing to it again gives it a new token."""
    directory = Path(directory)
    check_site_id(site_id)
    registry = _read_registry(directory)
    entry = registry["sites"].get(site_id)
    if entry is None:
        raise ConfigError(f"no site '{site_id}' in {directory / REGISTRY}; `fedcare certs list --dir {directory}` shows them")
    if entry["revoked"] is None:
        entry["revoked"] = _now()
        _write_json(directory / REGISTRY, registry, secret=True)


def list_sites(directory: Path) -> list[SiteRecord]:
    """Every site ever issued, active or revoked, in registry order."""
    sites = _read_registry(Path(directory))["sites"]
    return [SiteRecord(s, e["issued"], e["revoked"]) for s, e in sites.items()]


def check_site_id(site_id: str) -> str:
    """Site ids name files and appear in URLs: 1-64 of A-Z a-z 0-9 . _ -, not starting with '.'."""
    if not isinstance(site_id, str) or not _SITE_ID.fullmatch(site_id):
        raise ConfigError(f"site id {site_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
                          "not starting with '.'")
    return site_id


# ---------------------------------------------------------------- the coordinator's side


class Registry:
    """The coordinator's view of `registry.json`: which token belongs to which active site.

    Each lookup checks whether the file changed (a cheap `stat`) and re-reads it if so, so a
    revocation or a new site takes effect without restarting the coordinator. If the file becomes
    unreadable, lookups raise `ConfigError` rather than keep trusting tokens that may be revoked."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, ...] | None = None
        self._state: tuple[list[tuple[str, str]], str] = ([], "")
        self._refresh()

    @classmethod
    def load(cls, directory: Path) -> "Registry":
        return cls(Path(directory) / REGISTRY)

    def site_for(self, token: str) -> str | None:
        """The active site holding `token`, or None (unknown, revoked, malformed)."""
        active, _ = self._refresh()
        digest = _presented_digest(token)
        found = None
        for site_id, expected in active:  # every entry, no early exit: timing says nothing about which matched
            if hmac.compare_digest(expected, digest):
                found = site_id
        return found

    def is_admin(self, token: str) -> bool:
        _, admin = self._refresh()
        return hmac.compare_digest(admin, _presented_digest(token))

    def site_ids(self) -> list[str]:
        """Active sites in the order first issued."""
        return [site_id for site_id, _ in self._refresh()[0]]

    def _refresh(self) -> tuple[list[tuple[str, str]], str]:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise ConfigError(f"cannot read the registry {self._path} ({exc.strerror}); "
                              "run `fedcare certs init` to create an authority") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            registry = _read_registry(self._path.parent)
            active = [(s, e["token_sha256"]) for s, e in registry["sites"].items() if e["revoked"] is None]
            self._state = (active, registry["admin_token_sha256"])  # one assignment: readers see old or new
            self._stamp = stamp
        return self._state


def server_tls_files(directory: Path) -> tuple[Path, Path]:
    """(certfile, keyfile) for uvicorn's `ssl_certfile` / `ssl_keyfile`."""
    directory = Path(directory)
    pair = (directory / SERVER_CERT, directory / SERVER_KEY)
    for path in pair:
        if not path.is_file():
            raise ConfigError(f"{path} is missing; run `fedcare certs init --dir {directory}` first")
    return pair


# ---------------------------------------------------------------- the site's (and admin's) side


@dataclass(frozen=True)
class SiteCredential:
    """What a site agent needs to reach the coordinator: its id, its token, the CA to pin."""

    site_id: str
    token: str
    ca_pem: bytes

    def __repr__(self) -> str:  # the token must not end up in logs or tracebacks
        return f"SiteCredential(site_id={self.site_id!r}, token=<hidden>)"

    @classmethod
    def load(cls, path: Path) -> "SiteCredential":
        data = _read_credential(Path(path), ("site_id", "token", "ca_pem"))
        try:
            check_site_id(data["site_id"])
        except ConfigError as exc:
            raise ConfigError(f"site credential {path} is corrupt: {exc}") from None
        return cls(data["site_id"], data["token"], data["ca_pem"].encode("ascii"))


@dataclass(frozen=True)
class AdminCredential:
    """The consortium admin's token (start and stop runs) and the CA to pin."""

    token: str
    ca_pem: bytes

    def __repr__(self) -> str:
        return "AdminCredential(token=<hidden>)"

    @classmethod
    def load(cls, path: Path) -> "AdminCredential":
        data = _read_credential(Path(path), ("token", "ca_pem"))
        return cls(data["token"], data["ca_pem"].encode("ascii"))


def client_ssl_context(ca_pem: bytes) -> ssl.SSLContext:
    """TLS context for agents and admin tools: trusts the private CA only (no system CAs, so a
    certificate from any public CA is refused), checks the host name, TLS 1.2 or newer."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the CA certificate is not valid PEM ({exc})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx  # create_default_context already sets CERT_REQUIRED and check_hostname


# ---------------------------------------------------------------- helpers


def _new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _presented_digest(token: object) -> str:
    """Hash of a token from the network; something that cannot be a token hashes to a value no entry has."""
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
        return "-" * 64
    try:
        return _sha256(token)
    except UnicodeEncodeError:
        return "-" * 64


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise ConfigError("give at least one host name or IP address for the coordinator's certificate")
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str):
            raise ConfigError(f"host {host!r} must be a string")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _HOSTNAME.fullmatch(host):
            raise ConfigError(f"host {host!r} is neither an IP address nor a DNS name (letters, digits, '-', '.')")
        names.append(x509.DNSName(host.lower()))
    return names


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, encipher_only=False, decipher_only=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Atomic write: a temporary file created with its final mode (0600 for secrets, so the bytes
    are never readable by others, not even briefly), then renamed over `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: dict, secret: bool = False) -> None:
    _write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"), secret)


def _read_file(path: Path, what: str, hint: str = "") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        hint = hint or f"run `fedcare certs init --dir {path.parent}` first"
        raise ConfigError(f"{what} {path} does not exist; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path} ({exc.strerror})") from None


def _read_registry(directory: Path) -> dict:
    path = directory / REGISTRY
    raw = _read_file(path, "the registry")
    try:
        registry = json.loads(raw)
        sites = registry["sites"]
        ok = (isinstance(sites, dict) and _SHA256_HEX.fullmatch(registry["admin_token_sha256"]) is not None
              and all(_SITE_ID.fullmatch(s) and _SHA256_HEX.fullmatch(e["token_sha256"])
                      and isinstance(e["issued"], str) and (e["revoked"] is None or isinstance(e["revoked"], str))
                      for s, e in sites.items()))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"the registry {path} is corrupt; restore it from a backup")
    return registry


def _read_credential(path: Path, keys: tuple[str, ...]) -> dict:
    raw = _read_file(path, "credential file", "ask the consortium's admin for one (`fedcare certs site NAME`)")
    try:
        data = json.loads(raw)
        ok = all(isinstance(data[k], str) and data[k] for k in keys)
    except (ValueError, KeyError, TypeError):
        ok = False
    if ok:
        try:
            x509.load_pem_x509_certificate(data["ca_pem"].encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            ok = False
    if not ok:
        raise ConfigError(f"credential file {path} is corrupt: ask the consortium's admin for a new one")
    return data
