"""Certificates for the TLS tests, made when the tests run: no private key is ever committed.

`make_pki(directory)` writes PEM files of
- `ca`: the test CA that signs the servers' and the clients' certificates;
- `server`: ECDSA P-256, for `localhost` and `127.0.0.1`, from `ca`;
- `sni`: for `scores.test` (`SNI_NAME`), from `ca`, served to clients that ask for that name;
- `client`: CN `backend-1`, from `ca`, for client authentication;
- `other_ca` and `other_client`: a second CA, and a client certificate from it;
- `other_server`: for `localhost` and `127.0.0.1` again, from `other_ca` (a certificate
  "B" to reload on SIGHUP);
- `expired_client`: CN `expired-1`, from `ca`, that stopped being valid yesterday.

`pki` is the session-scoped fixture (tests/conftest.py) holding them all.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SNI_NAME = "scores.test"
CLIENT_NAME = "backend-1"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in memory and as PEM files."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def common_name(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    sni: Issued
    client: Issued
    other_ca: Issued
    other_client: Issued
    other_server: Issued
    expired_client: Issued


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fanfare tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(directory: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_file = directory / f"{name}.pem"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_file.chmod(0o600)
    return Issued(name, cert, key, cert_file, key_file)


def _ca(directory: Path, name: str, common_name: str, now: datetime.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def _leaf(directory: Path, name: str, issuer: Issued, common_name: str, *, server: bool,
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
          not_before: datetime.datetime, not_after: datetime.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _write(directory, name, builder.sign(issuer.key, hashes.SHA256()), key)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_before": now - datetime.timedelta(hours=1),
             "not_after": now + datetime.timedelta(days=7)}
    ca = _ca(directory, "ca", "fanfare test CA", now)
    other_ca = _ca(directory, "other-ca", "fanfare other CA", now)
    loopback = {"dns": ("localhost",), "ips": ("127.0.0.1",)}
    return Pki(
        ca=ca,
        server=_leaf(directory, "server", ca, "localhost", server=True, **loopback, **valid),
        sni=_leaf(directory, "sni", ca, SNI_NAME, server=True, dns=(SNI_NAME,), **valid),
        client=_leaf(directory, "client", ca, CLIENT_NAME, server=False, **valid),
        other_ca=other_ca,
        other_client=_leaf(directory, "other-client", other_ca, "intruder-1", server=False,
                           **valid),
        other_server=_leaf(directory, "other-server", other_ca, "localhost", server=True,
                           **loopback, **valid),
        expired_client=_leaf(
            directory, "expired-client", ca, "expired-1", server=False,
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1),
        ),
    )
