"""The merchant admin: trained models are listed with their metrics and activated by an action."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from recovery import serving
from recovery.models import ScoringModel


@pytest.fixture
def admin_client(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(user)
    return client


def make_model(store, version: str) -> ScoringModel:
    return ScoringModel.objects.create(
        store=store,
        version=version,
        artifact=serving.stock_model().council.to_dict(),
        features_version=1,
        horizon_seconds=86400,
        metrics={"test": {"roc_auc": 0.81, "carts": 120}},
    )


def test_models_are_listed_with_their_test_auc(admin_client, store):
    make_model(store, "s-a")
    page = admin_client.get("/admin/recovery/scoringmodel/").content.decode()
    assert "s-a" in page and "0.81" in page
    detail = admin_client.get(
        f"/admin/recovery/scoringmodel/{ScoringModel.objects.get().pk}/change/"
    ).content.decode()
    assert "roc_auc" in detail  # the metrics table
    assert admin_client.get("/admin/recovery/scoringmodel/add/").status_code == 403


def test_the_activate_action_keeps_one_active_model_per_store(admin_client, store):
    a, b = make_model(store, "s-a"), make_model(store, "s-b")
    for model in (a, b):
        response = admin_client.post(
            "/admin/recovery/scoringmodel/",
            {"action": "activate", "_selected_action": [model.pk]},
            follow=True,
        )
        assert response.status_code == 200
    assert list(ScoringModel.objects.filter(active=True).values_list("version", flat=True)) == [
        "s-b"
    ]
    response = admin_client.post(
        "/admin/recovery/scoringmodel/",
        {"action": "activate", "_selected_action": [a.pk, b.pk]},
        follow=True,
    )
    assert "at most one model per store" in response.content.decode()
    assert ScoringModel.objects.get(active=True).version == "s-b"

    admin_client.post(
        "/admin/recovery/scoringmodel/",
        {"action": "back_to_stock", "_selected_action": [b.pk]},
        follow=True,
    )
    assert not ScoringModel.objects.filter(active=True).exists()
