"""patrctl's own WebSocket framing (patrd/cli/exec.py) and the exec/run/job arguments."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from patrd.cli.exec import OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, WebSocket
from patrd.cli.main import parse_args


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """A client frame as a server reads it: masked, unmasked here."""

    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += sock.recv(n - len(data))
        return data

    b0, b1 = exact(2)
    assert b0 & 0x80 and b1 & 0x80  # FIN, and masked (RFC 6455: clients must mask)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack("!H", exact(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exact(8))[0]
    mask = exact(4)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(exact(size)))


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_send_masks_and_encodes_lengths(size: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        payload = bytes(i % 251 for i in range(size))
        ws = WebSocket(a)
        sender = threading.Thread(target=ws.send, args=(OP_BINARY, payload))
        sender.start()
        assert read_frame(b) == (OP_BINARY, payload)
        sender.join()


def test_receive_reassembles_fragments_and_answers_pings() -> None:
    a, b = socket.socketpair()
    with a, b:
        ws = WebSocket(a, leftover=bytes([0x01, 3]) + b"abc")  # text, not final
        b.sendall(bytes([0x89, 2]) + b"hi")  # a ping between the fragments
        b.sendall(bytes([0x80, 126]) + struct.pack("!H", 200) + b"d" * 200)  # final continuation
        assert ws.receive() == (OP_TEXT, b"abc" + b"d" * 200)
        assert read_frame(b) == (OP_PONG, b"hi")
        b.sendall(bytes([0x82, 1]) + b"\x01")
        assert ws.receive() == (OP_BINARY, b"\x01")
        b.sendall(bytes([0x88, 2]) + struct.pack("!H", 1000))
        assert ws.receive() == (OP_CLOSE, b"")
        assert read_frame(b)[0] == OP_CLOSE  # the close is answered
        b.close()
        assert ws.receive() == (OP_CLOSE, b"")  # a closed socket is the end too


def test_exec_run_job_arguments() -> None:
    args = parse_args(["exec", "web", "--instance", "web-1", "-it", "--", "sh", "-c", "ls -l"])
    assert (args.instance, args.tty, args.interactive, args.command) == (
        "web-1",
        True,
        True,
        ["sh", "-c", "ls -l"],
    )
    args = parse_args(["run", "web", "--volumes", "--timeout", "60", "--", "env"])
    assert (args.volumes, args.timeout, args.command) == (True, 60.0, ["env"])
    args = parse_args(["job", "history", "web"])
    assert (args.job_action, args.name, args.job) == ("history", "web", None)
    args = parse_args(["job", "run-now", "web", "nightly-report", "--json"])
    assert (args.job, args.json) == ("nightly-report", True)
