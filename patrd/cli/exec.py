"""``patrctl exec``, ``patrctl run`` and ``patrctl job …`` (patrd/api/exec.py, api/jobs.py).

A verb module (``add_parsers`` registers them). ``exec`` speaks a
WebSocket to the daemon with a small client of its own (the CLI uses the
standard library only): ``-t`` puts the local terminal in raw mode and sends
its size on SIGWINCH; ``-i`` forwards stdin (EOF included). ``run`` reads the
one-off's output as JSON lines and exits with its exit code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from patrd.cli.client import (
    AddVerb,
    ApiError,
    Client,
    CliError,
    UsageError,
    api_error,
    decode,
    deployment_path,
)
from patrd.cli.output import print_json, render_table

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("exec", "run a command in a running instance (-it: interactive terminal)", cmd_exec)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--instance", metavar="I", help="which instance (web-1); default the first")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("command", nargs="+", metavar="-- CMD", help="the command and its arguments")

    p = verb("run", "run a one-off container of a deployment; exits with its status", cmd_run)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--volumes", action="store_true", help="mount the deployment's volumes (scale 1 only)"
    )
    p.add_argument("--timeout", type=float, metavar="S", help="kill it after S seconds")
    p.add_argument("command", nargs="+", metavar="-- CMD", help="the command and its arguments")

    p = verb("job", "scheduled jobs: list, run-now, history, logs", cmd_job)
    jobs = p.add_subparsers(dest="job_action", required=True, metavar="ACTION")
    q = jobs.add_parser("list", help="jobs, schedules, next and last runs", parents=[common])
    q.add_argument("name", metavar="NAME")
    q = jobs.add_parser("run-now", help="start a run now", parents=[common])
    q.add_argument("name", metavar="NAME")
    q.add_argument("job", metavar="JOB")
    q = jobs.add_parser("history", help="past runs, newest first", parents=[common])
    q.add_argument("name", metavar="NAME")
    q.add_argument("job", nargs="?", metavar="JOB", help="one job (default: all)")
    q = jobs.add_parser("logs", help="the kept output of one run", parents=[common])
    q.add_argument("name", metavar="NAME")
    q.add_argument("job", metavar="JOB")
    q.add_argument("run", metavar="RUN", help="the run id (job history)")


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("give the command after --, e.g. patrctl exec web -- env")
    return command


# --- a minimal WebSocket client (RFC 6455) --------------------------------------------


class WebSocket:
    """Blocking, over the CLI's own connection (unix socket or TCP/TLS); sends are locked."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self._sock = sock
        self._buf = bytearray(leftover)
        self._send_lock = threading.Lock()

    @classmethod
    def connect(cls, client: Client, path: str) -> WebSocket:
        conn = client.connect()
        try:
            conn.connect()
        except OSError as exc:
            raise CliError(f"cannot reach patrd at {client.target}: {exc}{client.hint}") from exc
        sock = conn.sock
        assert sock is not None
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {client.base_path}{path} HTTP/1.1",
            "Host: patrd",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: patrctl",
        ]
        if client.token:
            lines.append(f"Authorization: Bearer {client.token}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = bytearray()
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(4096)
            if not chunk:
                raise CliError("patrd closed the connection during the WebSocket handshake")
            raw += chunk
        head, _, rest = bytes(raw).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
        }
        status = int(status_line.split()[1])
        if status != 101:
            body = rest
            length = int(headers.get("content-length", "0") or 0)
            while len(body) < length:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
            sock.close()
            data = decode(body)
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiError(status, "http", message if isinstance(message, str) else status_line)
        digest = hashlib.sha1((key + _WS_GUID).encode(), usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        if headers.get("sec-websocket-accept") != accept:
            sock.close()
            raise CliError("patrd answered the WebSocket handshake wrongly")
        sock.settimeout(None)
        return cls(sock, rest)

    def send(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header.append(0x80 | size)
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._send_lock:
            self._sock.sendall(bytes(header) + mask + masked)

    def send_json(self, data: Any) -> None:
        self.send(OP_TEXT, json.dumps(data).encode())

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def receive(self) -> tuple[int, bytes]:
        """The next data message (text or binary), or (OP_CLOSE, b"") at the end."""
        message = bytearray()
        first_opcode = None
        try:
            while True:
                b0, b1 = self._read(2)
                opcode, size = b0 & 0x0F, b1 & 0x7F
                if size == 126:
                    size = struct.unpack("!H", self._read(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", self._read(8))[0]
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(size)
                if mask is not None:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == OP_PING:
                    self.send(OP_PONG, payload)
                    continue
                if opcode == OP_PONG:
                    continue
                if opcode == OP_CLOSE:
                    with contextlib.suppress(OSError):
                        self.send(OP_CLOSE, payload[:2])
                    return OP_CLOSE, b""
                if opcode != OP_CONT:
                    first_opcode = opcode
                message += payload
                if b0 & 0x80:
                    return first_opcode or OP_BINARY, bytes(message)
        except (EOFError, OSError):
            return OP_CLOSE, b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(OP_CLOSE, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self._sock.close()


# --- exec ----------------------------------------------------------------------------


def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    command = _command(args)
    if args.tty and not sys.stdin.isatty():
        raise UsageError("-t needs a terminal on stdin (leave out -t to stream)")
    body: dict[str, Any] = {"command": command, "tty": args.tty, "stdin": args.interactive}
    if args.instance:
        body["instance"] = args.instance
    created = client.request("POST", deployment_path(args.name, "exec"), body=body)
    attach = str(created["attach"])
    if args.tty:
        cols, rows = os.get_terminal_size(sys.stdin.fileno())
        attach += "?" + urllib.parse.urlencode({"rows": rows, "cols": cols})
    ws = WebSocket.connect(client, attach)
    restore = _raw_terminal(ws) if args.tty else None
    try:
        if args.interactive:
            threading.Thread(target=_forward_stdin, args=(ws,), daemon=True).start()
        return _print_output(ws)
    finally:
        if restore is not None:
            restore()
        ws.close()


def _print_output(ws: WebSocket) -> int:
    code: int | None = None
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while True:
        opcode, payload = ws.receive()
        if opcode == OP_CLOSE:
            break
        if opcode == OP_BINARY and payload:
            target = err if payload[0] == 2 else out
            target.write(payload[1:])
            target.flush()
        elif opcode == OP_TEXT:
            data = decode(payload)
            if isinstance(data, dict) and isinstance(data.get("exit_code"), int):
                code = data["exit_code"]
    if code is None:
        raise CliError("the connection to patrd ended before the command's exit code came")
    return code


def _forward_stdin(ws: WebSocket) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                ws.send_json({"stdin_eof": True})
                return
            ws.send(OP_BINARY, data)
    except OSError:
        return


def _raw_terminal(ws: WebSocket) -> Callable[[], None]:
    """Raw mode on the local terminal and SIGWINCH → resize; returns the undo."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)

    def resize(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            cols, rows = os.get_terminal_size(fd)
            ws.send_json({"resize": {"rows": rows, "cols": cols}})

    previous = signal.signal(signal.SIGWINCH, resize)

    def restore() -> None:
        signal.signal(signal.SIGWINCH, previous)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


# --- run -----------------------------------------------------------------------------


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"command": _command(args), "volumes": args.volumes}
    if args.timeout is not None:
        body["timeout_s"] = args.timeout
    headers = {
        "Accept": "application/x-ndjson",
        "Content-Type": "application/json",
        "User-Agent": "patrctl",
    }
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    conn = client.connect()
    code: int | None = None
    try:
        with client.transport_errors():
            conn.request(
                "POST",
                client.base_path + deployment_path(args.name, "run"),
                body=json.dumps(body).encode(),
                headers=headers,
            )
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet command is not an error
            response = conn.getresponse()
            if response.status >= 400:
                raise api_error(response.status, decode(response.read()), f"HTTP {response.status}")
            while True:
                raw = response.readline()
                if not raw:
                    break
                if args.json:
                    sys.stdout.write(raw.decode("utf-8", "replace"))
                    sys.stdout.flush()
                item = decode(raw)
                if not isinstance(item, dict):
                    continue
                if "exit_code" in item:
                    code = int(item["exit_code"])
                    if item.get("timed_out"):
                        print(f"patrctl: killed after {args.timeout:g}s (timeout)", file=sys.stderr)
                elif "error" in item:
                    raise CliError(str(item["error"]))
                elif "line" in item and not args.json:
                    target = sys.stderr if item.get("stream") == "stderr" else sys.stdout
                    print(item["line"], file=target, flush=True)
    finally:
        conn.close()
    if code is None:
        raise CliError("the output ended before the one-off's exit code came")
    return code


# --- jobs ----------------------------------------------------------------------------


def _when(text: str | None) -> str:
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _run_row(run: dict[str, Any]) -> list[str]:
    code = run.get("exit_code")
    took = run.get("duration_s")
    return [
        str(run["id"]),
        str(run["job"]),
        str(run["trigger"]),
        _when(run.get("started_at")),
        "-" if took is None else f"{took:.1f}s",
        str(run["outcome"]),
        "-" if code is None else str(code),
    ]


_RUN_HEADERS = ["RUN", "JOB", "TRIGGER", "STARTED", "TOOK", "OUTCOME", "EXIT"]


def cmd_job(client: Client, args: argparse.Namespace) -> int:
    action = args.job_action
    if action == "list":
        data = client.get(deployment_path(args.name, "jobs"))
        if args.json:
            print_json(data)
            return 0
        rows = []
        for job in data["jobs"]:
            last = job.get("last_run")
            rows.append(
                [
                    job["name"],
                    job["schedule"],
                    "running" if job["running"] else _when(job.get("next_run")),
                    "-" if not last else f"{last['outcome']} ({_when(last.get('started_at'))})",
                    " ".join(job["command"])[:40],
                ]
            )
        print(render_table(["JOB", "SCHEDULE", "NEXT", "LAST", "COMMAND"], rows))
        print(f"(schedules in the node's time zone: {data['time_zone']})")
        return 0
    if action == "run-now":
        run = client.request("POST", deployment_path(args.name, "jobs", args.job, "run"))
        if args.json:
            print_json(run)
        else:
            print(f"job {args.job} run {run['id']} started")
        return 0
    if action == "history":
        names = [args.job] if args.job else [j["name"] for j in _jobs(client, args.name)]
        runs: list[dict[str, Any]] = []
        for name in names:
            runs += client.get(deployment_path(args.name, "jobs", name, "runs"))["runs"]
        runs.sort(key=lambda r: -int(r["id"]))
        if args.json:
            print_json({"runs": runs})
        else:
            print(render_table(_RUN_HEADERS, [_run_row(r) for r in runs]))
        return 0
    data = client.get(deployment_path(args.name, "jobs", args.job, "runs", str(args.run)))
    if args.json:
        print_json(data)
        return 0
    print(f"run {data['id']}: {data['outcome']} — {data['message']}")
    for line in data["log"]:
        stream = "E" if line.get("stream") == "stderr" else " "
        print(f"{line['t'][:23]}Z {stream} {line['line']}")
    return 0


def _jobs(client: Client, name: str) -> list[dict[str, Any]]:
    return list(client.get(deployment_path(name, "jobs"))["jobs"])
