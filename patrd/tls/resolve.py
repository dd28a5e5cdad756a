"""Does a name resolve to this host? Asked before ordering, so that a name
whose DNS points elsewhere never burns a failed authorization at the CA.

"This host" means an address a socket can be bound to here (any address of
any interface, loopback included), plus the configured
``acme.public_addresses`` (a VPS behind 1:1 NAT does not see its public
address on an interface). Names are resolved by the system resolver, or by
``acme.resolver`` (``host:port``, A and AAAA over UDP) when set: point it at
a public resolver to check what the CA will see rather than /etc/hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct

TIMEOUT_S = 3.0
_A = 1
_AAAA = 28


class ResolveError(Exception):
    pass


async def addresses(name: str, resolver: tuple[str, int] | None) -> set[str]:
    """The A and AAAA addresses of ``name`` (empty: it does not resolve)."""
    if resolver is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return set()
        return {str(info[4][0]) for info in infos}
    found: set[str] = set()
    for qtype in (_A, _AAAA):
        found |= await asyncio.to_thread(query, name, qtype, resolver)
    return found


def is_local(address: str) -> bool:
    """True when a socket can bind ``address``: it belongs to this host."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(ip), 0))
        except OSError:
            return False
    return True


async def check(
    name: str, resolver: tuple[str, int] | None, public: frozenset[str]
) -> tuple[bool, str]:
    """``(True, "")`` if ``name`` resolves to an address of this host, else why not."""
    found = await addresses(name, resolver)
    if not found:
        return False, f"{name} does not resolve"
    here = sorted(a for a in found if a in public or is_local(a))
    if not here:
        return False, f"{name} resolves to {', '.join(sorted(found))}, not to this host"
    return True, ""


# --- a minimal DNS client (RFC 1035), enough for A/AAAA answers ---------------


def query(name: str, qtype: int, server: tuple[str, int]) -> set[str]:
    """Blocking: ask ``server`` for ``name``'s records of ``qtype`` (A or AAAA)."""
    qid = secrets.randbits(16)
    packet = _question(name, qtype, qid)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S)
        try:
            sock.connect(server)
            sock.send(packet)
            while True:
                data = sock.recv(4096)
                if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                    break
        except OSError:
            return set()
    try:
        return parse_answer(data, qtype)
    except (IndexError, struct.error, ValueError):
        return set()


def _question(name: str, qtype: int, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = [label.encode("idna") for label in name.rstrip(".").split(".")]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return header + qname + struct.pack("!HH", qtype, 1)


def parse_answer(data: bytes, qtype: int) -> set[str]:
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x000F:  # NXDOMAIN, SERVFAIL, ...
        return set()
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    found: set[str] = set()
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, _, _, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + length]
        offset += length
        if rtype == qtype == _A and length == 4:
            found.add(str(ipaddress.IPv4Address(rdata)))
        elif rtype == qtype == _AAAA and length == 16:
            found.add(str(ipaddress.IPv6Address(rdata)))
    return found


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += length + 1
