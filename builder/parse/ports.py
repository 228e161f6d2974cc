"""EXPOSE's port specs, read by Docker's rules: `PORT`, `PORT/PROTO`, `LOW-HIGH[/PROTO]`.

Used by the parser for words without variables and by the build after expansion, so `EXPOSE abc`
fails where it is written and `EXPOSE $PORT` where its value is known.
"""
from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("tcp", "udp", "sctp")
MAX_PORT = 65535


class PortSpecError(ValueError):
    """`message` says what is wrong; the caller adds the position."""


@dataclass(frozen=True)
class PortSpec:
    """One EXPOSE word: a port or range and its protocol."""

    low: int
    high: int
    protocol: str

    def entries(self) -> list[str]:
        """The config's ExposedPorts keys: one per port of a range."""
        return [f"{number}/{self.protocol}" for number in range(self.low, self.high + 1)]


def parse_port_spec(word: str) -> PortSpec:
    port, slash, protocol = word.partition("/")
    protocol = protocol.lower() if slash and protocol else "tcp"
    if protocol not in PROTOCOLS:
        raise PortSpecError(f"invalid protocol {protocol!r} in EXPOSE {word!r}")
    low_text, dash, high_text = port.partition("-")
    low = _port_number(low_text, word)
    high = _port_number(high_text, word) if dash else low
    if high < low:
        raise PortSpecError(f"invalid port range {port!r}: the end is below the start")
    return PortSpec(low, high, protocol)


def _port_number(text: str, word: str) -> int:
    # ASCII digits only (int() takes "٣" and "1_0"), and few of them, before converting.
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > MAX_PORT:
        raise PortSpecError(f"invalid port {text!r} in EXPOSE {word!r}")
    return int(text)
