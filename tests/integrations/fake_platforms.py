"""A fake of the three shop platforms' discount APIs: a real HTTP server on 127.0.0.1 (in a
thread) that speaks Shopify's Admin GraphQL, WooCommerce's REST and Saleor's GraphQL discount
calls as each documents them (see integrations/platforms/*_api.py for the references), keeps the
codes made, and fails on demand.

Use the ``fake_platforms`` fixture (import it into a test module or a conftest)::

    from tests.integrations.fake_platforms import fake_platforms  # noqa: F401

    def test_x(fake_platforms):
        target = fake_platforms.target("shopify")     # a Target pointing at the fake
        fake_platforms.fail("shopify", status=500)    # the next call answers 500
        fake_platforms.stall("woocommerce", seconds=1)  # the next call answers nothing for 1 s
        fake_platforms.throttle("saleor", retry_after="2")  # the next call: 429 Retry-After: 2
        fake_platforms.refuse("shopify")              # the next create: a validation error
        fake_platforms.drop_answer("saleor")          # the next create is made, its answer lost
        fake_platforms.existing("woocommerce", "CODE")  # the code exists already
        fake_platforms.received                       # every request, parsed

What it checks on every request (a breach is a ``problem``, answered 400 as the platform would,
and the fixture fails the test at teardown unless the test cleared ``problems``): method and
path, ``Content-Type: application/json`` on writes, a ``User-Agent`` and an ``Idempotency-Key``,
the GraphQL document against the subset of each platform's schema below and its variables
against their types, and the values each platform would refuse (a percentage out of range, an
end before the start, a missing code). Wrong credentials are not problems: they get the
platform's own answer (Shopify and WooCommerce 401, Saleor a 200 with a permission error).

Saleor's JWKS (for webhook signatures): set ``fake.jwks`` to a JWKS dict and fetch
``fake.saleor_jwks_url``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from graphql import (
    FieldNode,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values

from integrations.platforms.api import Target

SHOPIFY_TOKEN = "shpat_fake0123456789abcdef"
WOO_KEY = "ck_fake0123456789abcdef"
WOO_SECRET = "cs_fake0123456789abcdef"
SALEOR_TOKEN = "saleor-app-token-fake0123456789"
SALEOR_CHANNEL = "Q2hhbm5lbDox"  # Channel:1
SALEOR_PATH = "/graphql/"
WOO_PATH = "/wp-json/wc/v3/coupons"
SHOPIFY_PATH = re.compile(r"^/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json$")

# The parts of Shopify's Admin schema (2025-10) the discount calls use, as documented.
SHOPIFY_SDL = """
scalar DateTime
scalar Decimal
type Query { codeDiscountNodeByCode(code: String!): DiscountCodeNode }
type Mutation {
  discountCodeBasicCreate(
    basicCodeDiscount: DiscountCodeBasicInput!
  ): DiscountCodeBasicCreatePayload
  discountCodeFreeShippingCreate(
    freeShippingCodeDiscount: DiscountCodeFreeShippingInput!
  ): DiscountCodeFreeShippingCreatePayload
}
enum DiscountBuyerSelection { ALL }
enum DiscountErrorCode { BLANK INVALID TAKEN GREATER_THAN LESS_THAN_OR_EQUAL_TO MISSING_ARGUMENT }
input DiscountContextInput { all: DiscountBuyerSelection }
input DiscountCustomerSelectionInput { all: Boolean }
input DiscountAmountInput { amount: Decimal, appliesOnEachItem: Boolean }
input DiscountCustomerGetsValueInput { percentage: Float, discountAmount: DiscountAmountInput }
input DiscountItemsInput { all: Boolean }
input DiscountCustomerGetsInput {
  value: DiscountCustomerGetsValueInput, items: DiscountItemsInput,
  appliesOnOneTimePurchase: Boolean, appliesOnSubscription: Boolean
}
input DiscountMinimumSubtotalInput { greaterThanOrEqualToSubtotal: Decimal }
input DiscountMinimumQuantityInput { greaterThanOrEqualToQuantity: String }
input DiscountMinimumRequirementInput {
  subtotal: DiscountMinimumSubtotalInput, quantity: DiscountMinimumQuantityInput
}
input DiscountCombinesWithInput {
  orderDiscounts: Boolean, productDiscounts: Boolean, shippingDiscounts: Boolean
}
input DiscountShippingDestinationSelectionInput { all: Boolean }
input DiscountCodeBasicInput {
  appliesOncePerCustomer: Boolean, code: String, combinesWith: DiscountCombinesWithInput,
  context: DiscountContextInput, customerGets: DiscountCustomerGetsInput,
  customerSelection: DiscountCustomerSelectionInput, endsAt: DateTime,
  minimumRequirement: DiscountMinimumRequirementInput, recurringCycleLimit: Int,
  startsAt: DateTime, title: String, usageLimit: Int
}
input DiscountCodeFreeShippingInput {
  appliesOncePerCustomer: Boolean, code: String, combinesWith: DiscountCombinesWithInput,
  context: DiscountContextInput, customerSelection: DiscountCustomerSelectionInput,
  destination: DiscountShippingDestinationSelectionInput, endsAt: DateTime,
  maximumShippingPrice: Decimal, minimumRequirement: DiscountMinimumRequirementInput,
  startsAt: DateTime, title: String, usageLimit: Int
}
type DiscountCodeNode { id: ID! }
type DiscountUserError {
  code: DiscountErrorCode, extraInfo: String, field: [String!], message: String!
}
type DiscountCodeBasicCreatePayload {
  codeDiscountNode: DiscountCodeNode, userErrors: [DiscountUserError!]!
}
type DiscountCodeFreeShippingCreatePayload {
  codeDiscountNode: DiscountCodeNode, userErrors: [DiscountUserError!]!
}
"""

# The parts of Saleor's schema (3.18+) the voucher calls use, as documented.
SALEOR_SDL = """
scalar DateTime
scalar PositiveDecimal
type Query {
  vouchers(filter: VoucherFilterInput, first: Int, channel: String): VoucherCountableConnection
}
type Mutation {
  voucherCreate(input: VoucherInput!): VoucherCreate
  voucherChannelListingUpdate(
    id: ID!, input: VoucherChannelListingInput!
  ): VoucherChannelListingUpdate
}
enum VoucherTypeEnum { SHIPPING ENTIRE_ORDER SPECIFIC_PRODUCT }
enum DiscountValueTypeEnum { FIXED PERCENTAGE }
enum DiscountErrorCode {
  ALREADY_EXISTS GRAPHQL_ERROR INVALID NOT_FOUND REQUIRED UNIQUE DUPLICATED_INPUT_ITEM
}
input VoucherFilterInput { search: String }
input VoucherInput {
  type: VoucherTypeEnum, name: String, code: String, addCodes: [String!], startDate: DateTime,
  endDate: DateTime, discountValueType: DiscountValueTypeEnum, products: [ID!], variants: [ID!],
  collections: [ID!], categories: [ID!], minCheckoutItemsQuantity: Int, countries: [String!],
  applyOncePerOrder: Boolean, applyOncePerCustomer: Boolean, onlyForStaff: Boolean,
  singleUse: Boolean, usageLimit: Int
}
input VoucherChannelListingAddInput {
  channelId: ID!, discountValue: PositiveDecimal, minAmountSpent: PositiveDecimal
}
input VoucherChannelListingInput {
  addChannels: [VoucherChannelListingAddInput!], removeChannels: [ID!]
}
type Channel { id: ID!, slug: String! }
type VoucherChannelListing { id: ID!, channel: Channel! }
type VoucherCode { id: ID!, code: String }
type VoucherCodeCountableEdge { node: VoucherCode! }
type VoucherCodeCountableConnection { edges: [VoucherCodeCountableEdge!]! }
type Voucher {
  id: ID!, name: String, code: String, codes(first: Int): VoucherCodeCountableConnection,
  channelListings: [VoucherChannelListing!]
}
type VoucherCountableEdge { node: Voucher! }
type VoucherCountableConnection { edges: [VoucherCountableEdge!]! }
type DiscountError { field: String, message: String, code: DiscountErrorCode!, channels: [ID!] }
type VoucherCreate { errors: [DiscountError!]!, voucher: Voucher }
type VoucherChannelListingUpdate { errors: [DiscountError!]!, voucher: Voucher }
"""

SCHEMAS: dict[str, GraphQLSchema] = {
    "shopify": build_schema(SHOPIFY_SDL),
    "saleor": build_schema(SALEOR_SDL),
}

# Which GraphQL field (or REST method) is which operation, for faults and assertions.
OPERATIONS = {
    "discountCodeBasicCreate": "create",
    "discountCodeFreeShippingCreate": "create",
    "codeDiscountNodeByCode": "lookup",
    "voucherCreate": "create",
    "voucherChannelListingUpdate": "listing",
    "vouchers": "lookup",
}


@dataclass
class Received:
    platform: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON (None when absent or unreadable)
    operation: str  # "create", "lookup", "listing", "" (unknown)
    variables: dict[str, Any] = field(default_factory=dict)  # GraphQL, coerced


@dataclass
class Fault:
    platform: str
    op: str  # an operation, or "any"
    action: str  # "status", "stall", "drop", "refuse", "throttle_graphql"
    times: int
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class FakePlatforms:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.problems: list[str] = []
        self.faults: list[Fault] = []
        self.shopify: dict[str, dict[str, Any]] = {}  # code (upper) -> {"id", "input", "mutation"}
        self.woocommerce: dict[str, dict[str, Any]] = {}  # code (lower) -> the coupon
        self.saleor: dict[str, dict[str, Any]] = {}  # code -> {"id", "input", "channels": {...}}
        self.jwks: dict[str, Any] | None = None
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def do_PUT(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll: shutdown() waits up to one poll interval (0.5 s by default, per test).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    # -- set-up ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def saleor_jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def target(self, platform: str, **credentials: Any) -> Target:
        """A Target that reaches this fake with the right credentials (``credentials``
        override them, e.g. a wrong token)."""
        defaults: dict[str, dict[str, Any]] = {
            "shopify": {"access_token": SHOPIFY_TOKEN},
            "woocommerce": {"consumer_key": WOO_KEY, "consumer_secret": WOO_SECRET},
            "saleor": {"token": SALEOR_TOKEN, "channel_id": SALEOR_CHANNEL},
        }
        api_url = {
            "shopify": self.url,
            "woocommerce": self.url,
            "saleor": self.url + SALEOR_PATH,
        }[platform]
        return Target(
            platform=platform,
            api_url=api_url,
            shop_domain="fake-shop.myshopify.com" if platform == "shopify" else "",
            credentials={**defaults[platform], **credentials},
        )

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def fail(
        self,
        platform: str,
        op: str = "any",
        *,
        status: int = 500,
        body: bytes = b'{"errors": "Internal Server Error"}',
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` matching calls answer ``status`` with ``body``."""
        self._add(Fault(platform, op, "status", times, status, body, headers or {}))

    def throttle(
        self, platform: str, op: str = "any", *, retry_after: str = "2", times: int = 1
    ) -> None:
        """HTTP 429 with ``Retry-After``."""
        body = b'{"errors": "Exceeded 2 calls per second for api client. Reduce request rates."}'
        self._add(Fault(platform, op, "status", times, 429, body, {"Retry-After": retry_after}))

    def throttle_graphql(self, op: str = "any", *, times: int = 1) -> None:
        """Shopify's cost throttle: 200 with a THROTTLED error and the bucket's state (requested
        10, available 2, restoring 4 a second: 2 s to wait)."""
        self._add(Fault("shopify", op, "throttle_graphql", times))

    def stall(self, platform: str, op: str = "any", *, seconds: float, times: int = 1) -> None:
        """Answer nothing for ``seconds`` (then close)."""
        self._add(Fault(platform, op, "stall", times, seconds=seconds))

    def drop_answer(self, platform: str, op: str = "create", *, times: int = 1) -> None:
        """Do the call, then close the connection without answering (the answer is lost)."""
        self._add(Fault(platform, op, "drop", times))

    def refuse(self, platform: str, op: str = "create", *, times: int = 1) -> None:
        """Refuse the call with the platform's validation error (a permanent refusal)."""
        self._add(Fault(platform, op, "refuse", times))

    def existing(self, platform: str, code: str, *, listed: bool = True) -> str:
        """Make ``code`` exist on the platform already (Saleor: in our channel unless
        ``listed`` is False); its remote id."""
        with self._lock:
            n = next(self._ids)
            if platform == "shopify":
                gid = f"gid://shopify/DiscountCodeNode/{n}"
                self.shopify[code.upper()] = {"id": gid, "input": {}, "mutation": "preset"}
                return gid
            if platform == "woocommerce":
                self.woocommerce[code.lower()] = {"id": n, "code": code.lower()}
                return str(n)
            vid = base64.b64encode(f"Voucher:{n}".encode()).decode()
            self.saleor[code] = {
                "id": vid,
                "input": {},
                "channels": {SALEOR_CHANNEL: {}} if listed else {},
            }
            return vid

    def calls(self, platform: str, operation: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if r.platform == platform and (operation is None or r.operation == operation)
        ]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- serving ---------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if parts.path == "/.well-known/jwks.json" and h.command == "GET":
            if self.jwks is None:
                return _send(h, 404, {"error": "no JWKS"})
            return _send(h, 200, self.jwks)
        if SHOPIFY_PATH.match(parts.path):
            platform = "shopify"
        elif parts.path == WOO_PATH:
            platform = "woocommerce"
        elif parts.path == SALEOR_PATH:
            platform = "saleor"
        else:
            self._problem(f"{h.command} {parts.path}: no such endpoint")
            return _send(h, 404, {"errors": "Not Found"})
        received = Received(
            platform, h.command, parts.path, parse_qs(parts.query), headers, body, ""
        )
        with self._lock:
            self.received.append(received)
        # Checks common to every platform.
        if not headers.get("user-agent", "").startswith("cart-recovery/"):
            self._problem(f"{platform}: no User-Agent naming the product")
        if not headers.get("idempotency-key"):
            self._problem(f"{platform}: no Idempotency-Key")
        if h.command == "POST" and not headers.get("content-type", "").startswith(
            "application/json"
        ):
            self._problem(f"{platform}: POST without Content-Type: application/json")
            return _send(h, 415, {"errors": "Unsupported Media Type"})
        handler = {
            "shopify": self._shopify,
            "woocommerce": self._woocommerce,
            "saleor": self._saleor,
        }[platform]
        handler(h, received)

    def _problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    def _fault(self, received: Received) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (
                    fault.times > 0
                    and fault.platform == received.platform
                    and fault.op in ("any", received.operation)
                ):
                    fault.times -= 1
                    return fault
        return None

    def _before(self, h: BaseHTTPRequestHandler, fault: Fault | None) -> bool:
        """Apply a fault that replaces the answer; True when it did (nothing more to do)."""
        if fault is None:
            return False
        if fault.action == "status":
            _send_raw(h, fault.status, fault.body, fault.headers)
            return True
        if fault.action == "stall":
            self._closing.wait(fault.seconds)
            h.close_connection = True
            return True
        if fault.action == "throttle_graphql":
            _send(
                h,
                200,
                {
                    "errors": [
                        {
                            "message": "Throttled",
                            "extensions": {
                                "code": "THROTTLED",
                                "documentation": "https://shopify.dev/api/usage/rate-limits",
                            },
                        }
                    ],
                    "extensions": {
                        "cost": {
                            "requestedQueryCost": 10,
                            "actualQueryCost": None,
                            "throttleStatus": {
                                "maximumAvailable": 1000.0,
                                "currentlyAvailable": 2,
                                "restoreRate": 4.0,
                            },
                        }
                    },
                },
            )
            return True
        return False  # "drop" and "refuse" act after the operation is understood

    def _graphql(
        self, h: BaseHTTPRequestHandler, received: Received
    ) -> tuple[str, dict[str, Any]] | None:
        """The document's one root field and its arguments (variables coerced by the schema);
        None when the request broke the schema (answered with GraphQL errors, a problem)."""
        schema = SCHEMAS[received.platform]
        body = received.body
        if (
            h.command != "POST"
            or not isinstance(body, dict)
            or not isinstance(body.get("query"), str)
        ):
            self._problem(f"{received.platform}: not a GraphQL POST with a query")
            _send(h, 400, {"errors": [{"message": "No query string was present"}]})
            return None
        try:
            document = parse(body["query"])
        except Exception as error:  # graphql's GraphQLSyntaxError
            self._problem(f"{received.platform}: {error}")
            _send(h, 200, {"errors": [{"message": str(error)}]})
            return None
        errors = validate(schema, document)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if not errors and len(operations) != 1:
            errors = ["one operation per request"]  # type: ignore[list-item]
        if errors:
            self._problem(f"{received.platform}: {'; '.join(map(str, errors))}")
            _send(h, 200, {"errors": [{"message": str(e)} for e in errors]})
            return None
        operation = operations[0]
        variables = get_variable_values(
            schema, operation.variable_definitions or (), body.get("variables") or {}
        )
        if isinstance(variables, list):
            self._problem(f"{received.platform}: {'; '.join(e.message for e in variables)}")
            _send(h, 200, {"errors": [{"message": e.message} for e in variables]})
            return None
        fields = [s for s in operation.selection_set.selections if isinstance(s, FieldNode)]
        if len(fields) != 1:
            self._problem(f"{received.platform}: one root field per request expected")
            _send(h, 200, {"errors": [{"message": "one root field"}]})
            return None
        root = (
            schema.mutation_type if operation.operation.value == "mutation" else schema.query_type
        )
        assert root is not None
        name = fields[0].name.value
        arguments = get_argument_values(root.fields[name], fields[0], variables)
        received.operation = OPERATIONS.get(name, "")
        # graphql-core 3.3 wraps the values (``.coerced``); 3.2 gives the dict itself.
        received.variables = dict(getattr(variables, "coerced", variables))  # type: ignore[arg-type]
        return name, arguments

    # -- Shopify ---------------------------------------------------------------------------------

    def _shopify(self, h: BaseHTTPRequestHandler, received: Received) -> None:
        if received.headers.get("x-shopify-access-token") != SHOPIFY_TOKEN:
            return _send(
                h,
                401,
                {
                    "errors": "[API] Invalid API key or access token "
                    "(unrecognized login or wrong password)"
                },
            )
        understood = self._graphql(h, received)
        if understood is None:
            return
        name, arguments = understood
        fault = self._fault(received)
        if self._before(h, fault):
            return
        if name == "codeDiscountNodeByCode":
            with self._lock:
                found = self.shopify.get(str(arguments["code"]).upper())
            return _send(h, 200, {"data": {name: {"id": found["id"]} if found else None}})
        discount = next(iter(arguments.values()))
        if fault is not None and fault.action == "refuse":
            errors = [_user_error(["endsAt"], "INVALID", "Ends at needs to be after starts_at")]
        else:
            errors = self._shopify_check(name, discount)
        if errors:
            return _send(h, 200, {"data": {name: {"codeDiscountNode": None, "userErrors": errors}}})
        with self._lock:
            key = str(discount["code"]).upper()
            if key in self.shopify:
                errors = [
                    _user_error(
                        ["basicCodeDiscount", "code"]
                        if name == "discountCodeBasicCreate"
                        else ["freeShippingCodeDiscount", "code"],
                        "TAKEN",
                        "Code must be unique. Please try a different code.",
                    )
                ]
                node = None
            else:
                node = {"id": f"gid://shopify/DiscountCodeNode/{next(self._ids)}"}
                self.shopify[key] = {"id": node["id"], "input": discount, "mutation": name}
        if fault is not None and fault.action == "drop":
            h.close_connection = True
            return
        _send(h, 200, {"data": {name: {"codeDiscountNode": node, "userErrors": errors}}})

    def _shopify_check(self, name: str, d: dict[str, Any]) -> list[dict[str, Any]]:
        """What Shopify refuses in a create (its userErrors), and what breaks our contract."""
        errors = []
        for required in ("code", "title", "startsAt"):
            if not d.get(required):
                errors.append(_user_error([required], "BLANK", f"{required} can't be blank"))
        if not d.get("context") and not d.get("customerSelection"):
            errors.append(_user_error(["context"], "BLANK", "context can't be blank"))
        starts, ends = _when(d.get("startsAt")), _when(d.get("endsAt"))
        if (d.get("startsAt") and starts is None) or (d.get("endsAt") and ends is None):
            errors.append(
                _user_error(["startsAt"], "INVALID", "Dates must be ISO 8601 with a zone")
            )
        elif starts and ends and ends <= starts:
            errors.append(_user_error(["endsAt"], "INVALID", "Ends at needs to be after starts_at"))
        minimum = ((d.get("minimumRequirement") or {}).get("subtotal") or {}).get(
            "greaterThanOrEqualToSubtotal"
        )
        if minimum is not None and _decimal(minimum) is None:
            errors.append(_user_error(["minimumRequirement"], "INVALID", "not a decimal"))
        if name == "discountCodeBasicCreate":
            value = ((d.get("customerGets") or {}).get("value")) or {}
            if ("percentage" in value) == ("discountAmount" in value):
                errors.append(
                    _user_error(["customerGets", "value"], "INVALID", "one value kind is needed")
                )
            elif "percentage" in value and not 0 < float(value["percentage"]) <= 1:
                errors.append(
                    _user_error(
                        ["customerGets", "value", "percentage"],
                        "LESS_THAN_OR_EQUAL_TO",
                        "Value must be between 0.0 and 1.0",
                    )
                )
            elif "discountAmount" in value and (
                _decimal(value["discountAmount"].get("amount")) is None
            ):
                errors.append(_user_error(["customerGets", "value"], "INVALID", "bad amount"))
        return errors

    # -- WooCommerce -----------------------------------------------------------------------------

    def _woocommerce(self, h: BaseHTTPRequestHandler, received: Received) -> None:
        received.operation = "create" if h.command == "POST" else "lookup"
        if h.command not in ("GET", "POST"):
            self._problem(f"woocommerce: {h.command} {received.path}")
            return _send(h, 404, _woo_error("rest_no_route", "No route was found", 404))
        if _basic(received.headers.get("authorization", "")) != (WOO_KEY, WOO_SECRET):
            verb = "create" if h.command == "POST" else "list"
            return _send(
                h,
                401,
                _woo_error(
                    f"woocommerce_rest_cannot_{'create' if verb == 'create' else 'view'}",
                    f"Sorry, you cannot {verb} resources.",
                    401,
                ),
            )
        fault = self._fault(received)
        if self._before(h, fault):
            return
        if h.command == "GET":
            code = (received.query.get("code") or [""])[0].lower()
            with self._lock:
                found = self.woocommerce.get(code)
            return _send(h, 200, [found] if found else [])
        body = received.body if isinstance(received.body, dict) else {}
        if fault is not None and fault.action == "refuse":
            return _send(
                h,
                400,
                _woo_error(
                    "rest_invalid_param",
                    "Invalid parameter(s): discount_type",
                    400,
                    params={"discount_type": "discount_type is not one of percent, fixed_cart."},
                ),
            )
        invalid = _woo_check(body)
        if invalid:
            self._problem(f"woocommerce: {invalid}")
            return _send(
                h,
                400,
                _woo_error("rest_invalid_param", "Invalid parameter(s)", 400, params=invalid),
            )
        code = str(body["code"]).lower()
        with self._lock:
            if code in self.woocommerce:
                coupon = None
            else:
                coupon = {**body, "id": next(self._ids), "code": code}
                self.woocommerce[code] = coupon
        if coupon is None:
            return _send(
                h,
                400,
                _woo_error(
                    "woocommerce_rest_coupon_code_already_exists",
                    "The coupon code already exists",
                    400,
                ),
            )
        if fault is not None and fault.action == "drop":
            h.close_connection = True
            return
        _send(h, 201, coupon)

    # -- Saleor ----------------------------------------------------------------------------------

    def _saleor(self, h: BaseHTTPRequestHandler, received: Received) -> None:
        understood = self._graphql(h, received)
        if understood is None:
            return
        name, arguments = understood
        if received.headers.get("authorization") != f"Bearer {SALEOR_TOKEN}":
            # Saleor answers 200 with a permission error when the token is wrong or lacks
            # MANAGE_DISCOUNTS.
            return _send(
                h,
                200,
                {
                    "data": {name: None},
                    "errors": [
                        {
                            "message": "To access this path, you need one of the following "
                            "permissions: MANAGE_DISCOUNTS",
                            "extensions": {"exception": {"code": "PermissionDenied"}},
                        }
                    ],
                },
            )
        fault = self._fault(received)
        if self._before(h, fault):
            return
        if name == "vouchers":
            search = str((arguments.get("filter") or {}).get("search") or "")
            with self._lock:
                nodes = [
                    _saleor_voucher(code, v) for code, v in self.saleor.items() if search in code
                ]
            return _send(h, 200, {"data": {name: {"edges": [{"node": n} for n in nodes]}}})
        if name == "voucherCreate":
            data = arguments["input"]
            if fault is not None and fault.action == "refuse":
                errors = [_saleor_error("endDate", "INVALID", "End date must be after start date")]
            else:
                errors = _saleor_check(data)
            voucher = None
            if not errors:
                code = (data.get("addCodes") or [data.get("code")])[0]
                with self._lock:
                    if code in self.saleor:
                        errors = [
                            _saleor_error(
                                "code", "UNIQUE", "Voucher with this code already exists."
                            )
                        ]
                    else:
                        vid = base64.b64encode(f"Voucher:{next(self._ids)}".encode()).decode()
                        self.saleor[code] = {"id": vid, "input": data, "channels": {}}
                        voucher = {"id": vid}
            if fault is not None and fault.action == "drop" and voucher is not None:
                h.close_connection = True
                return
            return _send(h, 200, {"data": {name: {"voucher": voucher, "errors": errors}}})
        # voucherChannelListingUpdate
        vid, listing = str(arguments["id"]), arguments["input"]
        with self._lock:
            entry = next((v for v in self.saleor.values() if v["id"] == vid), None)
        errors = []
        if fault is not None and fault.action == "refuse":
            errors = [_saleor_error("minAmountSpent", "INVALID", "Value has too many decimals")]
        elif entry is None:
            errors = [_saleor_error("id", "NOT_FOUND", f"Couldn't resolve to a node: {vid}")]
        else:
            for add in listing.get("addChannels") or []:
                if add["channelId"] != SALEOR_CHANNEL:
                    errors.append(_saleor_error("channelId", "NOT_FOUND", "Unknown channel"))
                value = _decimal(add.get("discountValue"))
                if value is None or value <= 0:
                    errors.append(_saleor_error("discountValue", "REQUIRED", "Value is required"))
                elif entry["input"].get("discountValueType") == "PERCENTAGE" and value > 100:
                    errors.append(_saleor_error("discountValue", "INVALID", "Percentage over 100"))
                if (
                    add.get("minAmountSpent") is not None
                    and _decimal(add["minAmountSpent"]) is None
                ):
                    errors.append(_saleor_error("minAmountSpent", "INVALID", "not a decimal"))
            if not errors:
                with self._lock:
                    for add in listing.get("addChannels") or []:
                        entry["channels"][add["channelId"]] = add
        if fault is not None and fault.action == "drop":
            h.close_connection = True
            return
        _send(
            h,
            200,
            {"data": {name: {"voucher": None if errors else {"id": vid}, "errors": errors}}},
        )


# -- helpers -------------------------------------------------------------------------------------


def _send(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    _send_raw(h, status, json.dumps(payload).encode(), {})


def _send_raw(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout)


def _user_error(path: list[str], code: str, message: str) -> dict[str, Any]:
    return {"field": path, "code": code, "message": message}


def _saleor_error(field_name: str, code: str, message: str) -> dict[str, Any]:
    return {"field": field_name, "code": code, "message": message}


def _woo_error(code: str, message: str, status: int, **data: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "data": {"status": status, **data}}


def _when(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _basic(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return key, secret


def _woo_check(body: dict[str, Any]) -> dict[str, str]:
    """WooCommerce's own parameter validation (the coupon schema's types and enums)."""
    invalid = {}
    if not isinstance(body.get("code"), str) or not body["code"]:
        invalid["code"] = "code is required."
    if body.get("discount_type") not in ("percent", "fixed_cart", "fixed_product"):
        invalid["discount_type"] = "discount_type is not one of percent, fixed_cart, fixed_product."
    if not isinstance(body.get("amount"), str) or _decimal(body["amount"]) is None:
        invalid["amount"] = "amount is not of type string."
    elif body.get("discount_type") == "percent" and not 0 < Decimal(body["amount"]) <= 100:
        invalid["amount"] = "a percentage must be in 0..100."
    for name in ("minimum_amount", "maximum_amount"):
        if name in body and (not isinstance(body[name], str) or _decimal(body[name]) is None):
            invalid[name] = f"{name} is not of type string."
    for name in ("usage_limit", "usage_limit_per_user"):
        if name in body and not isinstance(body[name], int | None):
            invalid[name] = f"{name} is not of type integer."
    for name in ("individual_use", "free_shipping"):
        if name in body and not isinstance(body[name], bool):
            invalid[name] = f"{name} is not of type boolean."
    expires = body.get("date_expires_gmt")
    if expires is not None:
        try:
            datetime.fromisoformat(str(expires))
        except ValueError:
            invalid["date_expires_gmt"] = "Invalid date."
    return invalid


def _saleor_check(data: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    codes = data.get("addCodes") or ([data["code"]] if data.get("code") else [])
    if not codes:
        errors.append(_saleor_error("addCodes", "REQUIRED", "A code is required"))
    if data.get("code") and data.get("addCodes"):
        errors.append(_saleor_error("code", "INVALID", "Use code or addCodes, not both"))
    starts, ends = _when(data.get("startDate")), _when(data.get("endDate"))
    if (data.get("startDate") and starts is None) or (data.get("endDate") and ends is None):
        errors.append(_saleor_error("startDate", "INVALID", "Enter a valid date/time."))
    elif starts and ends and ends <= starts:
        errors.append(_saleor_error("endDate", "INVALID", "End date must be after start date"))
    if not data.get("discountValueType"):
        errors.append(_saleor_error("discountValueType", "REQUIRED", "Required"))
    return errors


def _saleor_voucher(code: str, v: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": v["id"],
        "code": code,
        "codes": {"edges": [{"node": {"code": code}}]},
        "channelListings": [
            {"channel": {"id": channel, "slug": "default-channel"}} for channel in v["channels"]
        ],
    }


def running() -> Iterator[FakePlatforms]:
    """A running fake of the three platforms, closed after; fails the test if a request broke a
    platform's documented contract (clear ``problems`` in a test that breaks it on purpose)."""
    fake = FakePlatforms()
    try:
        yield fake
    finally:
        fake.close()
    assert fake.problems == []


fake_platforms = pytest.fixture(running, name="fake_platforms")
