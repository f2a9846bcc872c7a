"""The web fetcher against a real HTTP server on 127.0.0.1: allowlist, address checks on every hop,
robots.txt, per-host pacing, size and time limits. Each refusal also checks the page was never requested."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator

import pytest

from services.gateway.services.webfetch import FetchError, FetchPolicy, WebFetcher
from shared.errors import AionError, BadRequest, Forbidden
from tests.fixtures.web_site import ROBOTS, Site, run_site

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.fixture(scope="module")
def module_site() -> Iterator[Site]:
    with run_site() as site:
        yield site


@pytest.fixture
def site(module_site: Site) -> Site:
    module_site.requests.clear()
    return module_site


class FakeClock:
    """Time that moves only when the fetcher sleeps: the pacing is checked without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def policy(**overrides) -> FetchPolicy:
    values = {"allowed_hosts": ("127.0.0.1",), "allowed_networks": LOOPBACK, "host_interval_s": 0.0,
              "timeout_s": 30.0}
    values.update(overrides)
    return FetchPolicy(**values)


@pytest.fixture
async def fetcher_for() -> AsyncIterator:
    made: list[WebFetcher] = []

    def make(p: FetchPolicy, **kwargs) -> WebFetcher:
        made.append(WebFetcher(p, **kwargs))
        return made[-1]

    yield make
    for f in made:
        await f.aclose()


async def test_fetches_an_allowed_page_with_its_validators(site, fetcher_for) -> None:
    fetcher = fetcher_for(policy())
    page = await fetcher.fetch(f"{site.url}/guide.html#moorings")
    assert page.status == 200 and page.content_type == "text/html" and b"Harbour guide" in page.data
    assert page.etag and page.last_modified
    assert site.paths() == ["/robots.txt", "/guide.html"]  # robots first; no fragment sent
    assert site.requests[1][1]["user-agent"].startswith("AION")
    again = await fetcher.fetch(f"{site.url}/guide.html", etag=page.etag, last_modified=page.last_modified)
    assert again.status == 304 and again.data == b""


async def test_hosts_off_the_allowlist_are_never_contacted(site, fetcher_for) -> None:
    with pytest.raises(Forbidden, match="AION_URL_ALLOWLIST") as refused:
        await fetcher_for(policy(allowed_hosts=("docs.example.org",))).fetch(f"{site.url}/guide.html")
    assert refused.value.code == "host_not_allowed"
    with pytest.raises(Forbidden, match="no host is allowed"):
        await fetcher_for(policy(allowed_hosts=())).fetch(f"{site.url}/guide.html")
    assert site.requests == []


async def test_private_addresses_are_refused_unless_their_network_is_allowed(site, fetcher_for) -> None:
    with pytest.raises(Forbidden, match="loopback, private or link-local") as refused:
        await fetcher_for(policy(allowed_networks=())).fetch(f"{site.url}/guide.html")
    assert refused.value.code == "address_not_allowed" and "AION_URL_ALLOW_NETWORKS" in refused.value.message
    assert site.requests == []
    p = policy(allowed_networks=())
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1",
                    "fe80::1", "fd00::1", "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"):
        assert not p.address_allowed(address), address
    assert p.address_allowed("93.184.215.14") and p.address_allowed("2606:4700::6810:85e5")


async def test_the_checked_address_is_the_one_connected_to(site, fetcher_for) -> None:
    """No second DNS lookup: the name resolves once, here, and the connection goes to that address."""
    port = site.url.rsplit(":", 1)[1]

    async def resolve(host: str, _port: int) -> list[str]:
        return {"pages.test": ["127.0.0.1"], "mixed.test": ["93.184.215.14", "127.0.0.1"]}[host]

    fetcher = fetcher_for(policy(allowed_hosts=("pages.test", "mixed.test")), resolve=resolve)
    page = await fetcher.fetch(f"http://pages.test:{port}/linked.html")
    assert b"Tide tables" in page.data
    assert site.requests[-1][1]["host"] == f"pages.test:{port}"
    site.requests.clear()
    # One internal answer among public ones is enough to refuse: the connection could go to either.
    strict = fetcher_for(policy(allowed_hosts=("mixed.test",), allowed_networks=()), resolve=resolve)
    with pytest.raises(Forbidden, match="127.0.0.1"):
        await strict.fetch(f"http://mixed.test:{port}/linked.html")
    assert site.requests == []


async def test_every_redirect_is_checked_again(site, fetcher_for) -> None:
    port = site.url.rsplit(":", 1)[1]
    followed = await fetcher_for(policy()).fetch(f"{site.url}/redirect/linked.html")
    assert followed.url.endswith("/linked.html") and b"Tide tables" in followed.data

    async def resolve(host: str, _port: int) -> list[str]:
        return {"127.0.0.1": ["127.0.0.1"], "internal.test": ["10.20.30.40"]}[host]

    for target, code in ((f"http://localhost:{port}/guide.html", "host_not_allowed"),
                         (f"http://internal.test:{port}/guide.html", "address_not_allowed")):
        site.pages["/redirect-away-target"] = ("text/plain", target.encode())
        site.requests.clear()
        fetcher = fetcher_for(policy(allowed_hosts=("127.0.0.1", "internal.test"),
                                     allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),)), resolve=resolve)
        with pytest.raises(Forbidden) as refused:
            await fetcher.fetch(f"{site.url}/redirect-away")
        assert refused.value.code == code
        assert site.paths() == ["/robots.txt", "/redirect-away"]


async def test_robots_txt_is_honoured_with_longest_match(site, fetcher_for) -> None:
    fetcher = fetcher_for(policy())
    with pytest.raises(Forbidden, match="robots.txt") as refused:
        await fetcher.fetch(f"{site.url}/private/secret.html")
    assert refused.value.code == "robots_disallowed"
    # RFC 9309: the longer `Allow: /private/open.html` wins over `Disallow: /private/`
    # (urllib.robotparser would take the first matching line and refuse it).
    assert b"canteen" in (await fetcher.fetch(f"{site.url}/private/open.html")).data
    assert "/private/secret.html" not in site.paths()
    assert site.paths().count("/robots.txt") == 1  # cached per origin


async def test_requests_to_one_host_are_paced(site, fetcher_for) -> None:
    clock = FakeClock()
    fetcher = fetcher_for(policy(host_interval_s=5.0, allowed_hosts=("127.0.0.1", "localhost")),
                          clock=clock, sleep=clock.sleep)
    for path in ("/guide.html", "/linked.html", "/guide.html"):
        await fetcher.fetch(site.url + path)
    # robots.txt, then three pages: each waits out the interval after the one before.
    assert clock.sleeps == [5.0, 5.0, 5.0]
    assert len(site.requests) == 4
    # Another host has its own pace: its first request does not wait.
    port = site.url.rsplit(":", 1)[1]
    await fetcher.fetch(f"http://localhost:{port}/linked.html")
    assert clock.sleeps == [5.0, 5.0, 5.0, 5.0]  # only its page waited, behind its own robots.txt


async def test_size_time_and_type_limits(site, fetcher_for) -> None:
    site.big_bytes = 3 * 1024 * 1024
    with pytest.raises(FetchError, match="AION_URL_MAX_MB") as big:
        await fetcher_for(policy(max_bytes=1024 * 1024)).fetch(f"{site.url}/big.html")
    assert big.value.status_code == 413
    with pytest.raises(FetchError, match="AION_URL_TIMEOUT") as slow:
        await fetcher_for(policy(timeout_s=1.0)).fetch(f"{site.url}/slow.html")
    assert slow.value.status_code == 504
    with pytest.raises(FetchError, match="image/png") as png:
        await fetcher_for(policy()).fetch(f"{site.url}/picture.png")
    assert png.value.status_code == 415
    with pytest.raises(FetchError, match="HTTP 404"):
        await fetcher_for(policy()).fetch(f"{site.url}/missing.html")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://user:secret@127.0.0.1/", "just words", "http://"])
async def test_bad_urls_are_a_400(fetcher_for, url) -> None:
    with pytest.raises(BadRequest) as refused:
        await fetcher_for(policy()).fetch(url)
    assert isinstance(refused.value, AionError) and refused.value.status_code == 400


async def test_a_robots_crawl_delay_paces_longer_than_the_setting_without_timing_out(site, fetcher_for) -> None:
    site.pages["/robots.txt"] = ("text/plain", ROBOTS + b"Crawl-delay: 7\n")
    try:
        clock = FakeClock()
        fetcher = fetcher_for(policy(host_interval_s=1.0, timeout_s=2.0), clock=clock, sleep=clock.sleep)
        for path in ("/guide.html", "/linked.html"):
            assert (await fetcher.fetch(site.url + path)).status == 200
        # robots.txt went first at the setting's pace; after it, the host's own 7 s apply (longer than the
        # 2 s timeout, which bounds each request, not the wait for its turn).
        assert clock.sleeps == [1.0, 7.0]
    finally:
        site.pages["/robots.txt"] = ("text/plain", ROBOTS)
