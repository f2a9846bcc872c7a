"""Fetching web pages safely: allowlisted hosts only, public addresses only, robots.txt, paced per host.

Server-side request forgery is the risk: a URL (or a redirect, or a DNS answer that changes between a
check and the connection) that makes the gateway reach something on its own network. So every hop is
checked on its own — scheme, host on AION_URL_ALLOWLIST, robots.txt — and the host name is resolved
here, every address checked, and the connection made to the checked address itself (the Host header
and the TLS server name keep the real name, so certificates are still verified against it). No second
lookup happens between the check and the connection.

robots.txt is parsed with Protego (RFC 9309: longest match wins, `*` and `$` patterns), which the
stdlib's urllib.robotparser does not implement (it takes the first matching rule, without wildcards).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx
from protego import Protego

from shared.errors import AionError, BadRequest, Forbidden

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# What the extractor reads, by content type; anything else is refused before its body is read.
CONTENT_KINDS = {"text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
                 "text/plain": ".txt", "text/markdown": ".md"}
_REDIRECTS = {301, 302, 303, 307, 308}
_ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to read at least 500 KiB
_ROBOTS_TTL_S = 3600.0


class FetchError(AionError):
    """A page that could not be fetched, with the reason (status 502 unless a subclass says otherwise)."""

    status_code = 502
    code = "fetch_failed"
    error_type = "invalid_request_error"


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...]
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 30.0
    host_interval_s: float = 1.0
    host_concurrency: int = 2
    max_redirects: int = 5
    user_agent: str = "AION/0.1"

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                if host.endswith(entry[1:]):
                    return True
            elif host == entry:
                return True
        return False

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed_networks):
            return True
        return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class FetchedPage:
    url: str  # after redirects
    status: Literal[200, 304]
    content_type: str = ""
    data: bytes = b""
    etag: str | None = None
    last_modified: str | None = None

    @property
    def suffix(self) -> str:
        return CONTENT_KINDS.get(self.content_type, "")


@dataclass
class _Robots:
    expires: float
    parser: Protego | None  # None: no rules (a 4xx robots.txt)
    disallow_all: bool = False


@dataclass
class _HostGate:
    """Per host: how many requests may be open at once, and when the next may start."""

    slots: asyncio.Semaphore
    pace: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_start: float = 0.0


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str) -> httpx.URL:
    """An absolute http(s) URL without credentials, or a 400 saying what is wrong."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BadRequest(f"'{url[:200]}' is not a URL: {exc}", code="invalid_url") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRequest(f"'{url[:200]}' is not an http(s) URL; write it as https://host/path", code="invalid_url")
    if parsed.userinfo:
        raise BadRequest("URLs with a user name or password are not fetched; remove the credentials",
                         code="invalid_url")
    return parsed.copy_with(fragment=None)


class WebFetcher:
    """One per process: it holds the robots.txt cache, the per-host pacing and an HTTP connection pool."""

    def __init__(self, policy: FetchPolicy, *, resolve: Resolver = system_resolver,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self._resolve = resolve
        self._clock = clock
        self._sleep = sleep
        self._robots: dict[str, _Robots] = {}
        self._gates: dict[str, _HostGate] = {}
        # No proxies from the environment: the address checks must apply to the connection itself.
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                       timeout=httpx.Timeout(policy.timeout_s),
                                       headers={"User-Agent": policy.user_agent})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchedPage:
        """The page at `url` (following checked redirects), or 304 when the validators still match.

        AION_URL_TIMEOUT bounds each request (sending it and reading the whole body), not the wait for
        the host's turn: a robots.txt Crawl-delay longer than the timeout slows a crawl, never fails it.
        """
        return await self._fetch(url, etag, last_modified)

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchedPage:
        current = check_url(url)
        conditional = {k: v for k, v in (("If-None-Match", etag), ("If-Modified-Since", last_modified)) if v}
        for _ in range(self.policy.max_redirects + 1):
            self._check_host(current)
            await self._check_robots(current)
            async with self._open(current, conditional) as response:
                if response.status_code in _REDIRECTS and response.headers.get("location"):
                    current = check_url(urljoin(str(current), response.headers["location"]))
                    continue
                if response.status_code == 304 and conditional:
                    return FetchedPage(url=str(current), status=304, etag=etag, last_modified=last_modified)
                if response.status_code >= 400 or response.status_code != 200:
                    raise FetchError(f"{current} answered HTTP {response.status_code}", code="fetch_failed")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type not in CONTENT_KINDS:
                    raise FetchError(f"{current} is {content_type or 'of no declared type'}; AION reads "
                                     f"{', '.join(sorted(CONTENT_KINDS))}", status_code=415, code="unsupported_type")
                data = await self._read_capped(response, str(current))
                return FetchedPage(url=str(current), status=200, content_type=content_type, data=data,
                                   etag=response.headers.get("etag"),
                                   last_modified=response.headers.get("last-modified"))
        raise FetchError(f"{url} redirected more than {self.policy.max_redirects} times (AION_URL_MAX_REDIRECTS)",
                         code="too_many_redirects")

    def _check_host(self, url: httpx.URL) -> None:
        if not self.policy.allowed_hosts:
            raise Forbidden("web pages are off: no host is allowed; list the hosts AION may fetch in "
                            "AION_URL_ALLOWLIST (e.g. docs.example.com,*.example.org)", code="host_not_allowed")
        if not self.policy.host_allowed(url.host):
            raise Forbidden(f"{url.host} is not on AION_URL_ALLOWLIST; add it there to fetch {url}",
                            code="host_not_allowed")

    async def _addresses(self, url: httpx.URL) -> list[str]:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(url.host, port)
        except OSError as exc:
            raise FetchError(f"{url.host} could not be resolved ({exc})", code="dns_failed") from exc
        if not addresses:
            raise FetchError(f"{url.host} has no address", code="dns_failed")
        refused = [a for a in addresses if not self.policy.address_allowed(a)]
        if refused:
            # Any private answer refuses the host: a name that mixes public and internal addresses
            # could otherwise be made to reach the internal one.
            raise Forbidden(f"{url.host} resolves to {refused[0]}, a loopback, private or link-local address; "
                            "AION does not fetch those unless AION_URL_ALLOW_NETWORKS lists the network",
                            code="address_not_allowed")
        return addresses

    def _gate(self, host: str) -> _HostGate:
        gate = self._gates.get(host)
        if gate is None:
            gate = self._gates[host] = _HostGate(asyncio.Semaphore(self.policy.host_concurrency))
        return gate

    async def _wait_turn(self, gate: _HostGate, interval: float) -> None:
        """Requests to one host start at least `interval` seconds apart."""
        async with gate.pace:
            now = self._clock()
            if gate.next_start > now:
                await self._sleep(gate.next_start - now)
                now = self._clock()
            gate.next_start = now + interval

    def _open(self, url: httpx.URL, headers: dict[str, str]) -> _OpenResponse:
        return _OpenResponse(self, url, headers)

    async def _send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        address = (await self._addresses(url))[0]
        robots = self._robots.get(_origin(url))
        delay = (robots.parser.crawl_delay(self.policy.user_agent) if robots and robots.parser else None) or 0.0
        gate = self._gate(url.host)
        await gate.slots.acquire()
        try:
            await self._wait_turn(gate, max(self.policy.host_interval_s, float(delay)))
            # Connect to the address just checked; Host and the TLS server name stay the real host's.
            pinned = url.copy_with(host=address)
            request = self._http.build_request("GET", pinned, headers={**headers, "Host": url.netloc.decode("ascii")},
                                               extensions={"sni_hostname": url.host})
            try:
                async with asyncio.timeout(self.policy.timeout_s):
                    return await self._http.send(request, stream=True)
            except (httpx.TimeoutException, TimeoutError) as exc:
                raise FetchError(f"{url} did not answer within {self.policy.timeout_s:g} s (AION_URL_TIMEOUT)",
                                 status_code=504, code="fetch_timeout") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"{url} could not be fetched ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            gate.slots.release()
            raise

    async def _read_capped(self, response: httpx.Response, url: str) -> bytes:
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length")
        too_big = FetchError(f"{url} is larger than {limit / 1048576:g} MiB (AION_URL_MAX_MB)", status_code=413,
                             code="page_too_large")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        parts, size = [], 0
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    parts.append(chunk)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise FetchError(f"{url} did not send its page within {self.policy.timeout_s:g} s (AION_URL_TIMEOUT)",
                             status_code=504, code="fetch_timeout") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{url} broke off while sending its page ({type(exc).__name__})") from exc
        return b"".join(parts)

    async def _check_robots(self, url: httpx.URL) -> None:
        origin = _origin(url)
        robots = self._robots.get(origin)
        if robots is None or robots.expires < self._clock():
            robots = self._robots[origin] = await self._load_robots(url)
        path = url.raw_path.decode("ascii")
        if robots.disallow_all or (robots.parser is not None
                                   and not robots.parser.can_fetch(path, self.policy.user_agent)):
            raise Forbidden(f"{origin}/robots.txt does not allow fetching {url}", code="robots_disallowed")

    async def _load_robots(self, url: httpx.URL) -> _Robots:
        """RFC 9309: 4xx means no rules; 5xx or unreachable means nothing may be fetched (for now)."""
        expires = self._clock() + _ROBOTS_TTL_S
        target = url.copy_with(path="/robots.txt", query=None, fragment=None)
        try:
            for _ in range(self.policy.max_redirects + 1):
                self._check_host(target)
                async with self._open(target, {}) as response:
                    if response.status_code in _REDIRECTS and response.headers.get("location"):
                        target = check_url(urljoin(str(target), response.headers["location"]))
                        continue
                    if 400 <= response.status_code < 500:
                        return _Robots(expires, None)
                    if response.status_code != 200:
                        break
                    body = b""
                    try:
                        async with asyncio.timeout(self.policy.timeout_s):
                            async for chunk in response.aiter_bytes():
                                body += chunk
                                if len(body) >= _ROBOTS_MAX_BYTES:
                                    break
                    except (httpx.HTTPError, TimeoutError) as exc:
                        raise FetchError(f"robots.txt broke off ({type(exc).__name__})") from exc
                    return _Robots(expires, Protego.parse(body[:_ROBOTS_MAX_BYTES].decode("utf-8", "replace")))
        except FetchError as exc:
            logger.info("robots.txt of %s unreachable (%s): not fetching from it for now", _origin(url), exc.message)
        # Unreachable: retry sooner than a parsed file would be.
        return _Robots(self._clock() + 60.0, None, disallow_all=True)


class _OpenResponse:
    """`async with fetcher._open(url, headers) as response`: the response, its host slot released after."""

    def __init__(self, fetcher: WebFetcher, url: httpx.URL, headers: dict[str, str]) -> None:
        self.fetcher, self.url, self.headers = fetcher, url, headers
        self.response: httpx.Response | None = None

    async def __aenter__(self) -> httpx.Response:
        self.response = await self.fetcher._send(self.url, self.headers)
        return self.response

    async def __aexit__(self, *exc: object) -> None:
        assert self.response is not None
        try:
            await self.response.aclose()
        finally:
            self.fetcher._gate(self.url.host).slots.release()


def _origin(url: httpx.URL) -> str:
    default = {"http": 80, "https": 443}[url.scheme]
    port = f":{url.port}" if url.port and url.port != default else ""
    return f"{url.scheme}://{url.host}{port}"


def absolute_links(base: str, hrefs: list[str]) -> list[str]:
    """Absolute http(s) URLs of `hrefs` (fragments dropped), in order, without repeats."""
    found: dict[str, None] = {}
    for href in hrefs:
        absolute = urljoin(base, href.strip())
        parts = urlsplit(absolute)
        if parts.scheme in ("http", "https") and parts.netloc:
            found[parts._replace(fragment="").geturl()] = None
    return list(found)
