"""The rules a request must pass before any handler sees it, one middleware per rule.

A browser page on another site can send simple requests to 127.0.0.1 (a ``text/plain`` POST needs no
preflight) and, by DNS rebinding, even read the answers. So: the Host must be one this API serves
(``host_middleware``), a change must come from the API's own origin (``origin_middleware``), at a bounded
rate per client (``rate_limit_middleware``), with a JSON body of bounded size (``body_middleware``). The
API refuses to start exposed without a token (``exposure_problem``). The helpers above the middlewares
are pure: they read header values, never the network. The rate limiter's state is in ``api.limits``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from api.context import RATE_LIMITS, SETTINGS
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
    """(hostname, port) of a Host header value; None when it is not one."""
    try:
        parts = urlsplit(f"//{host.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname, port


def host_allowed(host: str, api_host: str) -> bool:
    """Whether a request naming ``host`` (its Host header) is for this API.

    Only a loopback API needs it: a DNS-rebinding page reaches 127.0.0.1 under its own name, which
    it cannot make a loopback name. An API served beyond loopback requires API_TOKEN, which guards
    its changes, and may be reached under names it cannot know (proxies, DNS).
    """
    if not is_loopback(api_host):
        return True
    parts = split_host(host)
    return parts is not None and (is_loopback(parts[0]) or parts[0] == api_host.strip().strip("[]").lower())


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


# --- middlewares, outermost first ----------------------------------------------------------------


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """421 for a Host this loopback API does not serve (DNS rebinding), on every route: reads leak data too."""
    if not host_allowed(request.headers.get(hdrs.HOST, ""), request.app[SETTINGS].api_host):
        raise ApiError(421, "this API does not serve the host named in the request's Host header")
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
    """429 with Retry-After when one client (remote address) sends changes faster than its bucket allows."""
    if request.method in MUTATING:
        wait = request.app[RATE_LIMITS].take(request.remote or "unknown")
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"too many changes from this client: retry in {seconds} s", {"Retry-After": str(seconds)})
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
