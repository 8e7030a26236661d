"""The Discord client against the fake Discord (a real HTTP server on 127.0.0.1).

What is checked is what went over the wire (``fake.posts``) and what Discord
would have made of it (``fake.messages``), never a mocked ``requests``.
"""

from __future__ import annotations

import time

import pytest
import requests

from mailgate.clients.discord import (MAX_CONTENT, SUPPRESS_EMBEDS, DiscordClient, DiscordConfigError,
                              DiscordRateLimited, DiscordRejected, DiscordUnavailable,
                              UnknownChannel, Webhook, discord_length, escape_markdown, fit)
from mailgate.errors import ConfigError, PermanentError, TemporaryError
from tests.fakes.discord import FakeDiscord


@pytest.fixture
def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    return fake_discord


class Sleeps(list):
    """A sleep that really sleeps, and remembers how long it was asked to."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def client(fake: FakeDiscord, **kwargs) -> DiscordClient:
    return DiscordClient(fake.api_base, **{"timeout": 2.0, **kwargs})


def hook(fake: FakeDiscord, forum: bool = True) -> Webhook:
    return Webhook.from_url(fake.add_webhook(forum=forum))


# -------------------------------------------------------------- webhooks


def test_a_forum_post_opens_a_thread_and_follow_ups_go_into_it(fake):
    discord, webhook = client(fake), hook(fake)
    first = discord.execute_webhook(webhook, "first", thread_name="#7 Printer")
    second = discord.execute_webhook(webhook, "second", thread_id=first.channel_id)

    [thread] = fake.threads()
    assert (thread.name, thread.parent_id) == ("#7 Printer", fake.webhook_channel(
        f"https://discord.com/api/webhooks/{webhook.id}/{webhook.token}"))
    assert first.channel_id == second.channel_id == thread.id
    assert [m["content"] for m in thread.messages] == ["first", "second"]
    assert [p.query for p in fake.posts] == [{"wait": "true"},
                                            {"wait": "true", "thread_id": thread.id}]


def test_every_message_is_sent_without_pings_and_without_link_previews(fake):
    discord, webhook = client(fake), hook(fake, forum=False)
    discord.execute_webhook(webhook, "@everyone <@&123> <@456> see https://example.org/x")

    [post] = fake.posts
    assert post.json["allowed_mentions"] == {"parse": []}
    assert post.json["flags"] & SUPPRESS_EMBEDS
    [message] = fake.messages
    assert (message["mention_everyone"], message["mention_roles"], message["mentions"]) == (
        False, [], [])
    assert message["embeds"] == []


def test_the_fake_shows_what_an_unguarded_message_would_do(fake):
    # The fake must be able to fail the test above: the same content without our guards.
    url = fake.add_webhook(forum=False).replace("https://discord.com/api", fake.api_base)
    requests.post(url, json={"content": "@everyone <@&123> https://example.org/x"}, timeout=2)
    [message] = fake.messages
    assert message["mention_everyone"] and message["mention_roles"] == ["123"]
    assert message["embeds"] == [{"type": "link", "url": "https://example.org/x"}]


def test_content_over_2000_characters_is_rejected_with_discords_form_error(fake):
    with pytest.raises(DiscordRejected) as caught:
        client(fake).execute_webhook(hook(fake, forum=False), "x" * (MAX_CONTENT + 1))
    assert caught.value.code == 50035
    assert caught.value.errors == {"content": {"_errors": [
        {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}
    assert "content: Must be 2000 or fewer in length." in str(caught.value)
    assert isinstance(caught.value, PermanentError)
    assert fake.messages == []


def test_an_empty_message_is_rejected(fake):
    with pytest.raises(DiscordRejected) as caught:
        client(fake).execute_webhook(hook(fake, forum=False), "  ")
    assert caught.value.code == 50006


def test_a_forum_needs_a_thread_name_or_a_thread_id(fake):
    # Only a config saying "forum: false" for a forum's webhook sends this: the operator's.
    with pytest.raises(DiscordConfigError, match="code 220001"):
        client(fake).execute_webhook(hook(fake), "lost")


def test_a_thread_name_for_a_channel_that_is_no_forum_is_for_the_operator(fake):
    # The config says "forum" and the webhook is a text channel's: no post could pass.
    with pytest.raises(DiscordConfigError) as caught:
        client(fake).execute_webhook(hook(fake, forum=False), "x", thread_name="#1")
    assert "220003" in str(caught.value)


def test_a_deleted_thread_is_an_unknown_channel(fake):
    discord, webhook = client(fake), hook(fake)
    thread = discord.execute_webhook(webhook, "first", thread_name="#1").channel_id
    fake.delete_thread(thread)
    with pytest.raises(UnknownChannel):
        discord.execute_webhook(webhook, "second", thread_id=thread)


@pytest.mark.parametrize("broken", ["id", "token"])
def test_a_wrong_webhook_is_for_the_operator_and_its_token_is_never_shown(fake, broken):
    real = hook(fake)
    webhook = Webhook("99", real.token) if broken == "id" else Webhook(real.id, "other-secret")
    with pytest.raises(DiscordConfigError) as caught:
        client(fake).execute_webhook(webhook, "x", thread_name="#1")
    assert isinstance(caught.value, ConfigError)
    assert webhook.token not in str(caught.value) and webhook.token not in repr(webhook)


def test_webhook_urls_of_any_host_and_version_are_understood():
    for url in ("https://discord.com/api/webhooks/123/ab-C_d.e",
                "https://discordapp.com/api/v10/webhooks/123/ab-C_d.e/",
                "https://ptb.discord.com/api/webhooks/123/ab-C_d.e?wait=true"):
        assert Webhook.from_url(url) == Webhook("123", "ab-C_d.e")
    with pytest.raises(ValueError):
        Webhook.from_url("https://discord.com/channels/123/456")


# -------------------------------------------------------------- failures


def test_503_refused_connections_and_timeouts_are_temporary(fake):
    discord, webhook = client(fake, timeout=0.3), hook(fake, forum=False)
    fake.down = True
    with pytest.raises(DiscordUnavailable):
        discord.execute_webhook(webhook, "x")
    fake.down, fake.delay = False, 1.0
    with pytest.raises(DiscordUnavailable, match="no answer within 0.3 s"):
        discord.execute_webhook(webhook, "x")
    fake.delay = 0
    fake.stop()
    try:
        with pytest.raises(DiscordUnavailable) as caught:
            discord.execute_webhook(webhook, "x")
        # requests names the URL in its errors; the token must not reach logs.
        assert webhook.token not in str(caught.value)
        assert isinstance(caught.value, TemporaryError)
    finally:
        fake.start()
    assert discord.execute_webhook(webhook, "back").message_id
    assert len(fake.messages) == 1


# -------------------------------------------------------------- rate limits


def test_a_429_says_how_long_to_wait_from_its_body_or_its_header(fake):
    discord, webhook = client(fake), hook(fake, forum=False)
    fake.rate_limit_next(1, retry_after=0.25)
    with pytest.raises(DiscordRateLimited) as caught:
        discord.execute_webhook(webhook, "x")
    assert (caught.value.retry_after, caught.value.is_global) == (0.25, False)
    fake.rate_limit_next(1, retry_after=2, header_only=True)
    with pytest.raises(DiscordRateLimited) as caught:
        discord.execute_webhook(webhook, "x")
    assert caught.value.retry_after == 2.0
    assert isinstance(caught.value, DiscordUnavailable)


def test_after_a_global_429_every_bucket_waits(fake):
    sleeps = Sleeps()
    discord = client(fake, sleep=sleeps)
    fake.rate_limit_next(1, retry_after=0.2, is_global=True)
    with pytest.raises(DiscordRateLimited) as caught:
        discord.execute_webhook(hook(fake, forum=False), "x")
    assert caught.value.is_global
    discord.execute_webhook(hook(fake, forum=False), "other webhook")
    assert len(sleeps) == 1 and 0.1 < sleeps[0] <= 0.2


def test_remaining_zero_makes_the_next_request_wait_instead_of_hitting_429(fake):
    fake.bucket_limit, fake.bucket_window = 2, 0.4
    sleeps = Sleeps()
    discord, webhook = client(fake, sleep=sleeps), hook(fake, forum=False)
    started = time.monotonic()
    for n in range(6):
        discord.execute_webhook(webhook, f"post {n}")
    assert fake.statuses() == {200: 6}
    assert len(sleeps) == 2 and time.monotonic() - started >= 0.6
    # Without the headers the client would have run into the fake's limit:
    fake.bucket_limit = 1
    url = f"{fake.api_base}/webhooks/{webhook.id}/{webhook.token}"
    answers = [requests.post(url, json={"content": "x"}, timeout=2).status_code
               for _ in range(2)]
    assert answers[-1] == 429


# -------------------------------------------------------------- bot


def test_a_bot_starts_a_public_thread_and_posts_in_it(fake):
    channel = fake.add_channel("text")
    discord = client(fake, bot_token=fake.bot_token)
    thread = discord.start_thread(channel, "#3 Printer")
    posted = discord.create_message(thread, "hello @everyone", nonce="n1")

    [made] = fake.threads(channel)
    assert (made.id, made.kind, made.name) == (thread, "public_thread", "#3 Printer")
    assert posted.channel_id == thread and made.messages[0]["mention_everyone"] is False
    assert fake.posts[0].headers["authorization"] == f"Bot {fake.bot_token}"
    assert fake.posts[1].json["allowed_mentions"] == {"parse": []}


def test_a_bot_repeat_with_the_same_nonce_is_not_posted_twice(fake):
    # Discord saved the message but its answer came too late: the retry is dropped.
    channel = fake.add_channel("text")
    discord = client(fake, bot_token=fake.bot_token, timeout=0.3)
    fake.delay_after = 0.6
    with pytest.raises(DiscordUnavailable):
        discord.create_message(channel, "once", nonce="mail-key-hash")
    fake.delay_after = 0
    again = discord.create_message(channel, "once", nonce="mail-key-hash")
    assert len(fake.messages) == 1 and again.message_id == fake.messages[0]["id"]


def test_a_wrong_bot_token_or_channel_is_for_the_operator(fake):
    channel = fake.add_channel("text")
    with pytest.raises(DiscordConfigError):
        client(fake, bot_token="wrong").create_message(channel, "x")
    with pytest.raises(UnknownChannel):
        client(fake, bot_token=fake.bot_token).start_thread("12345678", "#1")


# -------------------------------------------------------------- safe text


def test_markdown_in_mail_is_shown_as_written():
    text = "*bold* _it_ ~~s~~ `code` ||spoiler|| [x](https://evil.example) <@&1>\n# Title\n- item\n1. one\n> quote"
    assert escape_markdown(text) == (
        r"\*bold\* \_it\_ \~\~s\~\~ \`code\` \|\|spoiler\|\| \[x\](<https://evil.example>)"
        r" \<@&1\>" "\n" r"\# Title" "\n" r"\- item" "\n" r"1\. one" "\n" r"\> quote")


def test_links_stay_clickable_without_escapes_inside_them():
    assert escape_markdown("see https://example.org/a_b?q=*x*.") == (
        "see <https://example.org/a_b?q=*x*>.")


def test_fit_cuts_before_an_escape_or_a_link_never_inside_one():
    assert fit(r"ab\*cd", 4) == "ab…"
    assert fit("ab <https://example.org/long> cd", 20) == "ab…"
    assert fit("short", 5) == "short"


def test_length_is_counted_as_discord_counts_at_most():
    assert discord_length("x😀") == 3
    assert discord_length(fit("😀" * 1500, MAX_CONTENT)) <= MAX_CONTENT


# -------------------------------------------------------------- reading (issue 14)


def bot_thread(fake: FakeDiscord, discord: DiscordClient) -> str:
    return discord.start_thread(fake.add_channel("text"), "#7 Printer")


def test_messages_after_pages_forward_oldest_first(fake):
    discord = client(fake, bot_token=fake.bot_token)
    thread = bot_thread(fake, discord)
    ids = [fake.post_as_user(thread, f"m{n}", user_id="7", username="dana")["id"]
           for n in range(5)]
    first = discord.messages_after(thread, 0, limit=3)
    assert [m["id"] for m in first] == ids[:3]
    assert [m["id"] for m in discord.messages_after(thread, int(first[-1]["id"]))] == ids[3:]
    [read] = [p for p in fake.posts if p.method == "GET"][:1]
    assert read.query == {"after": "0", "limit": "3"}
    assert discord.current_user()["id"] == fake.bot_user["id"]


def test_a_429_on_reading_says_how_long_and_leaves_posting_alone(fake):
    discord = client(fake, bot_token=fake.bot_token)
    thread = bot_thread(fake, discord)
    fake.rate_limit_next(1, retry_after=40.0, method="GET")
    with pytest.raises(DiscordRateLimited) as raised:
        discord.messages_after(thread, 0)
    assert raised.value.retry_after == 40.0
    # Reading's bucket waits; posting's does not.
    discord.create_message(thread, "still posting")
    with pytest.raises(DiscordRateLimited):
        discord.messages_after(thread, 0)
    assert [p.method for p in fake.posts].count("GET") == 1


def test_an_attachment_is_downloaded_without_the_token_and_never_past_the_limit(fake):
    discord = client(fake, bot_token=fake.bot_token)
    thread = bot_thread(fake, discord)
    message = fake.post_as_user(thread, "files", user_id="7", username="dana",
                                files=(("small.txt", b"tiny", "text/plain"),
                                       ("big.bin", b"x" * 300_000, "application/octet-stream")))
    small, big = (a["url"] for a in message["attachments"])
    assert discord.download(small, 1000) == b"tiny"
    assert len(discord.download(big, 1000)) == 1001        # enough to know it is too big
    assert all("authorization" not in p.headers for p in fake.posts if "attachments" in p.path)
    with pytest.raises(DiscordRejected):
        discord.download(small.replace(message["attachments"][0]["id"], "1"), 1000)
    fake.down = True
    with pytest.raises(DiscordUnavailable):
        discord.download(small, 1000)
