"""Which worker accepts a connection: a classic BPF program on the SO_REUSEPORT group.

Every worker process listens on its own socket bound to the same address
(``SO_REUSEPORT``). By default the kernel picks a socket by a hash of the
connection's 4-tuple: connections of one client land on every worker, and
per-client limits kept in each worker (rate, connections per address) would
let a client have W times its share. The program attached here picks the
socket by the **client key** instead (IPv4 address; IPv6 /64, as in
``limits.client_key``), so all connections of a client meet the same worker
and its limits are exact.

Addresses that per-client limits do not apply to (``rate_limit_exempt``,
``trusted_proxies``) are spread by the kernel's own hash (the program returns
an out-of-range index), so a load balancer in front or loopback traffic
still uses every worker.

The program is pure data (:func:`program`), built here and attached with
``setsockopt(SO_ATTACH_REUSEPORT_CBPF)`` (Linux 4.5+). It runs with the
packet's network header reachable at ``SKF_NET_OFF``.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Final

__all__ = ["SPREAD", "attach", "program"]

SO_ATTACH_REUSEPORT_CBPF: Final = 51
SKF_NET_OFF: Final = -0x100000
SPREAD: Final = 0xFFFFFFFF  # out of range: the kernel falls back to its hash

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_W_ABS: Final = 0x00 | 0x00 | 0x20
_LD_B_ABS: Final = 0x00 | 0x10 | 0x20
_ST: Final = 0x02
_LD_MEM: Final = 0x00 | 0x60
_LDX_MEM: Final = 0x01 | 0x60
_ALU_AND_K: Final = 0x04 | 0x50
_ALU_RSH_K: Final = 0x04 | 0x70
_ALU_MUL_K: Final = 0x04 | 0x20
_ALU_MOD_K: Final = 0x04 | 0x90
_ALU_XOR_X: Final = 0x04 | 0xA0 | 0x08
_JEQ_K: Final = 0x05 | 0x10
_JA: Final = 0x05 | 0x00
_RET_K: Final = 0x06 | 0x00
_RET_A: Final = 0x06 | 0x10

_GOLDEN: Final = 0x9E3779B1  # multiplicative hashing (Knuth): spreads nearby addresses

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def _net(offset: int) -> int:
    return (SKF_NET_OFF + offset) & 0xFFFFFFFF


def program(workers: int, spread: Iterable[str]) -> list[Instruction]:
    """The steering program for ``workers`` sockets; ``spread``: networks hashed by the kernel."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for text in spread:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
            if net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
                # ::ffff:a.b.c.d/n: dual-stack sockets see those clients as IPv4.
                mapped = net.network_address.ipv4_mapped
                v4.append(ipaddress.IPv4Network((mapped, net.prefixlen - 96)))

    v4_code: list[Instruction] = [(_LD_W_ABS, 0, 0, _net(12)), (_ST, 0, 0, 0)]
    for net4 in v4:
        v4_code += [
            (_ALU_AND_K, 0, 0, int(net4.netmask)),
            (_JEQ_K, 0, 1, int(net4.network_address)),  # in the network: next is "spread"
            (_RET_K, 0, 0, SPREAD),
            (_LD_MEM, 0, 0, 0),  # the address again
        ]

    v6_code: list[Instruction] = []
    for net6 in v6:
        address = int(net6.network_address)
        mask = int(net6.netmask)
        words = [
            (i, (mask >> (96 - 32 * i)) & 0xFFFFFFFF, (address >> (96 - 32 * i)) & 0xFFFFFFFF)
            for i in range(4)
        ]
        words = [w for w in words if w[1]]
        block: list[Instruction] = []
        for position, (i, word_mask, word) in enumerate(words):
            left = len(words) - position - 1
            # Not equal: skip the rest of this network's block (3 per word left + the ret).
            block += [
                (_LD_W_ABS, 0, 0, _net(8 + 4 * i)),
                (_ALU_AND_K, 0, 0, word_mask),
                (_JEQ_K, 0, 3 * left + 1, word),
            ]
        block.append((_RET_K, 0, 0, SPREAD))
        v6_code += block
    # The /64 as one word: the upper two words of the source address, xor'ed.
    v6_code += [
        (_LD_W_ABS, 0, 0, _net(12)),
        (_ST, 0, 0, 0),
        (_LDX_MEM, 0, 0, 0),
        (_LD_W_ABS, 0, 0, _net(8)),
        (_ALU_XOR_X, 0, 0, 0),
    ]
    hash_code: list[Instruction] = [
        (_ALU_MUL_K, 0, 0, _GOLDEN),
        (_ALU_RSH_K, 0, 0, 16),
        (_ALU_MOD_K, 0, 0, workers),
        (_RET_A, 0, 0, 0),
    ]
    # Layout: version test, v6 code, jump to hash, v4 code, hash.
    #   0 ldb [net+0]; 1 rsh 4; 2 jeq 4 → v4; 3 jeq 6 → v6 (else 4: ret spread)
    head: list[Instruction] = [
        (_LD_B_ABS, 0, 0, _net(0)),
        (_ALU_RSH_K, 0, 0, 4),
        (_JEQ_K, 0, 0, 4),  # jt patched below: to the v4 code
        (_JEQ_K, 1, 0, 6),
        (_RET_K, 0, 0, SPREAD),
    ]
    v6_code.append((_JA, 0, 0, len(v4_code)))  # over the v4 code, to the hash
    jt_v4 = 2 + len(v6_code)  # from instruction 2: over 3, 4 and the v6 code
    if jt_v4 > 255:
        raise ValueError("too many networks to steer around")
    head[2] = (_JEQ_K, jt_v4, 0, 4)
    return head + v6_code + v4_code + hash_code


def attach(sock: socket.socket, code: list[Instruction]) -> None:
    """Attach ``code`` to the reuseport group of ``sock`` (bound already). Raises OSError."""
    packed = b"".join(struct.pack("=HBBI", *ins) for ins in code)
    buffer = ctypes.create_string_buffer(packed, len(packed))
    fprog = struct.pack("=HxxxxxxQ", len(code), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
