"""The absolute base URL the server answers with (RetrieveURLs, BulkDataURIs), for one request.

In order of precedence:

1. `PACS_PUBLIC_URL` when set (`pacs up` behind a known name, API Gateway's stage URL);
2. the `Forwarded` header (RFC 7239: its first element's `proto` and `host`), else `X-Forwarded-Proto`,
   `-Host`, `-Port` and `-Prefix`, only when the peer is one of `PACS_TRUSTED_PROXIES`;
3. the request's own scheme and Host header, with the port the server listens on when the Host header
   names none (`dicomweb-client` sends `Host: 127.0.0.1`); the server's address when there is no
   usable Host header. Behind API Gateway (Mangum), the part of the path the API consumed before the
   app (a REST API's stage, a custom domain's base path) is kept as a prefix.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from fastapi import Request

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A Host header value: a registered name, IPv4 or bracketed IPv6 address, and an optional port.
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%]+)(?::[0-9]{1,5})?$")
_FORWARDED_PAIR = re.compile(r'([A-Za-z]+)=("(?:[^"\\]|\\.)*"|[^;,\s]*)')
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9.\-_~%!$&'()*+,;=:@]*)*$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """The networks of a `PACS_TRUSTED_PROXIES` value (addresses or CIDR blocks, comma-separated)."""
    parts = (part.strip() for part in setting.split(","))
    return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)


def _trusted(peer: str | None, networks: tuple[Network, ...]) -> bool:
    if not peer or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _first_forwarded(value: str) -> dict[str, str]:
    """The parameters of the first element of a `Forwarded` header, names lower-cased, unquoted."""
    params: dict[str, str] = {}
    for match in _FORWARDED_PAIR.finditer(_first_element(value)):
        raw = match.group(2)
        value_ = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw[:1] == '"' else raw
        params.setdefault(match.group(1).lower(), value_)
    return params


def _first_element(value: str) -> str:
    """The text of `value` up to its first comma outside a quoted string."""
    quoted = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            return value[:i]
    return value


def _with_port(host: str, port: int | None, scheme: str) -> str:
    """`host`, with `port` added when it names none and `port` is not the scheme's default."""
    has_port = host.rsplit("]", 1)[-1].count(":") == 1
    if has_port or port is None or _DEFAULT_PORTS.get(scheme) == port:
        return host
    return f"{host}:{port}"


def _server_host(request: Request) -> tuple[str, int | None]:
    server = request.scope.get("server")
    if not server:
        return "localhost", None
    host, port = server[0], server[1]
    return (f"[{host}]" if ":" in host else host), port


def _api_gateway_prefix(request: Request) -> str:
    """The path API Gateway consumed before the app (`/prod`, a base path mapping), from the Lambda
    event Mangum keeps in the scope; "" elsewhere."""
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return ""
    context = event.get("requestContext") or {}
    full = context.get("path") or (context.get("http") or {}).get("path") or ""
    path = request.scope.get("path", "")
    if isinstance(full, str) and path and full.endswith(path) and _PREFIX.match(full[: -len(path)]):
        return full[: -len(path)].rstrip("/")
    return ""


def base_url(request: Request, *, public_url: str = "", trusted_proxies: str = "") -> str:
    """The server's absolute base URL for `request`, without a trailing slash."""
    if public_url:
        return public_url.rstrip("/")
    scheme = request.url.scheme
    prefix = request.scope.get("root_path", "").rstrip("/") or _api_gateway_prefix(request)
    server_host, server_port = _server_host(request)
    host = request.headers.get("host", "")
    port: int | None = server_port
    peer = request.client.host if request.client else None
    if _trusted(peer, trusted_networks(trusted_proxies)):
        forwarded = request.headers.get("forwarded")
        if forwarded:
            params = _first_forwarded(forwarded)
            scheme = params.get("proto", scheme).lower()
            if "host" in params:
                host, port = params["host"], None
        else:
            headers = request.headers
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip().lower()
            if "x-forwarded-host" in headers:
                host, port = headers["x-forwarded-host"].split(",")[0].strip(), None
            if "x-forwarded-port" in headers:
                forwarded_port = headers["x-forwarded-port"].split(",")[0].strip()
                port = int(forwarded_port) if forwarded_port.isdigit() else port
            forwarded_prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
            if forwarded_prefix and _PREFIX.match(forwarded_prefix):
                prefix = forwarded_prefix + prefix
        if scheme not in _DEFAULT_PORTS:
            scheme = request.url.scheme
    if not _HOST.match(host):  # absent or unusable: the address the server answered on
        host, port = server_host, server_port
    return f"{scheme}://{_with_port(host, port, scheme)}{prefix}"
