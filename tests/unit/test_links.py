"""Signed links to kept files, and reading Discord's URL expiry."""

from __future__ import annotations

from bot.jobs.inputs import url_expired
from bot.pictures.links import FileLinks


def test_a_link_is_valid_until_it_expires_and_cannot_be_altered() -> None:
    links = FileLinks("https://bot.example", secret=b"s" * 32)
    url = links.url_for(7, "input-0.png", ttl=60, now=1000.0)
    assert url.startswith("https://bot.example/files/7/input-0.png?exp=1060&sig=")
    signature = url.rsplit("sig=", 1)[1]
    assert links.valid(7, "input-0.png", "1060", signature, now=1059)
    assert not links.valid(7, "input-0.png", "1060", signature, now=1061)
    assert not links.valid(8, "input-0.png", "1060", signature, now=1000)
    assert not links.valid(7, "input-1.png", "1060", signature, now=1000)
    assert not links.valid(7, "input-0.png", "9999", signature, now=1000)
    assert not FileLinks("https://bot.example", secret=b"t" * 32).valid(
        7, "input-0.png", "1060", signature, now=1000
    )


def test_every_process_of_a_bot_honours_the_links_another_signed() -> None:
    """A host may fetch an input from whichever process its request reaches."""
    signer, checker = (FileLinks.for_bot("https://bot.example", "bot-token") for _ in range(2))
    url = signer.url_for(7, "input-0.png", ttl=60, now=1000.0)
    signature = url.rsplit("sig=", 1)[1]
    assert checker.valid(7, "input-0.png", "1060", signature, now=1001)
    other_bot = FileLinks.for_bot("https://bot.example", "another-token")
    assert not other_bot.valid(7, "input-0.png", "1060", signature, now=1001)


def test_only_kept_inputs_can_be_linked() -> None:
    links = FileLinks("https://bot.example")
    for name in ("../retouch.db", "output-0.png", "input-0.png/../../x", "input-0.exe"):
        assert not links.valid(1, name, "9999999999", "0" * 64)


def test_discord_url_expiry() -> None:
    assert url_expired("https://cdn.discordapp.com/attachments/1/2/a.png?ex=00000001&is=0&hm=x")
    assert not url_expired("https://cdn.discordapp.com/attachments/1/2/a.png?ex=7fffffff&is=0&hm=x")
    assert not url_expired("https://example.com/a.png")
    assert url_expired("https://cdn.discordapp.com/a.png?ex=zzzz")


def test_a_crafted_expiry_is_refused_not_an_error() -> None:
    """Unicode digits pass str.isdigit() but not int(), and a huge number of digits trips
    Python's conversion limit: either would have been a 500 from the public web port."""
    links = FileLinks("https://bot.example", secret=b"s" * 32)
    for expires in ("²", "١٢٣", "9" * 5000, "", "-1", "1e9"):
        assert not links.valid(7, "input-0.png", expires, "0" * 64, now=1000)
