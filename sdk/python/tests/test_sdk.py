"""The SDK's own behaviour, as the host's: effects kept only when a call returns, reads
that see the call's writes, the shapes a handler's failures take, the manifest."""

from datetime import timedelta

import pytest

from wharf_sdk import (
    Limits,
    Manifest,
    Message,
    Plugin,
    Reject,
    Retry,
    RetryPolicy,
    config,
    log,
    publish,
    publish_to_exchange,
    publish_to_topic,
    state,
)
from wharf_sdk.testing import Exchange, Queue, TestHost, Topic


class Counter(Plugin):
    """Counts messages per key; publishes each count; fails as the payload asks, after
    its effects."""

    def manifest(self):
        return Manifest("counter", "1.0.0").subscribe("count.*")

    def handle(self, message):
        body = message.json()
        key = f"count:{body['key']}"
        count = state.get_json(key, 0) + 1
        state.set_json(key, count)
        assert state.get_json(key) == count, "a call reads its own writes"
        publish("counts", "counted", {"count": count}, headers={"key": body["key"]})
        publish_to_exchange("events", "counted.v1", "counted", b"raw")
        log.info("counted", key=body["key"])
        if body.get("fail") == "retry":
            raise Retry("busy", delay=timedelta(milliseconds=1500))
        if body.get("fail") == "reject":
            raise Reject("bad")
        if body.get("fail") == "crash":
            raise KeyError("surprise")


def test_a_call_that_returns_commits_its_state_and_publishes():
    host = TestHost()
    host.handle(Counter, Message.new("count.one", {"key": "a"}))
    host.handle(Counter, Message.new("count.one", {"key": "a"}))
    assert host.state_json("count:a") == 2
    assert [(p.destination, p.kind) for p in host.published] == [
        (Queue("counts"), "counted"),
        (Exchange(("events", "counted.v1")), "counted"),
    ] * 2
    assert host.published[2].json() == {"count": 2}
    assert host.published[2].headers == [("key", "a")]
    assert host.published[3].payload == b"raw"


class Shipper(Plugin):
    """Publishes a record to a Kafka topic, keyed by the order."""

    def manifest(self):
        return Manifest("shipper", "1.0.0").subscribe("order.*")

    def handle(self, message):
        order = message.json()["order"]
        publish_to_topic("shipments", order, "order.shipped", {"order": order})


def test_a_record_published_to_a_topic_keeps_its_key():
    host = TestHost()
    host.handle(Shipper, Message.new("order.paid", {"order": "order-7"}))
    [record] = host.published
    assert type(record.destination) is Topic and record.destination == "shipments"
    assert (record.kind, record.key, record.json()) == (
        "order.shipped",
        "order-7",
        {"order": "order-7"},
    )


def test_a_record_to_an_empty_topic_is_refused():
    class Nowhere(Shipper):
        def handle(self, message):
            publish_to_topic("", "k", "order.shipped", {})

    with pytest.raises(Reject, match="the topic is empty"):
        TestHost().handle(Nowhere, Message.new("order.paid", {}))


@pytest.mark.parametrize(
    "fail, raised", [("retry", Retry), ("reject", Reject), ("crash", KeyError)]
)
def test_a_call_that_raises_keeps_nothing_but_its_logs(fail, raised):
    host = TestHost().state("count:a", 5)
    with pytest.raises(raised):
        host.handle(Counter, Message.new("count.one", {"key": "a", "fail": fail}))
    assert host.state_json("count:a") == 5
    assert host.published == []
    assert [line.message for line in host.logs] == ["counted"]


def test_retry_and_reject_carry_what_the_host_needs():
    assert Retry("busy").delay_ms is None
    assert Retry("busy", delay=1.5).delay_ms == 1500
    assert Retry("busy", delay=timedelta(minutes=1)).delay_ms == 60_000
    assert str(Retry("busy", delay=0.05)) == "retry after 50 ms: busy"
    assert str(Reject("bad")) == "reject: bad"
    with pytest.raises(ValueError, match="a retry delay must be a number of seconds >= 0, not -1"):
        Retry("busy", delay=-1)
    with pytest.raises(ValueError, match="not nan"):
        Retry("busy", delay=float("nan"))
    with pytest.raises(TypeError, match="not str"):
        Retry("busy", delay="soon")
    # Longer than the host takes: the most it takes (the host caps it at max_delay).
    assert Retry("busy", delay=1e30).delay_ms == 2**64 - 1
    assert Retry("busy", delay=float("inf")).delay_ms == 2**64 - 1


def test_state_delete_and_raw_values():
    class Cleaner(Plugin):
        def handle(self, message):
            state.delete("gone")
            state.set("raw", b"\x00\x01")
            assert state.get("gone") is None

    host = TestHost().state("gone", b"x")
    host.handle(Cleaner, Message.new("clean", {}))
    assert host.state_value("gone") is None
    assert host.state_value("raw") == b"\x00\x01"


def test_a_state_value_that_does_not_decode_is_a_rejection():
    class Reader(Plugin):
        def handle(self, message):
            state.get_json("broken")

    with pytest.raises(Reject, match="'broken' does not decode"):
        TestHost().state("broken", b"{").handle(Reader, Message.new("read", {}))


def test_config_values_parse_to_the_default_s_type():
    class Configured(Plugin):
        seen = {}

        def handle(self, message):
            Configured.seen = {
                "limit": config.get_or("limit", 10),
                "ratio": config.get_or("ratio", 0.5),
                "name": config.get("name"),
                "missing": config.get_or("missing", 3),
            }

    TestHost().config("limit", "42").config("ratio", "0.25").handle(
        Configured, Message.new("x", {})
    )
    assert Configured.seen == {"limit": 42, "ratio": 0.25, "name": None, "missing": 3}


def test_publishing_nowhere_is_a_rejection():
    class Lost(Plugin):
        def handle(self, message):
            publish("", "lost", {})

    with pytest.raises(Reject, match="queue is empty"):
        TestHost().handle(Lost, Message.new("x", {}))


def test_messages_decode_json_and_headers():
    message = Message("id-1", "order.created", "inbox:orders", [("tenant", "t1")], b'{"a": 1}', 2)
    assert message.json() == {"a": 1}
    assert message.header("tenant") == "t1" and message.header("nope") is None
    with pytest.raises(Reject, match="order.created message id-1 is not valid JSON"):
        Message("id-1", "order.created", "inbox:orders", payload=b"nope").json()


def test_idempotency_keys_match_the_rust_sdk():
    # The Rust SDK's test expects the same key (sdk/src/message.rs).
    message = Message.new("order.created", {})
    assert message.idempotency_key("charge-card") == "21384e233e6197216949e345fe681ac1"
    assert message.idempotency_key("refund") != message.idempotency_key("charge-card")


def test_the_manifest_builds_like_the_rust_one():
    manifest = (
        Manifest("audit", "2.0.0")
        .subscribe("audit.*")
        .subscribe("order.#")
        .retry(RetryPolicy(max_retries=3, base_delay=0.1))
        .limits(Limits(memory_mib=64, deadline=timedelta(seconds=2)))
        .calls("https://api.example.com")
    )
    assert manifest.allowed_hosts == ["https://api.example.com"]
    assert manifest.calls("https://*.example.org").allowed_hosts == [
        "https://api.example.com",
        "https://*.example.org",
    ]
    assert manifest.allowed_hosts == ["https://api.example.com"]
    assert manifest.subscriptions == ["audit.*", "order.#"]
    assert manifest.retry_policy.max_retries == 3
    assert manifest.resource_limits.memory_mib == 64
    assert not manifest.keeps_order and manifest.ordered().keeps_order


def test_a_handler_sees_its_message_s_key_and_publishes_with_one():
    class Chain(Plugin):
        def handle(self, message):
            publish("next", "chained", {}, key=message.key)
            publish_to_exchange("events", "chained", "chained", {}, key="k2")

    host = TestHost()
    host.handle(Chain, Message.new("x", {}, key="order-7"))
    assert [(p.destination, p.key) for p in host.published] == [
        (Queue("next"), "order-7"),
        (Exchange(("events", "chained")), "k2"),
    ]
    with pytest.raises(Reject, match="key is empty"):
        host.handle(Chain, Message.new("x", {}, key=""))


def test_host_functions_outside_a_handler_say_how_to_test():
    with pytest.raises(RuntimeError, match="TestHost"):
        state.get("x")


def test_unknown_log_levels_are_refused():
    class Loud(Plugin):
        def handle(self, message):
            log.log("shout", "hi")

    with pytest.raises(ValueError, match="unknown log level 'shout'"):
        TestHost().handle(Loud, Message.new("x", {}))


def test_a_redirect_is_followed_as_its_status_says():
    from wharf_sdk.http import HttpError, Request, Response, split_url

    post = Request.post("http://a.test/x").json({}).header("idempotency-key", "k")
    moved = lambda status, to: Response(status, [("location", to)])
    following = post._redirected(moved(303, "/y"))
    assert (following.method, following.url, following.body) == ("GET", "http://a.test/y", b"")
    assert following.headers == (("idempotency-key", "k"),)
    assert post._redirected(moved(307, "https://b.test/z")).body == b"{}"
    assert post._redirected(Response(200)) is None
    with pytest.raises(HttpError, match="neither a URL"):
        post._redirected(moved(302, "//evil.test/"))
    assert split_url("https://h:8443/p?q#f") == ("https", "h:8443", "/p?q")
    assert split_url("http://h?q") == ("http", "h", "?q")
    for bad in ("ftp://h/", "h/x", "https:///x"):
        with pytest.raises(HttpError):
            split_url(bad)


def test_redirects_stop_after_five():
    from wharf_sdk.http import HttpError, Request

    host = TestHost()
    for i in range(7):
        host.respond("GET", f"http://a.test/{i}", 302, b"")
    # TestHost answers carry no headers: give the redirects their location.
    host._answers = [
        (m, u, type(r)(302, [("location", f"/{i + 1}")])) for i, (m, u, r) in enumerate(host._answers)
    ]

    class Follow(Plugin):
        def manifest(self):
            return Manifest("follow", "1.0.0").subscribe("go")

        def handle(self, message):
            Request.get("http://a.test/0").send()

    with pytest.raises(HttpError, match="more than 5 redirects"):
        host.handle(Follow, Message.new("go", {}))
    assert len(host.requests) == 6


class Answers(Plugin):
    """Answers with the message's attempt, then tries a second answer; asks for a retry
    on the first attempt."""

    def manifest(self):
        return Manifest("answers", "1.0.0").subscribe("ask")

    def handle(self, message):
        message.reply({"attempt": message.attempt})
        with pytest.raises(Reject, match="answered the request already"):
            message.reply_bytes(b"again")
        if message.attempt == 1:
            raise Retry("once more")


def test_a_request_keeps_the_answer_of_its_successful_call_only():
    host = TestHost()
    with pytest.raises(Retry):
        host.request(Answers, Message.new("ask", {}))
    assert host.replies == [], "a failed call's answer is dropped"
    host.request(Answers, Message("1", "ask", "inbox:test", payload=b"{}", attempt=2))
    assert [r.json() for r in host.replies] == [{"attempt": 2}]
    assert host.replies[0].headers == [("content-type", "application/json")]


def test_a_message_that_is_not_a_request_cannot_be_answered():
    host = TestHost()
    with pytest.raises(Reject, match="not a request"):
        host.handle(Answers, Message.new("ask", {}))
    assert host.replies == []
