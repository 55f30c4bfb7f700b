/*! Cart recovery storefront snippet. Plain ES2017, no dependencies. docs/snippet.md, docs/websocket.md */
(() => {
  'use strict';
  const w = window, d = document;
  const stub = w.Recovery;
  if (stub && stub.v) return; // loaded twice

  const script = d.currentScript || d.querySelector('script[data-key][src*="recovery"]');
  const attr = (name) => (script && script.getAttribute('data-' + name)) || '';
  const num = (name, dflt) => { const n = parseInt(attr(name), 10); return n >= 0 ? n : dflt; };
  const warn = (...args) => { try { console.warn('[recovery]', ...args); } catch (e) { /* no console */ } };

  const KEY = attr('key');
  const API = (attr('api') || (script && script.src ? new URL(script.src, location.href).origin : location.origin)).replace(/\/+$/, '');
  const MIN_DWELL = num('min-dwell-ms', 5000), IDLE = num('idle-ms', 60000), HIDDEN = num('hidden-ms', 3000);
  const MAX_QUEUE = 100, MAX_FRAME = 16384, PING = 25000, CAP = 30000;
  const CART = 'recovery.cart', GRANT = 'recovery.grant', SHOWN = 'recovery.offers', DEVICE = 'recovery.device';

  // Storage that never throws: a page-local copy, and the real storage when the browser allows it.
  const storage = (name) => {
    const mem = {};
    let s = null;
    try { s = w[name]; } catch (e) { /* blocked */ }
    return {
      get: (k) => { if (k in mem) return mem[k]; try { return s.getItem(k); } catch (e) { return null; } },
      set: (k, v) => { mem[k] = v; try { v == null ? s.removeItem(k) : s.setItem(k, v); } catch (e) { /* private mode, quota */ } },
    };
  };
  const local = storage('localStorage'), session = storage('sessionStorage');

  const uuid = () => {
    const c = w.crypto;
    try { if (c.randomUUID) return c.randomUUID(); } catch (e) { /* insecure context */ }
    const b = new Uint8Array(16);
    try { c.getRandomValues(b); } catch (e) { for (let i = 0; i < 16; i++) b[i] = Math.random() * 256; }
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };

  const hooks = {};
  const emit = (name, arg) => (hooks[name] || []).forEach((fn) => { try { fn(arg); } catch (e) { warn(e); } });

  // The server's clock: offset = server_time of the last welcome - our clock then. Events are stamped
  // with our clock corrected by it (a browser's clock can be hours off; the server refuses events far
  // from its own time). Frames made before the first welcome are stamped when they are first sent.
  let offset = 0;
  const now = () => Date.now() + offset;
  const unstamped = new WeakMap(); // frame -> our clock (ms) when it was tracked

  // Connection ------------------------------------------------------------------------------------
  // The cart: one its sessions minted (c_ tokens), or a cart the shop's server made and granted to
  // the page (data-cart + data-grant, or Recovery.grant(cart, grant)); its grant is kept with it.
  // The device token the server gave this browser (a key of the cooldown of discount codes): sent
  // back with every session; the server answers with the one to keep (a new one if it was refused).
  let cart = local.get(CART), grant = null, device = local.get(DEVICE);
  try { const g = JSON.parse(local.get(GRANT)); if (g && g.cart === cart) grant = g.grant; } catch (e) { /* none */ }
  let enabled = false, stopped = false, leaving = false, connecting = false, welcomed = false, reconnect = false;
  let ws = null, attempt = 0, retryTimer = 0, pingTimer = 0, lastSeen = 0, rateWait = 0;
  let queue = [], inflight = []; // frames to send once welcomed; events sent and not yet answered

  const saveGrant = (value) => { grant = (cart && value) || null; local.set(GRANT, grant ? JSON.stringify({ cart, grant }) : null); };
  const saveCart = (token, granted) => { cart = token || null; local.set(CART, cart); saveGrant(granted); };
  const saveDevice = (token) => { device = (typeof token === 'string' && token.length <= 128 && token) || null; local.set(DEVICE, device); };
  const ready = () => ws && ws.readyState === 1 && welcomed;
  const trim = () => { if (queue.length > MAX_QUEUE) { warn('queue full: dropping the oldest messages'); queue = queue.slice(-MAX_QUEUE); } };
  const flush = () => {
    while (ready() && queue.length) {
      const f = queue.shift();
      if (unstamped.has(f)) { f.event.occurred_at = new Date(unstamped.get(f) + offset).toISOString(); unstamped.delete(f); }
      ws.send(JSON.stringify(f));
      if (f.type === 'event') inflight.push(f);
    }
  };
  const push = (frame) => {
    if (!enabled) return false;
    if (new Blob([JSON.stringify(frame)]).size > MAX_FRAME) { warn('message over 16 KiB not sent:', frame.type); return false; }
    queue.push(frame); trim(); flush();
    return true;
  };

  const fatal = (message, detail) => {
    stopped = true;
    warn(message);
    emit('error', Object.assign({ type: 'error', code: 'configuration', message }, detail));
  };

  const retry = () => {
    if (!enabled || stopped || leaving) return;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, Math.random() * Math.min(CAP, 500 * 2 ** Math.min(attempt++, 10)));
  };

  // Forget a socket (closed, stale or replaced); unanswered events go back to the front of the queue.
  const drop = (sock, requeue) => {
    if (ws !== sock) return;
    ws = null; welcomed = false;
    clearInterval(pingTimer);
    if (requeue) queue = inflight.concat(queue);
    inflight = []; trim();
    try { sock.close(); } catch (e) { /* already closed */ }
  };

  const connect = async () => {
    if (!enabled || stopped || ws || connecting) return;
    connecting = true;
    clearTimeout(retryTimer);
    try {
      const body = { publishable_key: KEY };
      if (cart) body.cart = cart;
      if (cart && grant) body.grant = grant;
      if (device) body.device = device;
      const r = await fetch(API + '/api/v1/shopper-sessions', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), credentials: 'omit',
      });
      if (r.status === 400 && (cart || device)) {
        // Drop what the field errors name (both when they name neither): a refused cart keeps
        // the device token, so its cooldowns stay with this browser.
        const b = await r.json().catch(() => ({}));
        const named = b && (b.cart || b.grant || b.device);
        if (!named || b.cart || b.grant) saveCart(null);
        if (!named || b.device) saveDevice(null);
        throw new Error('stored cart or device refused: starting anew');
      }
      if (r.status === 401) return fatal('unknown or revoked publishable key (data-key)', { status: 401 });
      if (r.status === 403) {
        const b = await r.json().catch(() => ({}));
        if (b.code === 'cart_not_allowed' && cart) {
          // Not a cart of this browser's, or its grant expired: the next session starts a new cart.
          emit('error', { type: 'error', code: 'cart_not_allowed', message: b.detail, cart });
          saveCart(null); attempt = 0;
          throw new Error('cart not allowed: starting a new one');
        }
        return fatal(`${location.origin} is not in the store's allowed origins`, { status: 403 });
      }
      if (r.status !== 201) throw new Error('HTTP ' + r.status);
      const s = await r.json();
      if (!enabled || stopped) return;
      if (s.cart !== cart) saveCart(s.cart);
      if (s.device !== device) saveDevice(s.device);
      const url = new URL(s.ws_path || '/ws/v1/shopper/', API);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      const sock = ws = new WebSocket(url.href);
      sock.onopen = () => { lastSeen = Date.now(); sock.send(JSON.stringify({ type: 'hello', ticket: s.ticket })); };
      sock.onmessage = (e) => { if (ws === sock) receive(e.data); };
      sock.onclose = (e) => {
        if (ws !== sock) return;
        drop(sock, true);
        emit('close', { code: e.code });
        if (e.code === 4401 || e.code === 4403 || e.code === 4406) {
          return fatal(`websocket refused (${e.code}): check data-key and the store's allowed origins`, { close_code: e.code });
        }
        reconnect = true;
        if (e.code === 4429) {
          // Over the server's rate limit: come back once it lifts (the refused message is queued).
          clearTimeout(retryTimer);
          retryTimer = setTimeout(connect, 1000 * Math.max(1, rateWait) + Math.random() * 1000);
          rateWait = 0;
          return;
        }
        retry();
      };
      pingTimer = setInterval(() => {
        if (Date.now() - lastSeen > 2.5 * PING) { drop(sock, true); reconnect = true; return retry(); } // no answer: stale
        if (sock.readyState === 1) sock.send('{"type":"ping"}');
      }, PING);
    } catch (e) {
      // A CORS refusal looks like a network error here: say what to check once it keeps failing.
      if (attempt === 4) warn(`cannot open a session at ${API} (${e.message}); is ${location.origin} an allowed origin?`);
      retry();
    } finally {
      connecting = false;
    }
  };

  const receive = (raw) => {
    let m;
    try { m = JSON.parse(raw); } catch (e) { return; }
    lastSeen = Date.now();
    if (m.type === 'welcome') {
      welcomed = true; attempt = 0;
      const t = Date.parse(m.server_time);
      if (t > 0) offset = t - Date.now();
      if (m.cart && m.cart !== cart) saveCart(m.cart);
      emit('welcome', m);
      flush();
      if (reconnect) pending(); // a push may have been lost while we were away
    } else if (m.type === 'offer') {
      ws.send(JSON.stringify({ type: 'ack', offer: m.id }));
      offer(m);
    } else if (m.type === 'offer.withdrawn') {
      // The server could not record the decision after all: take the offer back.
      if (later && later.id === m.id) later = null;
      if (withdraw) withdraw(m.id);
    } else if (m.type === 'appended') {
      const i = inflight.findIndex((f) => f.event.id === m.id);
      const f = i >= 0 ? inflight.splice(i, 1)[0] : null;
      emit('appended', Object.assign({ event_type: f && f.event.type }, m));
    } else if (m.type === 'error') {
      // Events are answered in order, each with `appended` or an error; these codes are about
      // other messages (reactions to an unknown offer, say), or, rate_limited, about the socket.
      if (m.code === 'rate_limited') rateWait = Number(m.retry_after) || 1; // the close (4429) follows
      if (!/^(invalid_message|unknown_type|invalid_json|rate_limited)$/.test(m.code)) {
        const f = inflight.shift();
        warn('event refused:', f && f.event.type, m.code, m.errors || m.message);
      }
      emit('error', m);
    }
  };

  // Another cart from now on (none: a new one, minted by the next session), on a new session. The
  // shop's server records orders; its thank-you page calls Recovery.reset() so the next item starts
  // a new cart.
  const switchCart = (token, granted) => {
    saveCart(token, granted);
    if (ws) { inflight = []; drop(ws, false); }
    reconnect = false; attempt = 0;
    connect();
  };

  const pending = () => {
    if (!cart) return;
    const g = grant ? '&grant=' + encodeURIComponent(grant) : '';
    fetch(`${API}/api/v1/shopper-sessions/offers?publishable_key=${encodeURIComponent(KEY)}&cart=${encodeURIComponent(cart)}${g}`, { credentials: 'omit' })
      .then((r) => (r.ok ? r.json() : null))
      .then((b) => b && (b.offers || []).forEach(offer))
      .catch(() => {});
  };

  // Offers ----------------------------------------------------------------------------------------
  let dialog = null, later = null, seq = 0, withdraw = null;
  const shown = () => { try { return JSON.parse(session.get(SHOWN)) || []; } catch (e) { return []; } };
  const react = (type, id) => push({ type, offer: id });

  const offer = (o) => {
    if (!o || !o.id) return;
    emit('offer', o);
    display(o);
  };
  const display = (o) => {
    if (dialog || shown().indexOf(o.id) >= 0) return;
    if (o.expires_at && Date.parse(o.expires_at) < now()) return;
    if (d.hidden) { later = o; return; } // shown when the shopper comes back
    session.set(SHOWN, JSON.stringify(shown().concat(o.id).slice(-20)));
    show(o);
  };

  const safeUrl = (u) => {
    try { const x = new URL(u, location.href); return /^https?:$/.test(x.protocol) ? x.href : ''; } catch (e) { return ''; }
  };

  const el = (tag, cls, css, text) => {
    const e = d.createElement(tag);
    e.className = 'rcv-' + cls;
    e.style.cssText = css;
    if (text) e.textContent = text;
    return e;
  };

  const show = (o) => {
    const n = ++seq, before = d.activeElement, url = o.cta_url ? safeUrl(o.cta_url) : '';
    const back = el('div', 'backdrop', 'position:fixed;top:0;right:0;bottom:0;left:0;z-index:2147483000;background:rgba(0,0,0,.45);display:flex;align-items:center;justify-content:center;padding:16px');
    const box = el('div', 'dialog', 'position:relative;box-sizing:border-box;width:100%;max-width:26rem;background:#fff;color:#111;border-radius:10px;padding:24px;box-shadow:0 12px 40px rgba(0,0,0,.3);font:16px/1.45 system-ui,sans-serif;text-align:left');
    const head = el('h2', 'headline', 'margin:0 2rem .5rem 0;font-size:1.3em;line-height:1.25;color:inherit', o.headline);
    const body = el('p', 'body', 'margin:0 0 1rem', o.body);
    head.id = 'rcv-h' + n; body.id = 'rcv-b' + n;
    box.setAttribute('role', 'dialog');
    box.setAttribute('aria-modal', 'true');
    box.setAttribute('aria-labelledby', head.id);
    box.append(head, body);
    let described = body.id;
    if (o.discount_code) {
      const code = el('p', 'code', 'margin:0 0 1rem', 'Code: ');
      code.id = 'rcv-c' + n;
      code.append(el('strong', 'code-value', 'font-family:ui-monospace,monospace;letter-spacing:.05em', o.discount_code));
      box.append(code);
      described += ' ' + code.id;
    }
    box.setAttribute('aria-describedby', described);
    const cta = el(url ? 'a' : 'button', 'cta', 'display:inline-block;background:#111;color:#fff;border:0;border-radius:6px;padding:.6em 1.2em;font:inherit;font-weight:600;text-decoration:none;cursor:pointer', o.cta_label || 'OK');
    if (url) cta.href = url; else cta.type = 'button';
    const close = el('button', 'close', 'position:absolute;top:6px;right:6px;border:0;background:none;color:inherit;font:24px/1 system-ui,sans-serif;padding:8px;cursor:pointer', '\u00d7');
    close.type = 'button';
    close.setAttribute('aria-label', 'Close');
    box.append(cta, close);
    back.append(box);

    const focusables = [cta, close];
    const onKey = (e) => {
      if (e.key === 'Escape' || e.key === 'Esc') { e.preventDefault(); finish('offer.dismissed'); }
      else if (e.key === 'Tab') {
        const i = focusables.indexOf(d.activeElement);
        if (e.shiftKey ? i <= 0 : i < 0 || i === focusables.length - 1) {
          e.preventDefault();
          focusables[e.shiftKey ? focusables.length - 1 : 0].focus();
        }
      }
    };
    const onFocus = (e) => { if (!box.contains(e.target)) cta.focus(); };
    const finish = (type, then) => {
      if (dialog !== back) return;
      dialog = null;
      d.removeEventListener('keydown', onKey, true);
      d.removeEventListener('focusin', onFocus, true);
      back.remove();
      withdraw = null;
      if (type) react(type, o.id); // none when the server withdrew it
      if (before && before.focus && d.contains(before)) try { before.focus(); } catch (e) { /* not focusable */ }
      if (then) then();
    };
    back.addEventListener('click', (e) => { if (e.target === back) finish('offer.dismissed'); });
    close.addEventListener('click', () => finish('offer.dismissed'));
    cta.addEventListener('click', (e) => {
      const plain = url && !(e.ctrlKey || e.metaKey || e.shiftKey || e.altKey || e.button);
      if (plain) e.preventDefault(); // navigate once offer.accepted has left
      emit('accepted', o); // the page may apply the offer (the demo fills in its code)
      finish('offer.accepted', plain ? () => sent(() => location.assign(url)) : null);
    });

    dialog = back;
    withdraw = (id) => { if (id === o.id) finish(null); };
    d.addEventListener('keydown', onKey, true);
    d.addEventListener('focusin', onFocus, true);
    (d.body || d.documentElement).append(back);
    cta.focus();
    react('offer.shown', o.id);
  };

  // Call back once the queue has gone out (or after 2 s), e.g. before leaving the page.
  const sent = (cb) => {
    const until = Date.now() + 2000;
    const tick = () => ((!queue.length && !(ws && ws.bufferedAmount)) || Date.now() > until ? cb() : setTimeout(tick, 50));
    tick();
  };

  // Exit intent -----------------------------------------------------------------------------------
  const start = Date.now();
  let fired = false, lastInput = start;
  const coarse = !!(w.matchMedia && w.matchMedia('(pointer: coarse)').matches);
  const triggers = (attr('triggers') || (coarse ? 'tab_hidden back_button scroll_up idle' : 'mouse_leave idle')).split(/[\s,]+/);
  const uses = (t) => triggers.indexOf(t) >= 0;

  const exit = (trigger) => {
    if (fired || !enabled || Date.now() - start < MIN_DWELL) return;
    fired = true; // one per page view
    track('shopper.exit_intent', { trigger });
  };

  let watching = false;
  const watch = () => {
    if (watching) return;
    watching = true;
    const opts = { passive: true, capture: true };
    if (uses('mouse_leave')) {
      d.addEventListener('mouseout', (e) => { if (!e.relatedTarget && e.clientY <= 10) exit('mouse_leave'); });
    }
    let hiddenAt = 0, hiddenTimer = 0;
    d.addEventListener('visibilitychange', () => {
      if (d.hidden) {
        hiddenAt = Date.now();
        if (uses('tab_hidden')) hiddenTimer = setTimeout(() => exit('tab_hidden'), HIDDEN);
        return;
      }
      clearTimeout(hiddenTimer);
      if (uses('tab_hidden') && hiddenAt && Date.now() - hiddenAt >= HIDDEN) exit('tab_hidden');
      hiddenAt = 0;
      if (later) { const o = later; later = null; display(o); }
    });
    if (uses('back_button') && w.history && history.pushState) {
      // A sentinel entry; pushed after the first interaction, since browsers skip entries added without one.
      let armed = false;
      const arm = () => {
        ['click', 'keydown', 'touchstart'].forEach((t) => d.removeEventListener(t, arm, opts));
        try { history.pushState({ rcv: 1 }, ''); armed = location.href; } catch (e) { /* sandboxed */ }
      };
      ['click', 'keydown', 'touchstart'].forEach((t) => d.addEventListener(t, arm, opts));
      w.addEventListener('popstate', (e) => {
        if (armed === location.href && !(e.state && e.state.rcv)) { armed = false; exit('back_button'); }
      });
    }
    if (uses('scroll_up')) {
      let lastY = w.scrollY, lastT = Date.now(), maxY = lastY;
      w.addEventListener('scroll', () => {
        const y = w.scrollY, t = Date.now(), h = w.innerHeight;
        maxY = Math.max(maxY, y);
        if (t > lastT && t - lastT < 250 && (lastY - y) / (t - lastT) > 1.5 && y < h && maxY > h) exit('scroll_up');
        lastY = y; lastT = t;
      }, { passive: true });
    }
    if (uses('idle')) {
      ['mousemove', 'mousedown', 'keydown', 'scroll', 'touchstart', 'wheel'].forEach((t) => w.addEventListener(t, () => { lastInput = Date.now(); }, opts));
      const check = () => {
        const left = lastInput + IDLE - Date.now();
        if (left <= 0 && !d.hidden) { exit('idle'); lastInput = Date.now(); }
        setTimeout(check, Math.max(left, 1000));
      };
      setTimeout(check, IDLE);
    }
    w.addEventListener('pagehide', () => { leaving = true; });
    w.addEventListener('pageshow', (e) => { leaving = false; if (e.persisted && !ws) connect(); });
    w.addEventListener('online', () => { if (!ws) { attempt = 0; connect(); } });
  };

  // API -------------------------------------------------------------------------------------------
  // occurredAt (ISO 8601) is on this browser's clock, like the snippet's own times: both are corrected.
  const track = (type, data, occurredAt) => {
    if (!enabled || typeof type !== 'string') return null;
    const local = (occurredAt && Date.parse(occurredAt)) || Date.now();
    const event = { id: uuid(), type, occurred_at: new Date(local + offset).toISOString(), data: data || {} };
    if (type === 'page.viewed') fired = false; // a new (single-page app) page view
    const frame = { type: 'event', event };
    if (!welcomed) unstamped.set(frame, local); // the offset may not be known yet
    return push(frame) ? event.id : null;
  };

  // The shop's server made this cart and grants it to the page (docs/snippet.md).
  const useGrant = (token, value) => {
    if (typeof token !== 'string' || typeof value !== 'string' || !token || !value) return warn('Recovery.grant(cart, grant) takes two strings');
    if (token === cart) return saveGrant(value);
    if (!enabled) return saveCart(token, value);
    switchCart(token, value);
  };

  const dnt = attr('respect-dnt') === 'true' && (navigator.doNotTrack === '1' || w.doNotTrack === '1');
  const enable = () => {
    if (enabled || dnt) return;
    if (!/^pk_/.test(KEY)) return warn('data-key must be a publishable key (pk_...)');
    enabled = true; stopped = false;
    watch();
    connect();
  };
  const consent = (yes) => {
    if (yes) return enable();
    enabled = false;
    queue = []; inflight = [];
    clearTimeout(retryTimer);
    if (ws) drop(ws, false);
    saveCart(null); saveDevice(null); // withdrawn: forget the cart and device tokens too
  };
  const reset = () => { if (enabled) switchCart(null); else saveCart(null); };

  w.Recovery = {
    v: 1,
    track,
    cart: () => cart,
    consent,
    grant: useGrant,
    reset,
    on: (name, fn) => { (hooks[name] = hooks[name] || []).push(fn); },
  };
  // Calls made to a stub before this script loaded: [method, args, time of the call]. The page's
  // cart (data-cart/data-grant, or a grant call) is known before the first session.
  const calls = (stub && stub.q) || [];
  if (attr('cart') && attr('grant')) useGrant(attr('cart'), attr('grant'));
  calls.filter((c) => c[0] === 'grant').forEach((c) => useGrant(...c[1]));
  if (attr('consent') !== 'required') enable();
  calls.forEach((c) => {
    if (c[0] === 'track') track(c[1][0], c[1][1], c[1][2] || c[2]);
    else if (c[0] !== 'grant' && w.Recovery[c[0]]) w.Recovery[c[0]](...c[1]);
  });
})();
