"""The fake Discord reads as Discord documents it (issue 14, point 5): the shapes and
rules a bot meets when it reads a thread back, each pinned to the page that states it.

The fake is what every Discord test trusts; if it answered a shape Discord never
sends, mailgate could pass here and fail against Discord.  So its answers are
checked against the documented structures (field names and JSON types), raw,
with ``requests``: nothing of mailgate's own client is in between.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests

from tests.fakes.discord import DISCORD_EPOCH_MS, FakeDiscord

DOCS = "https://discord.com/developers/docs"

#: https://discord.com/developers/docs/resources/message#message-object: the fields every
#: message has (the ones marked "?" are optional and not checked), with their JSON types.
MESSAGE = {"id": str, "channel_id": str, "author": dict, "content": str, "timestamp": str,
           "edited_timestamp": (str, type(None)), "tts": bool, "mention_everyone": bool,
           "mentions": list, "mention_roles": list, "attachments": list, "embeds": list,
           "pinned": bool, "type": int}
#: .../resources/user#user-object
USER = {"id": str, "username": str, "discriminator": str, "global_name": (str, type(None)),
        "avatar": (str, type(None))}
#: .../resources/message#attachment-object
ATTACHMENT = {"id": str, "filename": str, "size": int, "url": str, "proxy_url": str}
#: .../topics/rate-limits#exceeding-a-rate-limit: the body of a 429.
RATE_LIMITED = {"message": str, "retry_after": (int, float), "global": bool}


@pytest.fixture
def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    return fake_discord


def shaped(value: dict, shape: dict) -> list[str]:
    """What in ``value`` differs from the documented ``shape`` (empty: nothing)."""
    return [f"{key}: {type(value.get(key)).__name__}" for key, kind in shape.items()
            if not isinstance(value.get(key, KeyError), kind)]


def read(fake: FakeDiscord, channel: str, **params) -> requests.Response:
    return requests.get(f"{fake.api_base}/channels/{channel}/messages", params=params,
                        headers={"Authorization": f"Bot {fake.bot_token}"}, timeout=5)


def thread_with(fake: FakeDiscord, count: int) -> tuple[str, list[str]]:
    """A bot's thread in a text channel with ``count`` messages by a person; their ids."""
    thread = requests.post(f"{fake.api_base}/channels/{fake.add_channel('text')}/threads",
                           json={"name": "#1 Printer", "type": 11}, timeout=5,
                           headers={"Authorization": f"Bot {fake.bot_token}"}).json()["id"]
    ids = [fake.post_as_user(thread, f"m{n}", user_id="80351110224678912", username="dana",
                             global_name="Dana D")["id"] for n in range(count)]
    return thread, ids


def test_a_message_and_its_author_and_files_have_the_documented_shapes(fake):
    thread, _ = thread_with(fake, 0)
    fake.post_as_user(thread, "see the photo", user_id="80351110224678912", username="dana",
                      global_name="Dana D", files=(("router.jpg", b"\xff\xd8jpeg", "image/jpeg"),))
    [message] = read(fake, thread).json()
    assert shaped(message, MESSAGE) == []
    assert shaped(message["author"], USER) == []
    assert shaped(message["attachments"][0], ATTACHMENT) == []
    assert "webhook_id" not in message               # a person's message has none
    # ISO8601 timestamps, as documented.
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None
    # The attachment's url is the CDN's: fetched without the bot's token.
    got = requests.get(message["attachments"][0]["url"], timeout=5)
    assert got.content == b"\xff\xd8jpeg" and message["attachments"][0]["size"] == 6
    assert "authorization" not in fake.posts[-1].headers


def test_webhook_and_bot_messages_are_told_apart_as_documented(fake):
    # .../resources/message#message-object, note [1]: a webhook's message names the
    # webhook as its author and carries webhook_id; a bot's author has "bot": true.
    url = fake.add_webhook(forum=False).replace("https://discord.com/api", fake.api_base)
    requests.post(url, params={"wait": "true"}, json={"content": "by the webhook"}, timeout=5)
    hook_id = url.split("/")[-2]
    channel = fake.webhooks[hook_id][1]
    [message] = read(fake, channel).json()
    assert message["webhook_id"] == hook_id == message["author"]["id"]
    me = requests.get(f"{fake.api_base}/users/@me", timeout=5,
                      headers={"Authorization": f"Bot {fake.bot_token}"}).json()
    assert shaped(me, USER) == [] and me["bot"] is True


def test_snowflakes_grow_with_time_and_tell_when(fake):
    # .../reference#snowflakes: milliseconds since the Discord epoch, shifted by 22 bits.
    _, ids = thread_with(fake, 3)
    assert ids == sorted(ids, key=int) and len(set(ids)) == 3
    made = (int(ids[0]) >> 22) + DISCORD_EPOCH_MS
    assert abs(made / 1000 - datetime.now(timezone.utc).timestamp()) < 60


def test_messages_come_newest_first_fifty_by_default_and_page_by_after_and_before(fake):
    # .../resources/message#get-channel-messages: limit 1-100, default 50.
    thread, ids = thread_with(fake, 120)
    newest = read(fake, thread).json()
    assert [m["id"] for m in newest] == ids[::-1][:50]
    # after: the messages just after it (the oldest of the newer ones), newest first.
    page = read(fake, thread, after=ids[9], limit=100).json()
    assert [m["id"] for m in page] == ids[10:110][::-1]
    assert [m["id"] for m in read(fake, thread, after=ids[-1]).json()] == []
    assert [m["id"] for m in read(fake, thread, before=ids[5], limit=3).json()] == \
        ids[2:5][::-1]
    assert [m["id"] for m in read(fake, thread, around=ids[50], limit=3).json()] == \
        ids[49:52][::-1]


@pytest.mark.parametrize("params", [{"limit": 101}, {"limit": 0}, {"limit": "x"},
                                    {"after": "1", "before": "2"}, {"after": "soon"}])
def test_a_bad_query_is_an_invalid_form_body(fake, params):
    thread, _ = thread_with(fake, 1)
    answer = read(fake, thread, **params)
    assert answer.status_code == 400
    assert answer.json()["code"] == 50035 and "errors" in answer.json()


def test_a_deleted_message_is_not_listed_and_an_edited_one_says_so(fake):
    thread, ids = thread_with(fake, 3)
    fake.delete_message(thread, ids[1])
    fake.edit_message(thread, ids[2], "m2, corrected")
    listed = read(fake, thread).json()
    assert [m["id"] for m in listed] == [ids[2], ids[0]]
    assert listed[0]["content"] == "m2, corrected" and listed[0]["edited_timestamp"]
    assert listed[1]["edited_timestamp"] is None


def test_without_the_message_content_intent_peoples_words_are_empty(fake):
    # .../events/gateway#message-content-intent: content, embeds and attachments empty,
    # except in the bot's own messages and those that mention it.
    thread, _ = thread_with(fake, 0)
    fake.post_as_user(thread, "with a file", user_id="7", username="dana",
                      files=(("a.txt", b"a", "text/plain"),))
    fake.post_as_user(thread, f"<@{fake.bot_user['id']}> look", user_id="7", username="dana")
    fake.message_content_intent = False
    mention, plain = read(fake, thread).json()
    assert (plain["content"], plain["attachments"], plain["embeds"]) == ("", [], [])
    assert mention["content"].endswith("look")


def test_an_archived_thread_is_read_and_posting_unarchives_it_unless_locked(fake):
    # .../topics/threads: "Sending a message will automatically unarchive the thread,
    # unless the thread has been locked by a moderator."
    thread, ids = thread_with(fake, 2)
    fake.archive_thread(thread)
    assert [m["id"] for m in read(fake, thread).json()] == ids[::-1]
    fake.post_as_user(thread, "still there?", user_id="7", username="dana")
    assert not fake.channels[thread].archived
    fake.archive_thread(thread, locked=True)
    answer = requests.post(f"{fake.api_base}/channels/{thread}/messages", timeout=5,
                           json={"content": "hello"},
                           headers={"Authorization": f"Bot {fake.bot_token}"})
    assert (answer.status_code, answer.json()["code"]) == (400, 50083)


def test_reading_needs_the_bot_token_and_a_channel_that_exists(fake):
    thread, _ = thread_with(fake, 1)
    anonymous = requests.get(f"{fake.api_base}/channels/{thread}/messages", timeout=5)
    assert anonymous.status_code == 401
    fake.delete_thread(thread)
    gone = read(fake, thread)
    assert (gone.status_code, gone.json()["code"]) == (404, 10003)


def test_reading_and_posting_are_rate_limited_in_buckets_of_their_own(fake):
    # .../topics/rate-limits: per route (and top-level resource), with X-RateLimit-*
    # headers; over the limit, 429 with retry_after in the body.
    fake.bucket_limit, fake.bucket_window = 2, 5.0
    thread, _ = thread_with(fake, 1)
    answers = [read(fake, thread) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Remaining"] == "1"
    assert float(answers[0].headers["X-RateLimit-Reset-After"]) > 0
    limited = answers[2]
    assert shaped(limited.json(), RATE_LIMITED) == []
    assert 0 < limited.json()["retry_after"] <= 5 and limited.headers["Retry-After"]
    # The thread's posting bucket is its own: not used up by the reads.
    posted = requests.post(f"{fake.api_base}/channels/{thread}/messages", timeout=5,
                           json={"content": "hello"},
                           headers={"Authorization": f"Bot {fake.bot_token}"})
    assert posted.status_code == 200
