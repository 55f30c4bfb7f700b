"""Rate limits on public surfaces (carts/ratelimits.py) against the real Redis."""

from __future__ import annotations

import hashlib
import time
import uuid

from django.test import RequestFactory

from carts import ratelimits, redis_client


def _key() -> str:
    return uuid.uuid4().hex


def test_a_limit_refuses_past_its_rule_with_a_retry_after_and_lifts_after_its_window(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": "3/second"}
    key = _key()

    verdicts = [ratelimits.hit("restore_ip", key) for _ in range(5)]

    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert verdicts[3].name == "restore_ip" and verdicts[3].retry_after >= 1
    assert ratelimits.hit("restore_ip", _key()).allowed  # another key has its own count
    time.sleep(2.1)  # the sliding window has passed
    assert ratelimits.hit("restore_ip", key).allowed
    assert ratelimits.bitten()["restore_ip"] >= 2


def test_a_limit_set_to_nothing_is_off(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": ""}
    key = _key()
    assert all(ratelimits.hit("restore_ip", key).allowed for _ in range(100))


def test_test_counts_nothing_and_clear_forgets(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_user": "2/minute"}
    key = _key()
    assert ratelimits.test("login_user", key).allowed
    ratelimits.hit("login_user", key)
    ratelimits.hit("login_user", key)
    assert not ratelimits.test("login_user", key).allowed
    ratelimits.clear("login_user", key)
    assert ratelimits.test("login_user", key).allowed


def test_redis_out_of_reach_lets_requests_through(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": "1/minute"}
    key = _key()
    assert ratelimits.hit("restore_ip", key).allowed
    assert ratelimits.hit("restore_ip", key).allowed
    assert "could not be counted" in caplog.text


def test_the_answer_is_a_429_with_retry_after():
    response = ratelimits.too_many(ratelimits.Verdict(False, "offers_ip", 7))
    assert response.status_code == 429
    assert response["Retry-After"] == "7"
    assert b'"code": "rate_limited"' in response.content


def test_client_ip_is_the_peer_unless_proxies_are_trusted(settings):
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9"
    )
    assert ratelimits.client_ip(request) == "10.0.0.2"
    settings.RATE_LIMIT_PROXY_HOPS = 1  # one proxy of ours: it appended the client's address
    assert ratelimits.client_ip(request) == "203.0.113.9"
    scope = {"client": ("10.0.0.3", 5000), "headers": [(b"x-forwarded-for", b"198.51.100.4")]}
    assert ratelimits.client_ip(scope=scope) == "198.51.100.4"


def test_a_local_limit_counts_in_this_process_without_redis(settings):
    # One websocket's messages live in one process: counted in memory, no round trip (Redis is
    # out of reach here, and the limit still bites).
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "ws_message_socket": "3/second"}
    key = _key()

    verdicts = [ratelimits.hit("ws_message_socket", key, local=True) for _ in range(4)]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[3].retry_after >= 1


def test_a_malformed_rule_is_a_check_error_and_lets_requests_through(settings, caplog):
    from config.checks import check_rate_limits

    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": "sixty a minute"}

    assert [e.id for e in check_rate_limits()] == ["config.E004"]
    assert ratelimits.hit("restore_ip", _key()).allowed
    assert "does not parse" in caplog.text


def test_the_keys_in_redis_are_keyed_digests_not_plain_hashes(settings):
    # A plain sha256 of an IPv4 address is reversed by trying all 2**32 of them: the key part is
    # an HMAC keyed by a secret derived from the SECRET_KEY.
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": "5/minute"}
    ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    ratelimits.hit("restore_ip", ip)
    redis = redis_client.client()

    plain = hashlib.sha256(ip.encode()).hexdigest()[:24]
    keyed = ratelimits._digest(ip)
    assert keyed != plain and ip not in keyed
    assert not list(redis.scan_iter(match=f"*{plain}*", count=1000))
    assert list(redis.scan_iter(match=f"*restore_ip*{keyed}*", count=1000))
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert ratelimits._digest(ip) != keyed
