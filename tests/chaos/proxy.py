"""A small TCP proxy for the network faults: clients connect to ``port``, the proxy to the
target. ``cut()`` resets every open connection (a peer gone, as a network partition ends in
when it lasts) and refuses new ones by resetting them at once; ``stall()`` stops forwarding
bytes both ways, the connections staying open (a partition that has not been noticed yet);
``restore()`` ends either. Threads: an accept loop, and a pump per direction of each
connection that looks at the mode between short waits."""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import Literal

Mode = Literal["open", "cut", "stall"]


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.mode: Mode = "open"
        self.connections: list[tuple[socket.socket, socket.socket]] = []
        self.cuts = 0  # connections reset by cut()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def dsn(self, dsn: str) -> str:
        """``dsn`` (a key=value conninfo on the target's port) through the proxy."""
        return dsn.replace(f"port={self.target[1]}", f"port={self.port}")

    def cut(self) -> None:
        with self._lock:
            self.mode = "cut"
            for pair in self.connections:
                for sock in pair:
                    _reset(sock)
                self.cuts += 1
            self.connections.clear()

    def stall(self) -> None:
        self.mode = "stall"

    def restore(self) -> None:
        self.mode = "open"

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.mode == "cut":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.connections.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                if self.mode == "stall":
                    self._closed.wait(0.05)
                    continue
                ready, _, _ = select.select([source], [], [], 0.1)
                if not ready or self.mode == "stall":
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ValueError):  # ValueError: the other direction closed it (fd -1)
            pass
        for sock in (source, sink):
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a peer that vanished would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
