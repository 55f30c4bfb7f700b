"""Who sees which store's dashboards: pages, CSV exports and the metrics API answer a store the
user may not see with 404; anonymous visitors are sent to log in (pages) or refused (API)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from carts import services
from carts.models import Store, StoreMember
from dashboards import access
from tests.dashboards.test_pages import RANGE, Log, client_for, log_build, member

PAGES = ("", "timeseries/", "funnel/", "offers/", "scores/", "products/")
EXPORTS = ("overview", "timeseries", "funnel", "offers", "no_offer", "scores", "products")
ENDPOINTS = ("overview", "timeseries", "funnel", "offers", "scores", "products")


def _store(name: str) -> tuple[Store, services.StoreCredentials]:
    credentials = services.store_create(name=name, domain=f"{name.lower()}.example")
    return Store.objects.get(pk=credentials.store_id), credentials


@pytest.fixture
def log(store) -> Log:
    return log_build(store)


@pytest.fixture
def other(db) -> tuple[Store, services.StoreCredentials]:
    return _store("Other")


# -- the access model ---------------------------------------------------------------------------


def test_marketers_and_merchants_see_their_stores_only(store, other):
    marketer = member(store, "mia")
    merchant = member(other[0], "max", role=StoreMember.Role.MERCHANT)

    assert access.viewable_store_ids(user=marketer) == {store.pk}
    assert access.viewable_store_ids(user=merchant) == {other[0].pk}
    assert access.can_view(user=marketer, store_id=store.pk) is True
    assert access.can_view(user=marketer, store_id=other[0].pk) is False


def test_staff_status_alone_grants_nothing(store):
    staff = User.objects.create_user(username="sam", password="x", is_staff=True)

    assert access.viewable_store_ids(user=staff) == frozenset()
    assert access.can_view(user=staff, store_id=store.pk) is False


def test_a_superuser_sees_every_store_that_exists(store, other):
    root = User.objects.create_superuser(username="root", password="x")

    assert access.viewable_store_ids(user=root) is None
    assert access.can_view(user=root, store_id=other[0].pk) is True
    assert access.can_view(user=root, store_id=999_999) is False
    assert [s.pk for s in access.viewable_stores(user=root)] == [other[0].pk, store.pk]


def test_an_inactive_or_anonymous_user_sees_nothing(store):
    user = member(store, "gone")
    user.is_active = False
    user.save()

    assert access.viewable_store_ids(user=user) == frozenset()
    assert access.viewable_store_ids(user=None) == frozenset()


# -- another store's data is a 404 --------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_a_marketer_of_store_a_gets_404_for_store_bs_pages(log, other, page):
    client = client_for(member(log.store, "mia"))

    assert client.get(f"/dashboard/{log.store.pk}/{page}?{RANGE}").status_code == 200
    assert client.get(f"/dashboard/{other[0].pk}/{page}?{RANGE}").status_code == 404


@pytest.mark.parametrize("table", EXPORTS)
def test_a_marketer_of_store_a_gets_404_for_store_bs_csv(log, other, table):
    client = client_for(member(log.store, "mia"))

    assert client.get(f"/dashboard/{log.store.pk}/export/{table}.csv").status_code == 200
    assert client.get(f"/dashboard/{other[0].pk}/export/{table}.csv").status_code == 404


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_marketer_of_store_a_gets_404_for_store_bs_metrics(log, other, endpoint):
    client = client_for(member(log.store, "mia"))

    mine = client.get(f"/api/v1/metrics/{endpoint}?store={log.store.pk}")
    theirs = client.get(f"/api/v1/metrics/{endpoint}?store={other[0].pk}")

    assert mine.status_code == 200
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": "No such store."}


def test_a_store_that_does_not_exist_is_the_same_404(log):
    client = client_for(member(log.store, "mia"))

    assert client.get("/dashboard/999999/").status_code == 404
    assert client.get("/api/v1/metrics/overview?store=999999").json() == {
        "detail": "No such store."
    }


def test_a_stores_key_reads_only_its_own_store(log, other):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other[1].secret_key}")

    own = client.get("/api/v1/metrics/overview")
    theirs = client.get(f"/api/v1/metrics/overview?store={log.store.pk}&{RANGE}")

    assert own.status_code == 200
    assert own.json()["filters"]["store"] == other[0].pk
    assert own.json()["carts_started"]["value"] == 0
    assert theirs.status_code == 404


def test_a_publishable_key_is_refused(log, credentials):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.publishable_key}")

    assert client.get("/api/v1/metrics/overview").status_code == 401


def test_a_superuser_sees_any_store(log):
    root = User.objects.create_superuser(username="root", password="x")
    client = client_for(root)

    assert client.get(f"/dashboard/{log.store.pk}/?{RANGE}").status_code == 200
    assert client.get(f"/api/v1/metrics/funnel?store={log.store.pk}").status_code == 200


def test_a_merchant_member_sees_the_dashboards(log):
    client = client_for(member(log.store, "max", role=StoreMember.Role.MERCHANT))

    assert client.get(f"/dashboard/{log.store.pk}/?{RANGE}").status_code == 200


# -- anonymous ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "export/overview.csv"])
def test_anonymous_visitors_are_sent_to_log_in(log, path):
    response = Client().get(f"/dashboard/{log.store.pk}/{path}")

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/login/?next=/dashboard/{log.store.pk}/{path}"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_api_calls_are_refused(log, endpoint):
    response = APIClient().get(f"/api/v1/metrics/{endpoint}?store={log.store.pk}")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_the_store_list_redirects_to_a_users_only_store(log):
    response = client_for(member(log.store, "mia")).get("/dashboard/")

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/{log.store.pk}/"


def test_the_store_list_lists_several_stores(log, other):
    user = member(log.store, "mia")
    StoreMember.objects.create(store=other[0], user=user, role=StoreMember.Role.MARKETER)

    page = client_for(user).get("/dashboard/").content.decode()

    assert f'<a href="/dashboard/{log.store.pk}/">Test shop</a>' in page
    assert f'<a href="/dashboard/{other[0].pk}/">Other</a>' in page


def test_a_user_without_stores_is_told_so(db):
    user = User.objects.create_user(username="nobody", password="x")

    page = client_for(user).get("/dashboard/").content.decode()

    assert "You are not a marketer or merchant of any store yet." in page


def test_logging_in_leads_to_the_page_asked_for(log):
    member(log.store, "mia")
    client = Client()

    form = client.get(f"/dashboard/login/?next=/dashboard/{log.store.pk}/funnel/")
    response = client.post(
        "/dashboard/login/",
        {
            "username": "mia",
            "password": "pw-not-secret",
            "next": f"/dashboard/{log.store.pk}/funnel/",
        },
    )

    assert form.status_code == 200
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/{log.store.pk}/funnel/"


def test_logging_out_needs_a_post(log):
    client = client_for(member(log.store, "mia"))

    assert client.get("/dashboard/logout/").status_code == 405
    response = client.post("/dashboard/logout/")
    assert response.status_code == 302
    assert client.get(f"/dashboard/{log.store.pk}/").status_code == 302
