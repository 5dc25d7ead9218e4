"""Each serial calibrator and the radio-TLC scanner against its expected conversation.

The bytes below are written from the protocol notes in docs/instruments.md (never from the
drivers or simulators), and the driver talks to them over an in-memory null modem: a request
that differs by one byte, a request never made, or one more than the notes call for fails the
test. The same drivers are tested over real sockets and PTYs against simulators and
independent peers elsewhere.
"""

from __future__ import annotations

import pytest

from daq.clock import SystemClock
from daq.errors import ProtocolError
from daq.model import Quality
from daq.transport import null_modem
from drivers.base import Deadline
from drivers.biodex_atomlab500 import Atomlab500Config, Atomlab500Driver
from drivers.capintec_crc35r import Crc35rConfig, Crc35rDriver
from drivers.comecer_vik202 import Vik202Config, Vik202Driver
from drivers.rtlc_scanner import RtlcScannerConfig, RtlcScannerDriver
from drivers.veenstra_vdc404 import Vdc404Config, Vdc404Driver
from tests.conversation import ExpectedConversation

PORT = "/dev/ttyUSB9"


def crc_frame(command: bytes) -> bytes:
    """A CRC-35R frame by the notes: STX, 'A' + length, the command, checksum, ETX."""
    length = 0x41 + len(command)
    checksum = ((0x02 + length + sum(command)) & 0x7F) + 0x21
    return bytes([0x02, length]) + command + bytes([checksum, 0x03])


def test_crc_frame_is_the_worked_example() -> None:
    assert crc_frame(b"R1") == bytes.fromhex("02 43 52 31 69 03")


async def test_null_modem_carries_bytes_both_ways_and_eof() -> None:
    a, b = null_modem()
    await a.write(b"ping\r\n")
    assert await b.read_until(b"\n", 1.0) == b"ping\r\n"
    await b.write(b"pong\n")
    assert await a.read_until(b"\n", 1.0) == b"pong\n"
    await a.close()
    with pytest.raises(Exception, match="closed the connection"):
        await b.read_until(b"\n", 1.0)
    await b.close()


async def test_expected_conversation_fails_on_a_wrong_byte_and_an_unused_exchange() -> None:
    conversation = ExpectedConversation([(b"R1\r", b"ok\r"), (b"R2\r", b"ok\r")])
    link = await conversation.factory(PORT)
    await link.write(b"R1\n")
    await link.close()
    with pytest.raises(AssertionError, match=r"expected b'R1\\r', got b'R1\\n'"):
        await conversation.__aexit__(None, None, None)
    assert "never used" in "\n".join(conversation.errors)


async def test_expected_conversation_fails_on_an_extra_request() -> None:
    conversation = ExpectedConversation([(b"R1\r", b"ok\r")])
    link = await conversation.factory(PORT)
    await link.write(b"R1\r")
    assert await link.read_until(b"\r", 1.0) == b"ok\r"
    await link.write(b"R1\r")
    with pytest.raises(AssertionError, match="after the last expected exchange"):
        await conversation.__aexit__(None, None, None)
    await link.close()


async def test_crc35r_reads_two_chambers() -> None:
    cfg = Crc35rConfig(name="crc", kind="capintec-crc35r", port=PORT, chambers=[1, 2])
    async with ExpectedConversation(
        [
            (crc_frame(b"R1"), crc_frame(b"DR1,F18   , 16.564")),  # 16.56 MBq (unit code 4)
            (crc_frame(b"R2"), crc_frame(b"DR2,123&2 ,  1.205")),  # 1.20 GBq, a calibration number
        ]
    ) as talk:
        driver = Crc35rDriver(cfg, SystemClock(), link_factory=talk.factory)
        await driver.connect()
        rows = await driver.read(Deadline.after(driver.clock, 0.5))
        await driver.close()
    assert talk.url == PORT
    assert talk.line_settings["baudrate"] == 4800
    one, two = rows
    assert (one.channel, one.value, one.quality) == ("chamber1", 16560000.0, Quality.GOOD)
    assert one.attrs is not None
    assert one.attrs["nuclide"] == "F-18"
    assert (two.channel, two.value) == ("chamber2", 1200000000.0)
    assert two.attrs is not None
    assert two.attrs["nuclide"] is None
    assert two.attrs["cal"] == "123&2"


async def test_crc35r_bad_checksum_is_that_chambers_parse_error_with_the_raw_reply() -> None:
    cfg = Crc35rConfig(name="crc", kind="capintec-crc35r", port=PORT, chambers=[1])
    good = crc_frame(b"DR1,F18   , 16.564")
    bad = good[:-2] + bytes([good[-2] ^ 0x01, 0x03])
    async with ExpectedConversation([(crc_frame(b"R1"), bad)]) as talk:
        driver = Crc35rDriver(cfg, SystemClock(), link_factory=talk.factory)
        await driver.connect()
        [row] = await driver.read()
        await driver.close()
    assert (row.quality, row.reason, row.raw) == (Quality.BAD, "parse_error", bad)


@pytest.mark.parametrize(("query", "request_bytes"), [("1", b"1\r"), ("^C", b"\x03")])
async def test_atomlab500_reads_the_activity(query: str, request_bytes: bytes) -> None:
    cfg = Atomlab500Config.model_validate(
        {"name": "atom", "kind": "biodex-atomlab500", "port": PORT, "query": query}
    )
    async with ExpectedConversation([(request_bytes, b"Tc99m 12.34 mCi\r\n")]) as talk:
        driver = Atomlab500Driver(cfg, SystemClock(), link_factory=talk.factory)
        await driver.connect()
        [row] = await driver.read()
        await driver.close()
    assert talk.line_settings["baudrate"] == 19200
    assert row.value == 456580000.0  # 12.34 x 37 MBq, exactly
    assert row.attrs is not None
    assert (row.attrs["nuclide"], row.attrs["nuclide_shown"], row.attrs["reported_unit"]) == (
        "Tc-99m",
        "Tc99m",
        "mCi",
    )


async def test_vdc404_only_listens_and_refuses_a_line_that_lost_a_byte() -> None:
    cfg = Vdc404Config(name="vdc", kind="veenstra-vdc404", port=PORT)
    async with ExpectedConversation(
        [(None, b"Lu-177: 7.403 GBq\r\n"), (None, b"Lu-177: .403 GBq\r\n")]
    ) as talk:
        driver = Vdc404Driver(cfg, SystemClock(), link_factory=talk.factory)
        await driver.connect()
        [row] = await driver.read()
        with pytest.raises(ProtocolError) as bad:
            await driver.read()
        await driver.close()
    assert row.value == 7403000000.0
    assert row.attrs is not None
    assert row.attrs["nuclide"] == "Lu-177"
    assert bad.value.raw == b"Lu-177: .403 GBq\r\n"


async def test_vik202_device_information_then_factor_and_activity() -> None:
    cfg = Vik202Config(name="vik", kind="comecer-vik202", port=PORT)
    async with ExpectedConversation(
        [
            (b"!GV\r", b"2.1\r"),
            (b"!GQ\r", b"1.25E-11\r"),
            (b"!V\r", b"297\r"),
            (b"!GF\r", b"762\r"),
            # One poll: the factor (it can change at the console), then the activity in Bq,
            # acknowledged with >OK first.
            (b"!GF\r", b"762\r"),
            (b"!R\r", b">OK\r350000000\r"),
        ]
    ) as talk:
        driver = Vik202Driver(cfg, SystemClock(), link_factory=talk.factory)
        info = await driver.connect()
        [row] = await driver.read()
        await driver.close()
    assert info.firmware == "2.1"
    assert info.extra["chamber_current_a"] == 1.25e-11
    assert info.extra["hv_battery_v"] == 297.0
    assert row.value == 350000000.0
    assert row.attrs is not None
    assert row.attrs["nuclide"] == "F-18"


async def test_rtlc_scanner_start_line_points_and_end() -> None:
    cfg = RtlcScannerConfig(name="tlc", kind="rtlc-scanner", port=PORT)
    async with ExpectedConversation(
        [(b"B-7,ana,1,1\n", b"5; 48\n10; 12\nend\n")]  # range 1 mm: positions 0.5 and 1.0 mm
    ) as talk:
        driver = RtlcScannerDriver(cfg, SystemClock(), link_factory=talk.factory)
        await driver.connect()
        scan = await driver.start_scan(batch="B-7", operator="ana", range_mm=1, time_min=1)
        rows = []
        while not scan.done.is_set():
            rows.extend(await driver.read())
        await driver.close()
    counts = [(r.attrs or {}).get("position_mm") for r in rows if r.channel == "counts"]
    assert counts == [0.5, 1.0]
    assert [r.value for r in rows if r.channel == "counts"] == [48.0, 12.0]
    assert scan.complete
