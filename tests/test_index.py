from django.test import Client

from carts import services
from carts.sources import Source
from config import devrun, env
from tests.conftest import new_event


def test_landing_page_links_the_docs_and_shows_the_demo_store(db):
    store, _ = services.store_demo_ensure()
    services.events_append(
        store_id=store.pk,
        events=[new_event("checkout.started", "c1")],
        source=Source.server("test"),
    )

    page = Client().get("/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/api/docs/"' in html and 'href="/admin/"' in html
    assert f"Store #{store.pk}" in html
    assert "1 events in the log for 1 carts." in html


def test_landing_page_links_what_a_newcomer_opens_first_and_where_the_credentials_are(
    db, tmp_path, monkeypatch
):
    # Issue 14 (UX review 2, section 1): the root linked neither the demo nor the dashboards.
    store, _ = services.store_demo_ensure()
    monkeypatch.setattr(env, "VAR_DIR", tmp_path)

    html = Client().get("/").content.decode()

    for url in ("/demo/", "/dashboard/", "/admin/", "/api/docs/", "/healthz"):
        assert f'href="{url}"' in html, url
    assert "<code>docs/first-hour.md</code>" in html
    assert f"rotate_store_keys --store {store.pk}" in html
    assert "changepassword admin" in html
    assert "when it makes them" in html  # no file yet: says where make run would keep them

    (tmp_path / devrun.CREDENTIALS_FILE).write_text("admin ...\n")
    html = Client().get("/").content.decode()
    assert f"are in\n    <code>{tmp_path / 'credentials.txt'}</code>" in html


def test_static_assets_of_the_admin_and_the_api_docs_are_served(db):
    client = Client()

    for path in (
        "/static/admin/css/base.css",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
