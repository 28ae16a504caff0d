"""The egress policy as a pure decision: addresses and ports are classified, never connected to."""

from __future__ import annotations

import pytest

from models.egress import REFUSED, EgressPolicy, parse_networks, parse_ports
from streams.settings import Settings, SettingsError

DEFAULT = EgressPolicy.from_settings("", "80,443")


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        # public unicast: allowed
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),  # IPv4-mapped form of a public address
        ("64:ff9b::808:808", None),  # NAT64 form of a public address (DNS64 networks resolve everything so)
        ("2002:808:808::1", None),  # 6to4 form of a public address
        # IPv4 classes the issue names
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - classified, not bound
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "private"),  # documentation
        ("198.18.0.1", "private"),  # benchmarking
        ("192.0.0.170", "private"),  # NAT64 discovery (IETF protocol assignments)
        # IPv6 classes
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),
        ("100::1", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated): not unwrapped, refused as reserved
        ("64:ff9b:1::1", "reserved"),  # local-use NAT64 prefix
        # disallowed IPv4 addresses written as IPv6
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:100.64.0.1", "CGNAT"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a9fe:a9fe::", "link-local"),
        # not an address at all
        ("localhost", "not an IP address"),
        ("0x7f000001", "not an IP address"),
        ("", "not an IP address"),
    ],
)
def test_default_policy_allows_only_public_unicast(ip: str, why: str | None) -> None:
    reason = DEFAULT.check(ip, 443)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason


@pytest.mark.parametrize(
    ("ports", "port", "allowed"),
    [
        ("80,443", 80, True),
        ("80,443", 443, True),
        ("80,443", 8080, False),
        ("80,443", 9092, False),
        ("80,443", 27017, False),
        ("80,443", 0, False),
        ("80,443,1024-65535", 1023, False),
        ("80,443,1024-65535", 1024, True),
        ("80,443,1024-65535", 65535, True),
        (" 8080 , 8443-8444 ", 8444, True),
        (" 8080 , 8443-8444 ", 8445, False),
        ("1-65535", 22, True),
    ],
)
def test_ports_are_checked_against_the_allow_list(ports: str, port: int, allowed: bool) -> None:
    policy = EgressPolicy.from_settings("", ports)
    assert policy.port_allowed(port) is allowed
    assert (policy.check("8.8.8.8", port) is None) is allowed


@pytest.mark.parametrize(
    ("networks", "ip", "allowed"),
    [
        ("127.0.0.0/8", "127.0.0.1", True),
        ("127.0.0.0/8", "127.1.2.3", True),
        ("127.0.0.0/8", "::ffff:127.0.0.1", True),  # the mapped form of an exempt address is exempt
        ("127.0.0.0/8", "::1", False),
        ("127.0.0.0/8", "10.0.0.1", False),
        ("127.0.0.1/32", "127.0.0.2", False),
        ("10.0.0.0/8, fd00::/8", "10.20.30.40", True),
        ("10.0.0.0/8, fd00::/8", "fd12::1", True),
        ("10.0.0.0/8, fd00::/8", "192.168.0.1", False),
        ("::1/128", "::1", True),
        ("::1/128", "127.0.0.1", False),
        ("", "8.8.8.8", True),
    ],
)
def test_allowed_networks_are_exempt(networks: str, ip: str, allowed: bool) -> None:
    assert (EgressPolicy.from_settings(networks, "80").check(ip, 80) is None) is allowed


def test_an_exempt_network_does_not_exempt_a_port() -> None:
    policy = EgressPolicy.from_settings("127.0.0.0/8", "80,443")
    assert policy.check("127.0.0.1", 80) is None
    assert policy.check("127.0.0.1", 27017) == "port 27017 not in FETCH_ALLOW_PORTS"


@pytest.mark.parametrize("text", ["foo", "10.0.0.1/8", "300.0.0.0/8", "10.0.0.0/33", "fe80::/ten", "10.0.0.0/8;x"])
def test_bad_networks_are_refused_with_the_entry_named(text: str) -> None:
    with pytest.raises(ValueError, match="FETCH_ALLOW_NETWORKS entries must be CIDR networks") as info:
        parse_networks(text)
    assert repr(text.split(",")[0].strip()[:60]) in str(info.value) or text in str(info.value)


@pytest.mark.parametrize("text", ["0", "65536", "10-5", "abc", "80-", "-80", "1-2-3", "443,http", "99999999999"])
def test_bad_ports_are_refused_with_the_entry_named(text: str) -> None:
    with pytest.raises(ValueError, match="FETCH_ALLOW_PORTS entries must be ports 1-65535 or ranges"):
        parse_ports(text)


def test_an_empty_port_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one port"):
        parse_ports(" , ")


def test_settings_validate_both_lists_with_clear_messages() -> None:
    assert Settings.from_env({}).fetch_allow_networks == ""
    assert Settings.from_env({}).fetch_allow_ports == "80,443"
    ok = Settings.from_env({"FETCH_ALLOW_NETWORKS": "127.0.0.0/8,::1/128", "FETCH_ALLOW_PORTS": "80,443,1024-65535"})
    assert EgressPolicy.from_settings(ok.fetch_allow_networks, ok.fetch_allow_ports).check("127.0.0.1", 8080) is None
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"FETCH_ALLOW_NETWORKS": "127.0.0.1/8", "FETCH_ALLOW_PORTS": "70000"})
    message = str(info.value)
    assert "FETCH_ALLOW_NETWORKS entries must be CIDR networks" in message and "'127.0.0.1/8'" in message
    assert "FETCH_ALLOW_PORTS entries must be ports 1-65535 or ranges like 1024-65535, got '70000'" in message


def test_the_refusal_text_says_nothing_about_the_target() -> None:
    assert REFUSED == "refused: destination not allowed"
