"""Failed logins are limited per username and per client address (review finding 14): the
dashboards' login and the admin's (dashboards/logins.py), against the real Redis.

Each test uses a username and an address of its own: the counts live in the Redis all tests
share."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import include, path

from carts import ratelimits
from dashboards.logins import AdminLoginView

# The admin's login routed as config/urls.py is to route it (ahead of the admin site).
urlpatterns = [
    path("admin/login/", AdminLoginView.as_view(), name="admin-login"),
    path("admin/", admin.site.urls),
    path("", include("config.urls")),
]

DASHBOARD = "/dashboard/login/"
ADMIN = "/admin/login/"
PASSWORD = "right-pw-123"
LOCKED = re.compile(r"Too many failed logins; try again in (\d+) s\.")


def _user(*, staff: bool = False) -> User:
    name = f"u-{uuid.uuid4().hex[:10]}"
    return User.objects.create_user(username=name, password=PASSWORD, is_staff=staff)


def _address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}.{n // 62500 % 250 + 1}"


def _limits(
    settings,
    user: str = "3/minute",
    ip: str = "100/minute",
    user_long: str = "",
    ip_long: str = "",
) -> None:
    settings.RATE_LIMITS = {
        **settings.RATE_LIMITS,
        "login_user": user,
        "login_ip": ip,
        "login_user_long": user_long,
        "login_ip_long": ip_long,
    }


def _login(client: Client, url: str, username: str, password: str, address: str):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", [DASHBOARD, ADMIN])
@pytest.mark.urls(__name__)
def test_past_the_usernames_limit_even_the_right_password_is_refused_with_429(db, settings, url):
    _limits(settings, user="3/minute")
    user, address, client = _user(staff=True), _address(), Client()

    wrong = [_login(client, url, user.username, "wrong", address) for _ in range(3)]
    locked = _login(client, url, user.username, PASSWORD, address)

    assert [r.status_code for r in wrong] == [200, 200, 200]
    assert not any(LOCKED.search(r.content.decode()) for r in wrong)
    assert locked.status_code == 429
    match = LOCKED.search(locked.content.decode())
    assert match is not None and 1 <= int(match[1]) <= 60
    assert locked["Retry-After"] == match[1]
    assert not _logged_in(client)
    # the same username written otherwise is the same count; another username is not limited
    assert _login(client, url, f" {user.username.upper()}", PASSWORD, address).status_code == 429
    other = _user(staff=True)
    assert _login(client, url, other.username, PASSWORD, address).status_code == 302
    assert _logged_in(client)


@pytest.mark.parametrize("url", [DASHBOARD, ADMIN])
@pytest.mark.urls(__name__)
def test_past_the_addresss_limit_every_username_is_refused_there(db, settings, url):
    _limits(settings, user="100/minute", ip="3/minute")
    address, client = _address(), Client()
    for _ in range(3):  # three failures, each on a username of its own
        assert _login(client, url, f"nobody-{uuid.uuid4().hex}", "x", address).status_code == 200

    user = _user(staff=True)
    refused = _login(client, url, user.username, PASSWORD, address)
    elsewhere = _login(client, url, user.username, PASSWORD, _address())

    assert refused.status_code == 429 and LOCKED.search(refused.content.decode())
    assert elsewhere.status_code == 302  # another address has its own count


@pytest.mark.parametrize("url", [DASHBOARD, ADMIN])
@pytest.mark.urls(__name__)
def test_a_success_clears_the_usernames_failures(db, settings, url):
    _limits(settings, user="3/minute")
    user, address = _user(staff=True), _address()

    for _ in range(2):  # two failures, a success, two failures, a success: never locked
        client = Client()
        for _ in range(2):
            assert _login(client, url, user.username, "wrong", address).status_code == 200
        assert _login(client, url, user.username, PASSWORD, address).status_code == 302
        assert _logged_in(client)


@pytest.mark.urls(__name__)
def test_the_lock_lifts_after_its_window(db, settings):
    _limits(settings, user="2/second")
    user, address, client = _user(), _address(), Client()
    for _ in range(2):
        _login(client, DASHBOARD, user.username, "wrong", address)
    assert _login(client, DASHBOARD, user.username, PASSWORD, address).status_code == 429

    time.sleep(2.1)  # the sliding window has passed

    assert _login(client, DASHBOARD, user.username, PASSWORD, address).status_code == 302


@pytest.mark.urls(__name__)
def test_once_the_usernames_short_window_lifts_its_long_one_bites(db, settings):
    # Backoff: two failures lock the username for a second; after that, one more failure
    # uses up its three a minute, and the right password is refused for most of a minute.
    _limits(settings, user="2/second", user_long="3/minute")
    user, client = _user(), Client()
    for _ in range(2):
        assert _login(client, DASHBOARD, user.username, "wrong", _address()).status_code == 200
    short = _login(client, DASHBOARD, user.username, PASSWORD, _address())
    assert short.status_code == 429 and int(short["Retry-After"]) <= 2

    time.sleep(2.1)  # the short window has passed: the username may try again
    bitten = ratelimits.bitten().get("login_user_long", 0)
    failed = _login(client, DASHBOARD, user.username, "wrong", _address())
    locked = _login(client, DASHBOARD, user.username, PASSWORD, _address())

    assert failed.status_code == 200 and not LOCKED.search(failed.content.decode())
    assert locked.status_code == 429
    match = LOCKED.search(locked.content.decode())
    assert match is not None and 2 < int(match[1]) <= 60  # the long window's wait
    assert locked["Retry-After"] == match[1]
    assert ratelimits.bitten()["login_user_long"] == bitten + 1
    assert not _logged_in(client)


@pytest.mark.urls(__name__)
def test_the_addresss_lock_lifts_after_its_window_and_its_long_one_bites_next(db, settings):
    _limits(settings, user="100/minute", ip="2/second", ip_long="3/minute")
    address, client = _address(), Client()
    for _ in range(2):
        wrong = _login(client, DASHBOARD, f"nobody-{uuid.uuid4().hex}", "x", address)
        assert wrong.status_code == 200
    user = _user()
    assert _login(client, DASHBOARD, user.username, PASSWORD, address).status_code == 429

    time.sleep(2.1)  # login_ip's window has passed

    assert _login(client, DASHBOARD, user.username, PASSWORD, address).status_code == 302
    # the success cleared nothing of the address's: one more failure there uses up its long rule
    client = Client()
    assert _login(client, DASHBOARD, f"nobody-{uuid.uuid4().hex}", "x", address).status_code == 200
    locked = _login(client, DASHBOARD, user.username, PASSWORD, address)
    assert locked.status_code == 429 and 2 < int(locked["Retry-After"]) <= 60
    assert not _logged_in(client)


@pytest.mark.parametrize("url", [DASHBOARD, ADMIN])
@pytest.mark.urls(__name__)
def test_a_guesser_logging_into_its_own_account_does_not_reset_the_addresss_count(
    db, settings, url
):
    # Guesses at other usernames, each followed by a login to the guesser's own account: the
    # address's failures add up all the same, and then even its own account is refused there.
    _limits(settings, user="100/minute", ip="3/minute", user_long="100/hour", ip_long="100/hour")
    own, address = _user(staff=True), _address()

    def guess() -> int:
        return _login(Client(), url, f"victim-{uuid.uuid4().hex}", "guess", address).status_code

    for _ in range(2):
        assert guess() == 200
        assert _login(Client(), url, own.username, PASSWORD, address).status_code == 302
    assert guess() == 200  # the third failure from the address

    refused = _login(Client(), url, own.username, PASSWORD, address)

    assert refused.status_code == 429 and LOCKED.search(refused.content.decode())
    assert guess() == 429


@pytest.mark.urls(__name__)
def test_the_admin_counts_a_non_staff_login_as_a_failure_and_keeps_its_page(db, settings):
    _limits(settings, user="2/minute")
    user, address, client = _user(staff=False), _address(), Client()

    page = client.get(ADMIN)
    answers = [_login(client, ADMIN, user.username, PASSWORD, address) for _ in range(3)]

    assert page.status_code == 200 and "Django administration" in page.content.decode()
    assert 'name="next" value="/admin/"' in page.content.decode()
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert "staff account" in answers[0].content.decode()
    assert LOCKED.search(answers[2].content.decode())
    # a staff member logged in from the page (its next field) is sent to the admin's index,
    # and sent there again by the login page, as by the admin's own view
    staff = _user(staff=True)
    form = {"username": staff.username, "password": PASSWORD, "next": "/admin/"}
    assert client.post(ADMIN, form, REMOTE_ADDR=_address())["Location"] == "/admin/"
    assert client.get(ADMIN)["Location"] == "/admin/"


def test_the_sites_admin_login_is_the_limited_one():
    from django.urls import resolve

    assert resolve("/admin/login/").func.view_class is AdminLoginView  # type: ignore[attr-defined]


@pytest.mark.urls(__name__)
def test_the_owners_login_clears_the_short_window_not_the_long_one(db, settings):
    # A guesser at an account its owner uses every day: each of the owner's logins clears the
    # username's short window (the owner is not locked out by the guesser's last minutes), but
    # the long window keeps the guesser's failures, so the guesser gets no fresh hour of tries.
    _limits(settings, user="2/minute", user_long="3/hour")
    user = _user()
    for _ in range(2):
        assert _login(Client(), DASHBOARD, user.username, "guess", _address()).status_code == 200
        assert _login(Client(), DASHBOARD, user.username, PASSWORD, _address()).status_code == 302
    assert _login(Client(), DASHBOARD, user.username, "guess", _address()).status_code == 200

    owner = Client()
    locked = _login(owner, DASHBOARD, user.username, PASSWORD, _address())
    assert locked.status_code == 429  # three failures within the hour: the long window bites
    assert 60 < int(locked["Retry-After"]) <= 3600
    assert not _logged_in(owner)
