"""The address guard of webhook deliveries (SSRF): only global addresses, unless allow-listed. Pure.

A webhook URL is chosen by whoever may manage webhooks, and the worker that delivers it usually sits inside
a private network, next to databases and the cloud's metadata service. Every address the host resolves to
must be global unicast (not loopback, private, shared, link-local - 169.254.169.254 included -, multicast,
reserved or unspecified, nor an IPv4 address mapped or translated into IPv6 that is one of those), or lie in
a network of the allow-list (``PAGEQ_WEBHOOKS_ALLOW``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import SplitResult, urlsplit

from pageq.errors import ConfigError, InvalidOptionError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_allow(entries: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks from CIDRs or single addresses, separated by commas or spaces when given as one string."""
    items = re.split(r"[,\s]+", entries) if isinstance(entries, str) else list(entries)
    networks: list[Network] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"webhook allow-list: {item!r} is not an address or a network") from None
    return tuple(networks)


def _embedded(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address: str, allow: Sequence[Network] = ()) -> str | None:
    """Why a delivery to ``address`` is refused (None: allowed)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not part of the address
    except ValueError:
        return f"{address!r} is not an IP address"
    if any(ip in net for net in allow):
        return None
    inner = _embedded(ip)
    if any(inner in net for net in allow):
        return None
    for kind, flag in (
        ("loopback", inner.is_loopback), ("link-local (cloud metadata)", inner.is_link_local),
        ("unspecified", inner.is_unspecified), ("multicast", inner.is_multicast),
        ("private", inner.is_private), ("reserved", inner.is_reserved),
    ):  # fmt: skip
        if flag:
            return f"{address} is a {kind} address (not in the webhook allow-list)"
    if not inner.is_global:
        return f"{address} is not a global address (not in the webhook allow-list)"
    return None


def check_url(url: object) -> SplitResult:
    """A webhook URL: http or https, with a host, without credentials or a fragment."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise InvalidOptionError(f"a webhook URL must be a printable string of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidOptionError(f"invalid webhook URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidOptionError(f"a webhook URL needs http:// or https:// and a host, got {url!r}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidOptionError("a webhook URL may not carry credentials or a fragment")
    if port == 0:
        raise InvalidOptionError(f"invalid port in webhook URL {url!r}")
    return parts
