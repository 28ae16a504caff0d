"""The rules a request must pass before any handler sees it, one middleware per rule.

A browser page on another site can send simple requests to 127.0.0.1 (a ``text/plain`` POST needs no
preflight) and, by DNS rebinding, even read the answers. So: the Host must be one this API serves
(``host_middleware``), a change must come from the API's own origin (``origin_middleware``), at a bounded
rate per client address and per token (``rate_limit_middleware``), with a JSON body of bounded size
(``body_middleware``). The API refuses to start exposed without a token (``exposure_problem``). The token
itself is checked in ``api.app.auth_middleware``, with the helpers here (bearer header or the session
cookie that ``POST /api/session`` sets for browsers). The helpers above the middlewares are pure: they
read header values, never the network. The rate limiter's state is in ``api.limits``.

Header values arrive as text; bytes that are not UTF-8 come as lone surrogates, which ``str.encode``
and ``hmac.compare_digest`` refuse with an exception: every helper here answers "no" to them instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from api.context import CREDENTIAL, RATE_LIMITS, READ_LIMITS, SETTINGS
from api.queries import ApiError
from streams.settings import Settings

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPE = "application/json"
# The body types of a "simple" cross-origin request: a page of any site may send them without asking.
SIMPLE_REQUEST_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
# The largest body any route needs is 100 feed URLs (POST /api/import/run): far below this.
MAX_BODY_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# Sec-Fetch-Site values of requests a page of this API made itself ("none": typed by the user).
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
SESSION_PATH = "/api/session"
SESSION_COOKIE = "jobstream_session"
# Reads that stay open with API_READS_REQUIRE_TOKEN: probes and Prometheus (which know no cookie), and this
# API's description. The dashboard's page and files hold no data (it comes from /api/): they stay open
# too, so the page can load and ask for the token.
OPEN_READS = frozenset({"/health", "/metrics", "/api/openapi.json", SESSION_PATH})
# Monitoring is never rate-limited: a 429 would read as the API being down.
UNLIMITED_READS = frozenset({"/health", "/metrics"})
MAX_SESSION_VALUE = 100
# What a Host header may hold: a name, an IPv4 or [IPv6] address, a port (``_``: some internal names have it).
HOST_CHARACTERS = re.compile(r"[A-Za-z0-9._\-:\[\]]+")


# --- pure rules --------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, and ::ffff:127.x): reachable only from this machine."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def exposure_problem(settings: Settings) -> str | None:
    """Why the API must not start with these settings: served beyond this machine, nothing guards its changes."""
    if settings.api_token or is_loopback(settings.api_host):
        return None
    return (f"API_HOST={settings.api_host!r} is not a loopback address and API_TOKEN is not set: anyone who can reach "
            "the port could register feeds and start imports. Set API_TOKEN (clients then send "
            "'Authorization: Bearer <token>'), or set API_HOST=127.0.0.1")


def split_host(host: str) -> tuple[str, int | None] | None:
    """(hostname, port) of a Host header value; None when it is not one (host names are ASCII: IDNA)."""
    if not HOST_CHARACTERS.fullmatch(host.strip()):
        return None
    try:
        parts = urlsplit(f"//{host.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname, port


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def name_listed(name: str, allowed: tuple[str, ...]) -> bool:
    """Whether a host name matches API_ALLOWED_HOSTS: an entry itself, ``*.example.com`` its subdomains, ``*`` any."""
    for entry in allowed:
        if entry == "*" or name == entry.strip("[]") or (entry.startswith("*.") and name.endswith(entry[1:])):
            return True
    return False


def host_allowed(host: str, api_host: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a request naming ``host`` (its Host header) is for this API.

    A DNS-rebinding page reaches the API under the page's own name, never under a loopback name or an
    IP address. So loopback names and API_HOST itself are always served, names in API_ALLOWED_HOSTS
    (``allowed``) too, and an API served beyond loopback also answers to an IP address: Kubernetes
    probes and Prometheus name the pod's address, which no list could know in advance.
    """
    parts = split_host(host)
    if parts is None:
        return False
    name = parts[0].rstrip(".")
    if is_loopback(name) or name == api_host.strip().strip("[]").lower() or name_listed(name, allowed):
        return True
    return not is_loopback(api_host) and is_ip_address(name)


def same_origin(url: str, host: str) -> bool:
    """Whether ``url`` (an Origin or Referer) is the origin this request was sent to (its Host).

    The scheme is not compared: behind a TLS proxy the API sees http while the page is https. A Host
    without port is the default port of the page's scheme.
    """
    target = split_host(host)
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if target is None or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    hostname, host_port = target
    return parts.hostname == hostname and port == (host_port or DEFAULT_PORTS[parts.scheme])


def cross_site_reason(headers: Mapping[str, str], host: str) -> str | None:
    """Why a change is refused as coming from another site, or None.

    Browsers send ``Origin`` with every POST/PATCH/DELETE; without it, ``Sec-Fetch-Site`` and
    ``Referer`` still tell. A request with none of them is not from a browser page (curl, scripts).
    """
    origin = headers.get(hdrs.ORIGIN)
    if origin is not None:
        return None if same_origin(origin, host) else "the request's Origin"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in OWN_FETCH_SITES:
        return "the request's Sec-Fetch-Site"
    referer = headers.get(hdrs.REFERER)
    if referer is not None and not same_origin(referer, host):
        return "the request's Referer"
    return None


def token_matches(offered: str, token: str) -> bool:
    """Constant-time ``offered == token``; False for an empty offer or one with bytes that are not UTF-8."""
    try:
        raw = offered.encode()
    except UnicodeEncodeError:  # lone surrogates: the header's bytes were not UTF-8
        return False
    return bool(raw) and bool(token) and hmac.compare_digest(raw, token.encode())


def bearer_of(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without one."""
    scheme, _, given = headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def session_value(token: str, expires: int) -> str:
    """The session cookie's value: its expiry (Unix seconds) signed with API_TOKEN.

    The token itself never sits in the browser's cookie jar, a cookie stops working at its expiry,
    and changing API_TOKEN ends every session.
    """
    mac = hmac.new(token.encode(), f"jobstream-session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"v1.{expires}.{mac}"


def session_valid(value: str, token: str, now: float) -> bool:
    """Whether a session cookie's value was made with ``token`` and has not expired at ``now``."""
    if not token or not value.isascii() or len(value) > MAX_SESSION_VALUE:
        return False
    version, _, rest = value.partition(".")
    expires, _, _ = rest.partition(".")
    if version != "v1" or not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
        return False
    return hmac.compare_digest(value.encode(), session_value(token, int(expires)).encode())


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, read by hand: the header is attacker text."""
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


def credential(request: web.Request) -> str:
    """Which valid proof of API_TOKEN the request carries: ``bearer``, ``session`` (the cookie), or ``""``.

    Computed once per request (the rate limit and the auth middleware both ask).
    """
    if CREDENTIAL in request:
        return request[CREDENTIAL]
    token = request.app[SETTINGS].api_token
    found = ""
    bearer = bearer_of(request.headers)
    if token and bearer is not None and token_matches(bearer, token):
        found = "bearer"
    elif token and (cookie := cookie_value(request.headers.get(hdrs.COOKIE, ""), SESSION_COOKIE)) is not None:
        found = "session" if session_valid(cookie, token, time.time()) else ""
    request[CREDENTIAL] = found
    return found


def read_needs_token(path: str) -> bool:
    """Whether a read of ``path`` needs the token when API_READS_REQUIRE_TOKEN is on: the API's data under /api/."""
    return path.startswith("/api/") and path not in OPEN_READS


# --- middlewares, outermost first ----------------------------------------------------------------


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a missing or malformed Host; 421 for a Host this API does not serve (DNS rebinding), on every
    route: reads leak data too."""
    host = request.headers.get(hdrs.HOST, "")
    if split_host(host) is None:
        raise ApiError(400, "the request's Host header is missing or not a host name")
    settings = request.app[SETTINGS]
    if not host_allowed(host, settings.api_host, settings.allowed_hosts):
        raise ApiError(421, "this API does not serve the host named in the request's Host header "
                            "(an operator can add it to API_ALLOWED_HOSTS)")
    return await handler(request)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a change sent by a page of another origin (cross-site request forgery)."""
    if request.method in MUTATING:
        reason = cross_site_reason(request.headers, request.headers.get(hdrs.HOST, ""))
        if reason is not None:
            raise ApiError(403, f"cross-origin change refused: {reason} is not this API's own origin")
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 with Retry-After when a client sends requests faster than its buckets allow.

    Changes and reads have separate budgets. A request is charged to its remote address and, when it
    carries the valid API token (bearer or session cookie), to the token as well: a token used from
    many addresses shares one budget. A wrong token earns no bucket of its own, only the address's.
    """
    changing = request.method in MUTATING
    if changing or request.path not in UNLIMITED_READS:
        keys = [f"address {request.remote or 'unknown'}"]
        if credential(request):
            keys.append("token")
        wait = request.app[RATE_LIMITS if changing else READ_LIMITS].take(*keys)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            what = "changes" if changing else "requests"
            raise ApiError(429, f"too many {what} from this client: retry in {seconds} s", {"Retry-After": str(seconds)})
    return await handler(request)


def unacceptable_body(method: str, content_type: str, has_body: bool) -> bool:
    """Whether a request's body type is refused: any body but JSON, and on a change even an empty body
    declared as one of the types a page of another site may send without a CORS preflight.
    (HTTP libraries declare ``application/octet-stream`` on an empty POST: that one passes.)
    """
    if has_body:
        return content_type != JSON_TYPE
    return method in MUTATING and content_type in SIMPLE_REQUEST_TYPES


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 for a body over MAX_BODY_BYTES; 415 for a body that is not JSON (see ``unacceptable_body``).

    A ``text/plain`` or form body is what a page of another site can send without a preflight; the
    handlers parse bodies as JSON, so anything else is refused before it is read. Requests for no
    route or a wrong method keep their 404/405.
    """
    if request.match_info.http_exception is not None:
        return await handler(request)
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.content_type if hdrs.CONTENT_TYPE in request.headers else ""
    if unacceptable_body(request.method, declared, request.body_exists):
        raise ApiError(415, f"request body must be {JSON_TYPE} (Content-Type: {JSON_TYPE})")
    return await handler(request)
