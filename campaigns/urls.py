"""Links in campaign emails, at the root of this server's public URL (CAMPAIGNS_PUBLIC_URL).

The paths are spelled out in campaigns/links.py too, which builds them without a request.
"""

from django.urls import path

from campaigns import views

app_name = "campaigns"

urlpatterns = [
    path("r/<str:token>", views.restore, name="restore"),
    path("r/<str:token>/o.gif", views.open_pixel, name="open_pixel"),
    path("r/<str:token>/stop", views.stop, name="stop"),
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
