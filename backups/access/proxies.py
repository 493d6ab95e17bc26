"""The client's address behind trusted reverse proxies.

``X-Forwarded-For`` is believed only when the connection comes from a trusted proxy (its
``REMOTE_ADDR`` inside one of ``BACKUPSITE_TRUSTED_PROXIES``, comma-separated CIDRs, default
none): anyone else can write the header. Each trusted proxy appends the address it saw, so the
list is read from the right, skipping trusted hops; the first address that is not a trusted
proxy is the client. Runs while the settings load: standard library and
``django.core.exceptions`` only.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping

from django.core.exceptions import ImproperlyConfigured

SETTING = "BACKUPSITE_TRUSTED_PROXIES"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of CIDRs (a bare address is a /32 or /128);
    ValueError naming the first entry that is not one."""
    networks = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or a network (e.g. 10.0.0.0/8, ::1)") from None
    return tuple(networks)


def trusted_networks_from_env(environ: Mapping[str, str] | None = None) -> tuple[Network, ...]:
    """The trusted proxies named by ``BACKUPSITE_TRUSTED_PROXIES`` (none when unset);
    ImproperlyConfigured naming the variable and the bad entry."""
    text = (os.environ if environ is None else environ).get(SETTING, "")
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from None


def client_address(
    remote_addr: str | None, forwarded_for: str | None, trusted_networks: Iterable[Network]
) -> str | None:
    """The client's address: ``remote_addr``, or when that is a trusted proxy, the rightmost
    untrusted address of ``forwarded_for`` (the leftmost one when every hop is trusted). An
    entry that is not an address ends the walk at the trusted hop that reported it. None when
    ``remote_addr`` is not an address either."""
    networks = tuple(trusted_networks)
    peer = _address(remote_addr)
    if peer is None or not _trusted(peer, networks) or not forwarded_for:
        return str(peer) if peer is not None else None
    for entry in reversed(forwarded_for.split(",")):
        hop = _address(entry)
        if hop is None:
            break
        peer = hop
        if not _trusted(hop, networks):
            break
    return str(peer)


def _address(text: str | None) -> Address | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]`` or ``[::1]:80``;
    an IPv4-mapped IPv6 address as the IPv4 address it is."""
    if not text:
        return None
    value = text.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)
