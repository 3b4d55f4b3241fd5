"""Fetch a remote image without letting a client aim the gateway at its own network (SSRF).

With `--allow-remote-images` a client names a URL and the gateway fetches it from inside the
deployment, where loopback admin ports, the cloud metadata endpoint (169.254.169.254) and
private services are reachable. So every hop is checked before it is connected to:

- the host is resolved first (IP literals in any spelling `inet_aton` accepts, such as
  `2130706433` or `0x7f.1`, are parsed here rather than handed to a resolver), and the request
  is refused when any of its addresses is loopback, private, link-local, multicast, reserved,
  unspecified or otherwise not globally routable, IPv4 and IPv6 alike, including IPv4 embedded
  in IPv6 (`::ffff:127.0.0.1`, 6to4, NAT64);
- the connection goes to the address that was checked (the URL's host is replaced by it; the
  Host header and TLS server name keep the original name), so a DNS answer that changes between
  the check and the connect cannot redirect it;
- redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked the same way.

`allow_networks` (`--remote-image-allow-network`) lets an operator reach named networks anyway
(an intranet image host; the tests' loopback servers).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Iterable, Sequence

from .errors import APIError, invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings ('10.0.0.0/8', '::1') as networks; ValueError naming the one that is not a network."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"remote_image_allow_networks: {value!r} is not an IP network "
                             "(write e.g. 10.0.0.0/8, 192.168.1.5/32 or fd00::/8)") from None
    return tuple(out)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string spells, in every form `inet_aton` takes (None for a name)."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton forms: 1 to 4 parts, each decimal, 0x-hex or 0-octal; the last part fills the rest.
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.match(p) for p in parts):
        return None
    *head, last = [_inet_aton_part(p) for p in parts]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _inet_aton_part(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if part.startswith("0"):
        return int(part, 8)
    return int(part)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), which is where it really goes."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress, allow_networks: Sequence[IPNetwork] = ()) -> str | None:
    """Why the gateway must not connect to `ip` ('a loopback address', ...), or None when it may."""
    inner = embedded_ipv4(ip)
    if any(addr in net for addr in (ip, inner) if addr is not None for net in allow_networks
           if net.version == addr.version):
        return None
    if inner is not None:  # the packet goes to the IPv4 address, so that is what is judged
        reason = refusal_reason(inner)
        return None if reason is None else f"{reason} embedded in an IPv6 address"
    checks = (("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
              ("is_link_local", "a link-local address (this includes cloud metadata endpoints)"),
              ("is_multicast", "a multicast address"), ("is_reserved", "a reserved address"),
              ("is_site_local", "a site-local address"), ("is_private", "a private-network address"))
    for attr, reason in checks:
        if getattr(ip, attr, False):
            return reason
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


async def resolve_checked(host: str, port: int, allow_networks: Sequence[IPNetwork]) -> tuple[str | None, str]:
    """(refusal or None, the address to connect to): every address of `host` must pass `refusal_reason`."""
    import anyio

    literal = parse_ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # socket.gaierror: no such host
            raise RemoteFetchError(f"the image host {host!r} could not be resolved ({exc.strerror or exc}).") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    for ip in addresses:  # one refused address is enough: a resolver may hand them out in any order
        reason = refusal_reason(ip, allow_networks)
        if reason is not None:
            return (f"{host} resolves to {ip}, {reason}" if literal is None else f"{host} is {reason}"), str(ip)
    first = addresses[0]
    # a mapped address is an IPv4 one: connect over IPv4, which works without a dual-stack socket
    return None, str(first.ipv4_mapped if first.version == 6 and first.ipv4_mapped else first)


class RemoteFetchError(Exception):
    """A fetch that failed for a reason the client should read (turned into a 400 by `fetch`)."""


def _refused(reason: str, redirect: str | None, param: str) -> APIError:
    after = f" (after a redirect to {redirect[:200]!r})" if redirect else ""
    return invalid(f"Refused to fetch the image: {reason}{after}. This server fetches images only from public "
                   "addresses; an operator can allow a network with --remote-image-allow-network.", param,
                   "image_url_refused")


async def fetch(url: str, *, max_bytes: int, timeout_s: float, allow_networks: Sequence[IPNetwork],
                param: str) -> bytes:
    """GET an http(s) image, every hop's address checked and pinned; 400 naming `param` on any failure."""
    import anyio
    import httpx

    chunks: list[bytes] = []
    try:
        with anyio.fail_after(timeout_s):
            async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s, trust_env=False) as client:
                current = url
                for hop in range(MAX_REDIRECTS + 1):
                    target = _checked_url(current, param, first=hop == 0)
                    reason, address = await resolve_checked(target.host, target.port or _port(target), allow_networks)
                    if reason is not None:
                        raise _refused(reason, current if hop else None, param)
                    pinned = target.copy_with(host=address)
                    headers = {"Host": target.netloc.decode("ascii")}
                    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
                    request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
                    response = await client.send(request, stream=True)
                    try:
                        location = response.headers.get("location")
                        if response.status_code in _REDIRECTS and location:
                            current = str(target.join(location))
                            continue
                        await _read(response, chunks, max_bytes, param)
                        return b"".join(chunks)
                    finally:
                        await response.aclose()
                raise invalid(f"Fetching the image was redirected more than {MAX_REDIRECTS} times.", param,
                              "image_fetch_failed")
    except TimeoutError:
        raise invalid(f"Fetching the image took longer than {timeout_s:g} s.", param, "image_fetch_timeout") from None
    except RemoteFetchError as exc:
        raise invalid(f"Fetching the image failed: {exc}", param, "image_fetch_failed") from None
    except httpx.HTTPError as exc:
        raise invalid(f"Fetching the image failed: {type(exc).__name__}.", param, "image_fetch_failed") from None


def _checked_url(url: str, param: str, first: bool):
    """The URL parsed, http(s) with a host; a redirect to anything else is refused like a bad URL."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        what = "is not" if first else f"redirected to {url[:200]!r}, which is not"
        raise invalid(f"The image URL {what} an http(s) URL with a host.", param, "invalid_image_url")
    return parsed


def _port(url) -> int:
    return 443 if url.scheme == "https" else 80


async def _read(response, chunks: list[bytes], max_bytes: int, param: str) -> None:
    """The body into `chunks`, refusing a non-200 answer and stopping as soon as it passes `max_bytes`."""
    if response.status_code != 200:
        raise invalid(f"Fetching the image failed with HTTP {response.status_code}.", param, "image_fetch_failed")
    declared = response.headers.get("content-length")
    too_big = invalid(f"Image is larger than the limit of {max_bytes} bytes.", param, "image_too_large")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
