/* The live dashboard (templates/dashboards/live/live.html): a snapshot of the store's active
 * carts, then one frame per event over the dashboard websocket (docs/websocket.md). Reconnects
 * with backoff; every text from the server is set with textContent, never as markup. */
(function () {
  "use strict";

  var script = document.currentScript;
  var store = script.dataset.store;
  var wsPath = script.dataset.wsPath;
  var windowMs = Number(script.dataset.windowSeconds || 1800) * 1000;
  // The store's locale (a BCP 47 tag; Store.locale), as the pages write money; English without.
  var locale = (script.dataset.locale || "").replace(/_/g, "-") || "en";
  var MAX_ROWS = 50;
  var MAX_FEED = 100;
  var FIRST_DELAY = 1000;
  var MAX_DELAY = 30000;
  var PING_MS = 25000;
  // Events that create a row (a shopper doing something); others only update a known row.
  var SHOPPER = /^(cart|page|checkout|coupon|order|shopper)\./;
  // Events shown in the feed (a cart's routine activity only updates its row).
  var FEED = {
    "shopper.exit_intent": true,
    "recovery.offer_decided": true,
    "recovery.offer_shown": true,
    "recovery.offer_accepted": true,
    "recovery.offer_dismissed": true,
    "campaign.step_sent": true,
    "checkout.started": true,
    "order.placed": true,
    "order.refunded": true,
  };
  var LABELS = {
    "cart.item_added": "item added",
    "cart.item_removed": "item removed",
    "cart.item_quantity_changed": "quantity changed",
    "page.viewed": "page viewed",
    "checkout.started": "checkout started",
    "checkout.contact_captured": "contact given",
    "checkout.shipping_quoted": "shipping quoted",
    "coupon.rejected": "coupon rejected",
    "shopper.exit_intent": "exit intent",
    "recovery.offer_decided": "offer decided",
    "recovery.offer_shown": "offer shown",
    "recovery.offer_accepted": "offer accepted",
    "recovery.offer_dismissed": "offer dismissed",
    "campaign.step_sent": "campaign step sent",
    "order.placed": "order placed",
    "order.refunded": "refund",
  };

  var status = document.getElementById("connection");
  var tbody = document.querySelector("#live-carts tbody");
  var feed = document.getElementById("live-feed");
  var carts = new Map(); // cart token -> row data
  var seen = new Set(); // positions already in the feed (a reconnect may repeat none, but cheap)
  var socket = null;
  var delay = FIRST_DELAY;
  var pinger = null;
  var formats = {};

  function setState(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function money(minor, currency) {
    if (minor === null || minor === undefined) return "—";
    if (!currency) return String(minor);
    try {
      if (!formats[currency]) {
        // the pages' format (carts.money.display): the store's locale, English without one
        var options = { style: "currency", currency: currency };
        try {
          formats[currency] = new Intl.NumberFormat(locale, options);
        } catch (e) {
          formats[currency] = new Intl.NumberFormat("en", options); // a tag the browser refuses
        }
      }
      var digits = formats[currency].resolvedOptions().maximumFractionDigits;
      return formats[currency].format(minor / Math.pow(10, digits));
    } catch (e) {
      return minor + " " + currency;
    }
  }

  function percent(score) {
    return typeof score === "number" ? Math.round(score * 100) + "%" : "—";
  }

  function clock(iso) {
    var at = iso ? new Date(iso) : null;
    return at && !isNaN(at) ? at.toLocaleTimeString() : "—";
  }

  function shortCart(token) {
    return token.length > 16 ? token.slice(0, 15) + "…" : token;
  }

  function describe(frame) {
    var d = frame.data || {};
    switch (frame.event) {
      case "shopper.exit_intent":
        return "Exit intent" + (d.trigger ? " (" + d.trigger + ")" : "");
      case "recovery.offer_decided":
        return d.decision === "offer"
          ? "Offer made: " + (d.offer_kind || "offer")
          : "No offer: " + (d.reason || "none");
      case "campaign.step_sent":
        return "Campaign step sent" + (d.channel ? " (" + d.channel + ")" : "");
      case "order.placed":
        return "Order placed: " + money(d.total, d.currency);
      case "order.refunded":
        return "Refund: " + money(d.amount, d.currency);
      default:
        var label = LABELS[frame.event] || frame.event;
        return label.charAt(0).toUpperCase() + label.slice(1);
    }
  }

  // -- the carts table ---------------------------------------------------------------------------

  function fromSnapshot(c) {
    return {
      cart: c.cart,
      score: c.score,
      value: c.value,
      currency: c.currency,
      item_count: c.item_count,
      exit_intents: c.exit_intents || 0,
      offers_shown: c.offers_shown || 0,
      offers_accepted: c.offers_accepted || 0,
      last_event: "",
      last_activity_at: c.last_activity_at,
      fresh: false,
    };
  }

  function update(frame) {
    var row = carts.get(frame.cart);
    var state = frame.cart_state;
    if (state && state.status === "converted") {
      carts.delete(frame.cart); // not active any more: the feed shows the order
      return;
    }
    if (!row) {
      if (!SHOPPER.test(frame.event)) return;
      row = fromSnapshot({ cart: frame.cart });
      carts.set(frame.cart, row);
    }
    if (state) {
      row.score = state.score;
      row.value = state.value;
      row.currency = state.currency;
      row.item_count = state.item_count;
      if (state.last_activity_at) row.last_activity_at = state.last_activity_at;
    }
    if (frame.event === "shopper.exit_intent") row.exit_intents += 1;
    if (frame.event === "recovery.offer_shown") row.offers_shown += 1;
    if (frame.event === "recovery.offer_accepted") row.offers_accepted += 1;
    row.last_event = LABELS[frame.event] || frame.event;
    row.fresh = true;
  }

  function cell(tr, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }

  function renderCarts() {
    var now = Date.now();
    var rows = Array.from(carts.values()).filter(function (r) {
      var at = r.last_activity_at ? Date.parse(r.last_activity_at) : now;
      var keep = now - at < windowMs;
      if (!keep) carts.delete(r.cart);
      return keep;
    });
    rows.sort(function (a, b) {
      return (b.last_activity_at || "").localeCompare(a.last_activity_at || "");
    });
    rows.slice(MAX_ROWS).forEach(function (r) {
      carts.delete(r.cart);
    });
    var fragment = document.createDocumentFragment();
    rows.slice(0, MAX_ROWS).forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.cart = r.cart;
      if (r.fresh) tr.className = "fresh";
      cell(tr, shortCart(r.cart), "cart").title = r.cart;
      cell(tr, percent(r.score));
      cell(tr, money(r.value, r.currency));
      cell(tr, String(r.item_count === undefined || r.item_count === null ? "—" : r.item_count));
      cell(tr, String(r.exit_intents));
      cell(tr, r.offers_shown + " / " + r.offers_accepted);
      cell(tr, r.last_event || "—");
      cell(tr, clock(r.last_activity_at));
      r.fresh = false;
      fragment.appendChild(tr);
    });
    if (!rows.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      cell(empty, "No active carts right now.").colSpan = 8;
      fragment.appendChild(empty);
    }
    tbody.replaceChildren(fragment);
  }

  // -- the feed ----------------------------------------------------------------------------------

  function addToFeed(frame) {
    if (!FEED[frame.event] || seen.has(frame.position)) return;
    seen.add(frame.position);
    var placeholder = feed.querySelector("li.empty");
    if (placeholder) placeholder.remove();
    var li = document.createElement("li");
    li.dataset.event = frame.event;
    li.dataset.cart = frame.cart;
    li.dataset.position = String(frame.position);
    var time = document.createElement("time");
    time.dateTime = frame.occurred_at;
    time.textContent = clock(frame.occurred_at);
    var what = document.createElement("span");
    what.className = "what";
    what.textContent = describe(frame);
    var who = document.createElement("span");
    who.className = "cart";
    who.title = frame.cart;
    var score = frame.cart_state && typeof frame.cart_state.score === "number"
      ? ", score " + percent(frame.cart_state.score) : "";
    who.textContent = " · " + shortCart(frame.cart) + score;
    li.append(time, what, who);
    feed.prepend(li);
    while (feed.children.length > MAX_FEED) {
      var last = feed.lastElementChild;
      seen.delete(Number(last.dataset.position));
      last.remove();
    }
  }

  // -- the socket --------------------------------------------------------------------------------

  function handle(message) {
    if (message.type === "snapshot") {
      carts.clear();
      (message.carts || []).forEach(function (c) {
        carts.set(c.cart, fromSnapshot(c));
      });
      renderCarts();
      setState("open", "Live");
    } else if (message.type === "event") {
      update(message);
      renderCarts();
      addToFeed(message);
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + wsPath + "?store=" + encodeURIComponent(store);
    setState("connecting", "Connecting…");
    socket = new WebSocket(url);
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && message.type === "snapshot") delay = FIRST_DELAY;
      handle(message);
    };
    socket.onclose = function (event) {
      clearInterval(pinger);
      if (event.code === 4401) {
        setState("closed", "Logged out: reload the page to log in again.");
        return;
      }
      if (event.code === 4403 || event.code === 4400) {
        setState("closed", "This store's live view is not available to you.");
        return;
      }
      var wait = delay + Math.random() * delay * 0.3;
      setState("reconnecting", "Disconnected; reconnecting in " + Math.ceil(wait / 1000) + " s…");
      setTimeout(connect, wait);
      delay = Math.min(delay * 2, MAX_DELAY);
    };
    clearInterval(pinger);
    pinger = setInterval(function () {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
    }, PING_MS);
  }

  // Rows age out of the window even when nothing happens.
  setInterval(renderCarts, 30000);
  connect();
})();
