"""ASGI entry point: websockets through Channels, HTTP through Django's WSGI handler.

HTTP runs the whole synchronous Django stack in one worker thread per request (a2wsgi's thread
pool) instead of Django's ASGI handler, which hops threads for every sync middleware hook. On this
machine that served ~40% more single-event requests per second (docs/adr/0002).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django_wsgi_app = get_wsgi_application()  # sets Django up before anything imports models

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboards.routing import websocket_urlpatterns as dashboards_websockets  # noqa: E402
from recovery.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # (django-stubs types WSGIHandler as returning a response, not an iterable of bytes.)
        "http": WSGIMiddleware(django_wsgi_app, workers=settings.HTTP_THREADS),  # type: ignore[arg-type]
        "websocket": URLRouter([*websocket_urlpatterns, *dashboards_websockets]),
    }
)
