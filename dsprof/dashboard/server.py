"""Serve the dashboard with werkzeug: 127.0.0.1 unless another host is asked for, port 0
for a free port. Used by ``dsprof dashboard``, ``dsprof run --dashboard`` and the tests
(which start it in a thread and stop it)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from dsprof.errors import ConfigError

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD = frozenset({"", "0.0.0.0", "::"})


def allowed_host_names(host: str) -> frozenset[str]:
    """Host-header names the dashboard answers when bound to ``host``.

    Loopback names always; the bound name itself; on a wildcard bind also this machine's names.
    Any IP literal is accepted as well (see :func:`host_allowed`): DNS rebinding needs a name an
    attacker controls, and a literal address names no domain.
    """
    names = set(_LOOPBACK_NAMES) | {host.lower().strip("[]")}
    if host in _WILDCARD:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's ``Host:`` header names this server (DNS-rebinding defence)."""
    if not header:
        return False
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8050
        name = header[1:header.find("]")] if "]" in header else header
    else:
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    if name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def guard_host_header(flask_app: Any, host: str) -> None:
    """Answer 403 to any request whose ``Host:`` is not this server's name (a web page served
    from an attacker's domain that rebinds its name to 127.0.0.1 sends its own name)."""
    from flask import abort, request

    names = allowed_host_names(host)

    @flask_app.before_request
    def _check_host() -> None:
        if not host_allowed(request.headers.get("Host"), names):
            abort(403)


class DashboardServer:
    """A running dashboard.

    Args:
        app: the Dash app (from :func:`dsprof.dashboard.app.create_app`).
        host: interface to bind; 127.0.0.1 unless given explicitly.
        port: 0 picks a free port; :attr:`url` says which.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        # Dash's dev tools would ask a plotly server for the newest version; stay offline.
        os.environ.setdefault("DASH_DISABLE_VERSION_CHECK", "true")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # Bind here rather than in werkzeug, which prints and exits when the port is taken.
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(host, port,
                                                              type=socket.SOCK_STREAM)[0]
            self._sock = socket.socket(family, kind, proto)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(addr)
            self._sock.listen(128)
        except OSError as exc:
            raise ConfigError(f"cannot serve the dashboard on {host}:{port}: "
                              f"{exc.strerror or exc}; pick another --port") from None
        guard_host_header(app.server, host)
        self._server: BaseWSGIServer = make_server(
            host, self._sock.getsockname()[1], app.server, threaded=True,
            fd=self._sock.fileno())
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> DashboardServer:
        """Serve in a daemon thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="dsprof-dashboard")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()
            self._sock.close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
