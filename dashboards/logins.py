"""Logins with failed attempts limited (review finding 14): the dashboards' (/dashboard/login/)
and the admin's (``AdminLoginView``, routed at /admin/login/ ahead of the admin site).

Failed logins count per username and per client address in carts.ratelimits, each against two
rules, a short window and a long one (backoff): ``login_user`` (5 per 5 minutes) and
``login_user_long`` (20 an hour), ``login_ip`` (30 a minute) and ``login_ip_long`` (200 an
hour). Once the short window has lifted, a guesser gets a few more tries and then waits for the
long one: a username can be tried about 20 times an hour, not 60. Before the password is
checked, every rule is tested: over any, the form answers "Too many failed logins; try again in
N s." (the longest wait of the rules refusing) with status 429 and ``Retry-After``, and the
right password is refused too until the window has passed. A failure (a wrong password, an
inactive account, a non-staff account at the admin) counts against all four. A success clears
its username's short window only: never the address's (a guesser who owns one account cannot
log into it between guesses at others to start the address's count afresh), and not the
username's long one (a guesser at an account used every day gets no fresh hour's tries after
each of its owner's logins)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _

from carts import ratelimits

LOCKED = "Too many failed logins; try again in {seconds} s."


# The rules of each key, short window first (names in settings.RATE_LIMITS).
USER_RULES = ("login_user", "login_user_long")
IP_RULES = ("login_ip", "login_ip_long")


def _user_key(username: str) -> str:
    # One count for the ways of writing a name (the same account, or none).
    return username.strip().casefold()


class LimitedLoginForm(AuthenticationForm):
    """AuthenticationForm that refuses to check a password while the username or the client's
    address is over its limit of failed logins, and counts each failure."""

    limited: ratelimits.Verdict | None = None  # the limit that refused the attempt

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # no password is checked: the fields' own errors
        user = _user_key(username)
        address = ratelimits.client_ip(self.request) if self.request is not None else "unknown"
        checks = [(name, user) for name in USER_RULES] + [(name, address) for name in IP_RULES]
        refused = [
            verdict
            for verdict in (ratelimits.test(name, key) for name, key in checks)
            if not verdict.allowed
        ]
        if refused:
            self.limited = max(refused, key=lambda verdict: verdict.retry_after)
            raise forms.ValidationError(
                LOCKED.format(seconds=self.limited.retry_after), code="rate_limited"
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            for name, key in checks:
                ratelimits.hit(name, key)
            raise
        # The username's short window only: see the module's docstring.
        ratelimits.clear("login_user", user)
        return cleaned


class LimitedAdminLoginForm(LimitedLoginForm, AdminAuthenticationForm):
    """The admin's login form (staff only), limited."""


class LimitedLoginMixin:
    """A LoginView whose refused attempts are answered with 429 and Retry-After."""

    def form_invalid(self, form: Any) -> HttpResponse:
        response: HttpResponse = super().form_invalid(form)  # type: ignore[misc]
        verdict = getattr(form, "limited", None)
        if verdict is not None:
            response.status_code = 429
            response["Retry-After"] = str(verdict.retry_after)
        return response


class AdminLoginView(LimitedLoginMixin, auth_views.LoginView):
    """``admin.site.login`` (Django 5.2) with failed logins limited: the same page, context and
    redirects, the form limited."""

    authentication_form = LimitedAdminLoginForm
    template_name = "admin/login.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        site = admin.site
        if request.method == "GET" and site.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=site.name))
        request.current_app = site.name
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        site, request = admin.site, self.request
        context = super().get_context_data(**kwargs)
        context.update(
            site.each_context(request),
            title=_("Log in"),
            subtitle=None,
            app_path=request.get_full_path(),
            username=request.user.get_username(),
        )
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=site.name)
        return context
