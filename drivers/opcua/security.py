"""Message security of an OPC UA connection: the endpoint, the server certificate check, the
user's password.

The endpoint with exactly the configured policy and mode is used or the connection fails:
there is no fallback to a weaker one. The server certificate is either pinned or must be in,
or issued by a CA in, the trust list; it is checked before anything is encrypted to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.errors import ConfigError, ConnectError
from daq.secrets import resolve_secret
from drivers.opcua.config import OpcUaSecurity
from drivers.opcua.errors import map_exceptions

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.crypto import security_policies
    from cryptography import x509


def _policy(name: str) -> type[security_policies.SecurityPolicy]:
    from asyncua.crypto import security_policies

    policies: dict[str, type[security_policies.SecurityPolicy]] = {
        "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
        "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
    }
    return policies[name]


def _mode(name: str) -> ua.MessageSecurityMode:
    from asyncua import ua

    return {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}[
        name
    ]


def password(env: str | None, credential: str | None, instrument: str) -> str | None:
    """The user's password, resolved by :func:`daq.secrets.resolve_secret` (the one secret
    reader), or ``None`` when the config names none. A missing or empty secret is a
    :class:`ConnectError` naming the key: the supervisor records it and tries again, so a
    credential provided later is picked up without a restart."""
    if not env and not credential:
        return None
    what = f"{instrument}: " + ("password_env" if env else "password_credential")
    try:
        return resolve_secret(env, credential, what)
    except ConfigError as exc:
        raise ConnectError(str(exc)) from None


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":")


def _first_cert(der: bytes) -> bytes:
    # A server may send its certificate followed by its chain: keep the leading DER SEQUENCE.
    length = int.from_bytes(der[2:4], "big") + 4 if len(der) > 4 and der[1] == 0x82 else len(der)
    return der[:length]


def _load_dir(directory: Path) -> list[x509.Certificate]:
    from cryptography import x509

    certs = []
    for path in sorted(directory.glob("*")):
        if path.suffix.lower() == ".pem":
            certs.append(x509.load_pem_x509_certificate(path.read_bytes()))
        elif path.suffix.lower() == ".der":
            certs.append(x509.load_der_x509_certificate(path.read_bytes()))
    return certs


def _describe_cert(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (SHA-256 {fingerprint(cert)})"


def _pin_checker(pinned: x509.Certificate, path: str) -> Any:
    pinned_der = _der(pinned)

    async def check(cert: x509.Certificate, _app: Any) -> None:
        if _der(cert) != pinned_der:
            raise ConnectError(
                f"server certificate {_describe_cert(cert)} is not the pinned certificate {path} "
                f"({_describe_cert(pinned)}); refusing to connect"
            )

    return check


async def _trust_checker(directory: Path) -> Any:
    """A check that accepts a certificate listed in ``directory`` or issued by a CA listed there."""
    from asyncua.crypto.truststore import TrustStore

    try:
        trusted = _load_dir(directory)
        store = TrustStore([directory], [])
        await store.load_trust()
    except (OSError, ValueError) as exc:
        raise ConnectError(f"cannot load the trust list {str(directory)!r}: {exc}") from exc
    trusted_der = {_der(c) for c in trusted}

    async def check(cert: x509.Certificate, _app: Any) -> None:
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ConnectError(
                f"server certificate {_describe_cert(cert)} is outside its validity "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
                "refusing to connect"
            )
        if _der(cert) in trusted_der:
            return
        if any(c.subject == cert.issuer for c in trusted) and store.is_trusted(cert):
            return
        raise ConnectError(
            f"server certificate {_describe_cert(cert)} is not trusted: neither it nor its issuer is in "
            f"the trust list {str(directory)!r}; refusing to connect"
        )

    return check


async def secure(client: Client, sec: OpcUaSecurity, url: str, name: str) -> None:
    """Set ``client`` up for the configured message security, after checking the server's
    certificate; raises :class:`ConnectError`. Nothing to do for mode ``None``."""
    from asyncua.crypto import uacrypto

    if sec.mode == "None":
        return
    assert sec.policy is not None
    assert sec.certificate_file is not None
    assert sec.private_key_file is not None
    policy = _policy(sec.policy)
    mode = _mode(sec.mode)
    for what, path in (
        ("certificate_file", sec.certificate_file),
        ("private_key_file", sec.private_key_file),
    ):
        if not path.is_file():
            raise ConnectError(f"{name}: security.{what} {str(path)!r} does not exist")
    if sec.server_certificate_file is not None:
        try:
            pinned = await uacrypto.load_certificate(sec.server_certificate_file)
        except Exception as exc:
            raise ConnectError(f"{name}: cannot load security.server_certificate_file: {exc}") from exc
        check = _pin_checker(pinned, str(sec.server_certificate_file))
    else:
        assert sec.trust_list_dir is not None
        try:
            check = await _trust_checker(sec.trust_list_dir)
        except ConnectError as exc:
            raise ConnectError(f"{name}: {exc}") from exc
    # The certificate is checked before anything is encrypted to it, and again by
    # create_session (asyncua calls certificate_validator with the session's certificate).
    cert = await _endpoint_certificate(client, sec, url, name, policy, mode)
    try:
        await check(cert, None)
    except ConnectError as exc:
        raise ConnectError(f"{name}: {exc}") from exc
    # The exact policy and mode of the checked endpoint: asyncua never downgrades it.
    await client.set_security(
        policy,
        str(sec.certificate_file),
        str(sec.private_key_file),
        server_certificate=_der(cert),
        mode=mode,
    )
    client.certificate_validator = check


async def _endpoint_certificate(
    client: Client,
    sec: OpcUaSecurity,
    url: str,
    name: str,
    policy: type[security_policies.SecurityPolicy],
    mode: ua.MessageSecurityMode,
) -> x509.Certificate:
    """The certificate of the endpoint with exactly ``policy`` and ``mode``, or ConnectError."""
    from cryptography import x509

    with map_exceptions(f"{name}: cannot list endpoints of {url}"):
        endpoints = await client.connect_and_get_server_endpoints()
    matching = [ep for ep in endpoints if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode]
    if not matching:
        offered = sorted(
            {f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints}
        )
        raise ConnectError(
            f"{name}: server offers no endpoint with {sec.policy} "
            f"{sec.mode} (offered: {', '.join(offered)}); not falling back to another"
        )
    der = matching[0].ServerCertificate
    if not der:
        raise ConnectError(f"{name}: the server's endpoint carries no certificate")
    try:
        return x509.load_der_x509_certificate(_first_cert(der))
    except ValueError as exc:
        raise ConnectError(f"{name}: the server's certificate does not parse: {exc}") from exc
