"""Where accepted connections wait for their first byte, without a thread of their own.

A port scan or a load balancer's health check connects and closes without sending anything; a
slow or hostile peer may connect and stay silent. Neither should cost an association thread nor
one of pynetdicom's acceptor slots. So the gateway's server hands each accepted connection to the
`Lobby` first:
- bytes already waiting (the usual case: the A-ASSOCIATE-RQ follows the connect at once): the
  connection goes on to the server's association thread straight away;
- the peer already closed or reset it: closed, counted ("closed-before-request") and logged;
- otherwise it waits in one `poll()` (the lobby's thread, shared by every waiting connection) until
  it becomes readable (then as above), or until the ACSE timeout passes ("silent": closed); at
  most `per_source` connections from one address wait at once, the oldest is closed for a newer one
  ("source-limit").
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from gateway.counters import COUNTERS, GatewayCounters

log = logging.getLogger("gateway")

#: The longest the lobby's thread sleeps when nothing is due (it wakes for new arrivals at once).
IDLE_WAIT = 1.0

CLOSED_EARLY = "connection from {peer} closed before sending anything"

Admit = Callable[[socket.socket, Any], None]


def first_byte(sock: socket.socket) -> bool | None:
    """True: bytes are waiting; False: the peer closed or reset the connection; None: nothing yet."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return False


class Lobby:
    """Accepted connections that have not sent a byte yet (see the module docstring)."""

    def __init__(self, admit: Admit, *, timeout: float | None, per_source: int,
                 counters: GatewayCounters = COUNTERS) -> None:
        self._admit = admit
        self.timeout = timeout or None
        self.per_source = per_source
        self.counters = counters
        self._arrivals: deque[tuple[socket.socket, Any]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        #: Waiting connections, oldest first: socket -> (address, deadline).
        self._waiting: OrderedDict[socket.socket, tuple[Any, float]] = OrderedDict()
        self._by_host: dict[str, deque[socket.socket]] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="gateway-lobby", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._arrivals)

    def enter(self, sock: socket.socket, address: Any) -> None:
        """A connection just accepted (called in the accepting thread)."""
        ready = first_byte(sock)
        if ready:
            self._admit(sock, address)
        elif ready is False:
            self._refuse(sock, address, "closed-before-request", CLOSED_EARLY)
        else:
            self._arrivals.append((sock, address))
            self._poke()

    def stop(self) -> None:
        """Stop waiting: every connection still waiting is closed."""
        self._stopping = True
        self._poke()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    # the lobby's thread
    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_arrivals()
                for key, _ in self._selector.select(self._wait_time()):
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    else:
                        self._settle(key.fileobj)  # type: ignore[arg-type]
                self._expire()
        except Exception:
            log.exception("the gateway's lobby failed; connections waiting in it are closed")
        finally:
            self._close_all()

    def _wait_time(self) -> float:
        if self._arrivals:
            return 0.0
        if not self._waiting or self.timeout is None:
            return IDLE_WAIT
        _, deadline = next(iter(self._waiting.values()))
        return max(0.0, min(IDLE_WAIT, deadline - time.monotonic()))

    def _take_arrivals(self) -> None:
        while self._arrivals:
            sock, address = self._arrivals.popleft()
            host = str(address[0]) if isinstance(address, tuple) else str(address)
            same = self._by_host.setdefault(host, deque())
            while self.per_source and len(same) >= self.per_source:
                oldest = same[0]
                old_address, _ = self._forget(oldest)
                self._refuse(oldest, old_address, "source-limit",
                             f"connection from {{peer}} closed: over {self.per_source} silent ones "
                             f"from {host}")
            deadline = time.monotonic() + self.timeout if self.timeout is not None else float("inf")
            try:
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):  # closed meanwhile
                self._refuse(sock, address, "closed-before-request", CLOSED_EARLY)
                continue
            self._waiting[sock] = (address, deadline)
            same.append(sock)

    def _forget(self, sock: socket.socket) -> tuple[Any, float]:
        address, deadline = self._waiting.pop(sock)
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        same = self._by_host.get(host)
        if same is not None:
            with contextlib.suppress(ValueError):
                same.remove(sock)
            if not same:
                del self._by_host[host]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        return address, deadline

    def _settle(self, sock: socket.socket) -> None:
        address, deadline = self._forget(sock)
        ready = first_byte(sock)
        if ready:
            try:
                self._admit(sock, address)
            except Exception:
                log.exception("a connection from %s could not be served", address)
                with contextlib.suppress(OSError):
                    sock.close()
        elif ready is False:
            self._refuse(sock, address, "closed-before-request", CLOSED_EARLY)
        else:  # woken for nothing: wait on
            self._selector.register(sock, selectors.EVENT_READ)
            self._waiting[sock] = (address, deadline)
            host = str(address[0]) if isinstance(address, tuple) else str(address)
            self._by_host.setdefault(host, deque()).append(sock)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            sock, (_, deadline) = next(iter(self._waiting.items()))
            if deadline > now:
                break
            address, _ = self._forget(sock)
            self._refuse(sock, address, "silent",
                         f"connection from {{peer}} closed: nothing sent in {self.timeout:.0f} s")

    def _refuse(self, sock: socket.socket, address: Any, reason: str, detail: str) -> None:
        with contextlib.suppress(OSError):
            sock.close()
        self.counters.reject(reason, address, detail)

    def _close_all(self) -> None:
        while self._arrivals:
            sock, _ = self._arrivals.popleft()
            with contextlib.suppress(OSError):
                sock.close()
        for sock in list(self._waiting):
            self._forget(sock)
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
