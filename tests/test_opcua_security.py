"""OPC UA message security and user authentication against the simulator's asyncua server.

The server has a certificate of its own and offers Basic256Sha256 (Sign, SignAndEncrypt)
and Aes256_Sha256_RsaPss (SignAndEncrypt only, so that a missing endpoint can be asked
for), no unsecured endpoint, and one user whose password it reads from ``$SIM_OPCUA_PW``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509

from daq.clock import SystemClock
from daq.errors import ConnectError
from daq.model import Quality
from drivers.opcua import OpcUaConfig, OpcUaDriver, fingerprint
from simulators.synth_opcua import SynthOpcUaSimulator, node_id
from tests.certs import CLIENT_URI, SERVER_URI, CertPair, make_pair

module_loop = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "correct horse battery staple"


class Pki:
    def __init__(self, root: Path):
        self.server = make_pair(root / "server", "server", SERVER_URI, server=True)
        self.impostor = make_pair(root / "impostor", "impostor", SERVER_URI, server=True)
        self.client = make_pair(root / "client", "client", CLIENT_URI, server=False)
        self.trusted = root / "server"  # holds only the server's certificate (DER and PEM)
        self.untrusted = root / "impostor"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def _sim_password() -> Iterator[None]:
    os.environ["SIM_OPCUA_PW"] = PASSWORD
    yield
    os.environ.pop("SIM_OPCUA_PW", None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(pki: Pki, _sim_password: None) -> AsyncIterator[str]:
    sim = SynthOpcUaSimulator(
        options={
            "certificate": str(pki.server.cert),
            "private_key": str(pki.server.key),
            "security": "Basic256Sha256_Sign,Basic256Sha256_SignAndEncrypt,Aes256Sha256RsaPss_SignAndEncrypt",
            "users": "operator:SIM_OPCUA_PW",
            "update_s": "0.05",
        }
    )
    listener = await sim.serve("opc.tcp://127.0.0.1:0")
    yield listener.url
    await listener.close()


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DAQ_OPCUA_PW", PASSWORD)
    return "DAQ_OPCUA_PW"


def secure_config(url: str, client: CertPair, password_env: str, **security: Any) -> OpcUaConfig:
    return OpcUaConfig(
        name="synth-sec",
        kind="opcua",
        url=url,
        username="operator",
        password_env=password_env,
        security={"certificate_file": str(client.cert), "private_key_file": str(client.key), **security},  # type: ignore[arg-type]
        nodes=[{"channel": "reactor_temp", "node_id": node_id("reactor_temp"), "unit": "degC"}],  # type: ignore[list-item]
    )


async def first_good(driver: OpcUaDriver) -> None:
    await driver.connect()
    async with asyncio.timeout(10):
        while True:
            rows = await driver.read()
            if any(r.quality is Quality.GOOD and r.value is not None for r in rows):
                break
    await driver.close()


@module_loop
@pytest.mark.parametrize(
    ("mode", "policy", "check"),
    [
        ("SignAndEncrypt", "Basic256Sha256", "trust_list_dir"),
        ("SignAndEncrypt", "Aes256_Sha256_RsaPss", "trust_list_dir"),
        ("SignAndEncrypt", "Aes256_Sha256_RsaPss", "server_certificate_file"),
        ("Sign", "Basic256Sha256", "server_certificate_file"),
    ],
)
async def test_secure_connection_with_trusted_certificates(
    url: str, pki: Pki, password: str, mode: str, policy: str, check: str
) -> None:
    where = str(pki.trusted) if check == "trust_list_dir" else str(pki.server.cert_pem)
    driver = OpcUaDriver(secure_config(url, pki.client, password, mode=mode, policy=policy, **{check: where}),
                         SystemClock())  # fmt: skip
    await first_good(driver)


@module_loop
async def test_untrusted_server_certificate_is_refused_with_a_clear_error(
    url: str, pki: Pki, password: str
) -> None:
    cfg = secure_config(url, pki.client, password, mode="SignAndEncrypt", policy="Basic256Sha256",
                        trust_list_dir=str(pki.untrusted))  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError) as info:
        await driver.connect()
    await driver.close()
    message = str(info.value)
    assert "is not trusted" in message
    assert str(pki.untrusted) in message
    served = pki.server.cert.read_bytes()

    assert fingerprint(x509.load_der_x509_certificate(served)) in message


@module_loop
async def test_pinned_certificate_mismatch_is_refused(url: str, pki: Pki, password: str) -> None:
    cfg = secure_config(url, pki.client, password, mode="SignAndEncrypt", policy="Basic256Sha256",
                        server_certificate_file=str(pki.impostor.cert))  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError, match="is not the pinned certificate"):
        await driver.connect()
    await driver.close()


@module_loop
async def test_missing_policy_is_refused_never_a_weaker_fallback(url: str, pki: Pki, password: str) -> None:
    cfg = secure_config(url, pki.client, password, mode="Sign", policy="Aes256_Sha256_RsaPss",
                        trust_list_dir=str(pki.trusted))  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError, match=r"no endpoint with Aes256_Sha256_RsaPss Sign.*not falling back"):
        await driver.connect()
    await driver.close()


@module_loop
async def test_unsecured_client_is_refused_by_a_secure_only_server(url: str) -> None:
    cfg = OpcUaConfig(
        name="plain",
        kind="opcua",
        url=url,
        nodes=[{"channel": "t", "node_id": node_id("reactor_temp")}],  # type: ignore[list-item]
    )
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError, match="SecurityPolicy#None"):
        await driver.connect()
    await driver.close()


@module_loop
async def test_wrong_password_is_refused(url: str, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAQ_OPCUA_PW", "not the password")
    cfg = secure_config(url, pki.client, "DAQ_OPCUA_PW", mode="SignAndEncrypt", policy="Basic256Sha256",
                        trust_list_dir=str(pki.trusted))  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError, match="BadUserAccessDenied"):
        await driver.connect()
    await driver.close()


@module_loop
async def test_password_from_a_systemd_credential(
    url: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "synth-opcua-password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = OpcUaConfig(
        name="synth-sec", kind="opcua", url=url, username="operator", password_credential="synth-opcua-password",
        security={"mode": "SignAndEncrypt", "policy": "Basic256Sha256", "certificate_file": str(pki.client.cert),  # type: ignore[arg-type]
                  "private_key_file": str(pki.client.key), "trust_list_dir": str(pki.trusted)},
        nodes=[{"channel": "reactor_temp", "node_id": node_id("reactor_temp")}],  # type: ignore[list-item]
    )  # fmt: skip
    await first_good(OpcUaDriver(cfg, SystemClock()))


@module_loop
async def test_missing_client_key_is_a_clear_error(url: str, pki: Pki, password: str, tmp_path: Path) -> None:
    cfg = OpcUaConfig(
        name="synth-sec", kind="opcua", url=url, username="operator", password_env=password,
        security={"mode": "SignAndEncrypt", "policy": "Basic256Sha256", "certificate_file": str(pki.client.cert),  # type: ignore[arg-type]
                  "private_key_file": str(tmp_path / "nope.pem"), "trust_list_dir": str(pki.trusted)},
        nodes=[{"channel": "reactor_temp", "node_id": node_id("reactor_temp")}],  # type: ignore[list-item]
    )  # fmt: skip
    driver = OpcUaDriver(cfg, SystemClock())
    with pytest.raises(ConnectError, match=r"private_key_file .* does not exist"):
        await driver.connect()
    await driver.close()
