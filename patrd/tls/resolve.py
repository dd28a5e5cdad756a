"""Does a name resolve to this host? Asked before ordering, so that a name
whose DNS points elsewhere never burns a failed authorization at the CA.

"This host" means an address a socket can be bound to here (any address of
any interface, loopback included), plus the configured
``acme.public_addresses`` (a VPS behind 1:1 NAT does not see its public
address on an interface). Names are resolved by the system resolver, or by
``acme.resolver`` (``host:port``, A and AAAA over UDP, retried over TCP when
the answer is truncated; dnspython) when set: point it at a public resolver to
check what the CA will see rather than /etc/hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

TIMEOUT_S = 3.0
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA


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
        found |= await query_async(name, qtype, resolver)
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


# --- the DNS client: dnspython (UDP, TCP when the answer is truncated) -------


def _resolver(server: tuple[str, int]) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    _point(res, server)
    return res


def _async_resolver(server: tuple[str, int]) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    _point(res, server)
    return res


def _point(res: dns.resolver.BaseResolver, server: tuple[str, int]) -> None:
    res.nameservers = [server[0]]
    res.port = server[1]
    res.timeout = TIMEOUT_S
    res.lifetime = TIMEOUT_S


def _found(answer: dns.resolver.Answer, qtype: int) -> set[str]:
    if answer.rrset is None or answer.rdtype != qtype:
        return set()
    return {rdata.to_text() for rdata in answer.rrset}


async def query_async(name: str, qtype: int, server: tuple[str, int]) -> set[str]:
    """Ask ``server`` for ``name``'s records of ``qtype`` (A or AAAA); empty on any failure."""
    try:
        answer = await _async_resolver(server).resolve(
            name, dns.rdatatype.RdataType.make(qtype), search=False, raise_on_no_answer=False
        )
    except dns.exception.DNSException:
        return set()
    return _found(answer, qtype)


def query(name: str, qtype: int, server: tuple[str, int]) -> set[str]:
    """Blocking ``query_async`` (tests' readiness probes)."""
    try:
        answer = _resolver(server).resolve(
            name, dns.rdatatype.RdataType.make(qtype), search=False, raise_on_no_answer=False
        )
    except dns.exception.DNSException:
        return set()
    return _found(answer, qtype)


def _question(name: str, qtype: int, qid: int) -> bytes:
    """A query message (recursion desired) as sent on the wire."""
    message = dns.message.make_query(name, dns.rdatatype.RdataType.make(qtype))
    message.id = qid
    return message.to_wire()


def parse_answer(data: bytes, qtype: int) -> set[str]:
    """The ``qtype`` addresses in a response message (empty: an error rcode or garbage)."""
    try:
        message = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return set()
    if message.rcode() != dns.rcode.NOERROR:
        return set()
    return {rdata.to_text() for rrset in message.answer if rrset.rdtype == qtype for rdata in rrset}
