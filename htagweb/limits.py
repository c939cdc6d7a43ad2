"""Client limits shared by every kind of process: token buckets and address groups."""

from __future__ import annotations

import ipaddress
import time


class RateLimit:
    """A token bucket: `rate` actions a second on average, bursts of `capacity` (2 x rate)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = 2 * rate if capacity is None else capacity
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def allow(self) -> bool:
        if self.rate <= 0:
            return True  # no limit
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def site_of(group: str) -> str:
    """What fair eviction counts as one client: an IPv6 /48 (a subscriber often holds a
    /56 or a /48, so a flood can spread over many /64s), an IPv4 address as it is."""
    try:
        network = ipaddress.ip_network(group, strict=False)
    except ValueError:
        return group
    if network.version == 6 and network.prefixlen > 48:
        return str(network.supernet(new_prefix=48))
    return group


def address_group(host: str) -> str:
    """What per-IP limits count as one client: an IPv4 address, or an IPv6 /64 (one
    subscriber usually holds a whole /64, so single IPv6 addresses would not limit)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
