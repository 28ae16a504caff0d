"""The egress policy: which resolved address and port a feed fetch may connect to.

Pure code (no resolver, no socket): the fetcher resolves a host, asks :meth:`EgressPolicy.check`
about every address it got, and connects only to addresses that passed (see ``agents/fetch.py``).
Feed URLs come from users, so without this a feed could point the worker at its own Kafka,
MongoDB, cloud metadata or anything else on the internal network, and ``import_logs`` would
report what answered.

Refused by default: loopback, link-local, private, CGNAT (100.64.0.0/10), multicast, reserved,
unspecified, IPv6 site-local and anything else Python does not call globally routable, also when
written as an IPv4-mapped (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::/96``) or 6to4 (``2002::/16``)
IPv6 address (the embedded IPv4 address is judged). Ports: 80 and 443 by default.
``FETCH_ALLOW_NETWORKS`` exempts networks (e.g. ``127.0.0.0/8`` for local testing) and
``FETCH_ALLOW_PORTS`` lists the ports (single ports or ranges like ``1024-65535``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["REFUSED", "EgressPolicy", "parse_networks", "parse_ports"]

REFUSED = "refused: destination not allowed"
"""The whole of what a run records about a refused destination: nothing about its state."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_MAX_ENTRIES = 1000  # a list longer than this is a mistake, not a configuration


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, ::1/128"`` → networks; raises ValueError naming the bad entry."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if len(entries) > _MAX_ENTRIES:
        raise ValueError(f"FETCH_ALLOW_NETWORKS lists more than {_MAX_ENTRIES} networks")
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError:
            raise ValueError(
                f"FETCH_ALLOW_NETWORKS entries must be CIDR networks like 10.0.0.0/8 or fd00::/8 "
                f"(host bits zero), got {entry[:60]!r}"
            ) from None
    return tuple(networks)


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``"80,443,1024-65535"`` → inclusive ranges; raises ValueError naming the bad entry."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ValueError("FETCH_ALLOW_PORTS must list at least one port, e.g. 80,443")
    if len(entries) > _MAX_ENTRIES:
        raise ValueError(f"FETCH_ALLOW_PORTS lists more than {_MAX_ENTRIES} entries")
    ranges: list[tuple[int, int]] = []
    for entry in entries:
        low, dash, high = entry.partition("-")
        bounds = (low.strip(), high.strip() if dash else low.strip())
        if not all(b.isdigit() and len(b) <= 5 for b in bounds) or not 1 <= int(bounds[0]) <= int(bounds[1]) <= 65535:
            raise ValueError(
                f"FETCH_ALLOW_PORTS entries must be ports 1-65535 or ranges like 1024-65535, got {entry[:60]!r}"
            )
        ranges.append((int(bounds[0]), int(bounds[1])))
    return tuple(ranges)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64 64:ff9b::/96, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _why_not_public(address: IPAddress) -> str | None:
    """The class of a non-public address ("loopback", ...), or None for a public unicast address."""
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("CGNAT", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Allowed destinations: public unicast addresses (or exempt networks) on allowed ports."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_ports: tuple[tuple[int, int], ...] = ((80, 80), (443, 443))

    @classmethod
    def from_settings(cls, networks: str, ports: str) -> EgressPolicy:
        """Build from ``FETCH_ALLOW_NETWORKS`` / ``FETCH_ALLOW_PORTS``; raises ValueError (Settings validates first)."""
        return cls(parse_networks(networks), parse_ports(ports))

    def port_allowed(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.allow_ports)

    def check(self, ip: str, port: int) -> str | None:
        """None when ``ip``:``port`` may be connected to, else why not (for logs only, never the run).

        ``ip`` is a resolver's answer (``"127.0.0.1"``, ``"::ffff:7f00:1"``, ``"fe80::1%eth0"``);
        anything that is not an IP address is refused.
        """
        if not self.port_allowed(port):
            return f"port {port} not in FETCH_ALLOW_PORTS"
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return "not an IP address"
        embedded = embedded_ipv4(address)
        candidates = (address,) if embedded is None else (address, embedded)
        if any(candidate in network for candidate in candidates for network in self.allow_networks
               if candidate.version == network.version):
            return None
        reason = _why_not_public(embedded if embedded is not None else address)
        if reason is not None:
            return f"{reason} address" + (f" (embedded in {address})" if embedded is not None else "")
        return None
