"""Test certificates for OPC UA security: self-signed application instance certificates.

Generated with ``cryptography`` (through asyncua's ``cert_gen``, which follows OPC 10000-4
6.1 / OPC 10000-6 6.2.2) into a directory per test session; nothing is committed.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

SERVER_URI = "urn:freeopcua:python:server"  # asyncua's default server application URI
CLIENT_URI = "urn:hotcell-daq:opcua-client"  # the driver's default application_uri


@dataclasses.dataclass(frozen=True)
class CertPair:
    cert: Path  # DER
    key: Path  # PEM (PKCS8, unencrypted)
    cert_pem: Path


def make_pair(directory: Path, name: str, uri: str, *, server: bool) -> CertPair:
    """A fresh 2048-bit key and a self-signed certificate for ``uri`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    host = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        f"hotcell-daq test {name}",
        {"organizationName": "hotcell-daq tests"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH],
        days=30,
    )
    # Keys live apart from the certificates: a certificate directory doubles as a trust list.
    (directory / "private").mkdir(exist_ok=True)
    pair = CertPair(
        directory / f"{name}.der", directory / "private" / f"{name}-key.pem", directory / f"{name}.pem"
    )
    pair.cert.write_bytes(cert.public_bytes(Encoding.DER))
    pair.cert_pem.write_bytes(cert.public_bytes(Encoding.PEM))
    pair.key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return pair
