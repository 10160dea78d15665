// Aviary console: a single page over the management API (/api/v1/). No framework and no
// build step: the server embeds this file as it is. Every call goes through `api(method,
// path, body)` with a literal `/api/v1/...` path, so a test can check each one against the
// OpenAPI document. Text from the broker (client ids, topics) is only ever set with
// textContent, never parsed as HTML.
'use strict';

const KEY_STORAGE = 'aviary-api-key';
const PAGE = 50;
const state = { view: 'overview', clientOffset: 0, timer: null, last: null };

// ---- plumbing -------------------------------------------------------------------------

/** Calls the API with the stored key; resolves to the JSON body, rejects with its message. */
async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + sessionStorage.getItem(KEY_STORAGE) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    signOut('The API key was refused.');
    throw new Error('unauthorized');
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(data && data.message ? data.code + ': ' + data.message : res.statusText);
  return data;
}

/** Builds an element: h('td', {class: 'num'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : String(c ?? ''));
  return el;
}

/** Fills a table: header row from `columns`, one row per item from `cells(item)`. */
function fill(table, columns, items, cells) {
  table.replaceChildren(h('tr', {}, ...columns.map((c) => h('th', {}, c))));
  for (const item of items) {
    table.append(h('tr', {}, ...cells(item).map((c) =>
      typeof c === 'number' ? h('td', { class: 'num' }, c) : h('td', {}, c))));
  }
  if (items.length === 0) table.append(h('tr', {}, h('td', { colspan: columns.length }, 'none')));
}

function say(text, isError) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

/** Runs an action, reporting success or the API's error message in the status line. */
async function act(done, fn) {
  try {
    await fn();
    if (done) say(done);
  } catch (e) {
    if (e.message !== 'unauthorized') say(e.message, true);
  }
}

const enc = encodeURIComponent;
const form = (id) => Object.fromEntries(new FormData(document.getElementById(id)));

// ---- views ----------------------------------------------------------------------------

const views = {
  async overview() {
    const [stats, usage, limits] = await Promise.all([
      api('GET', '/api/v1/stats'), api('GET', '/api/v1/usage'), api('GET', '/api/v1/limits'),
    ]);
    const now = Date.now();
    let rateIn = '…', rateOut = '…';
    if (state.last) {
      const secs = (now - state.last.at) / 1000;
      rateIn = ((stats.messages_in - state.last.stats.messages_in) / secs).toFixed(1);
      rateOut = ((stats.messages_out - state.last.stats.messages_out) / secs).toFixed(1);
    }
    state.last = { at: now, stats };
    const figures = [
      ['Connections', stats.connections + ' / ' + limits.max_connections],
      ['Sessions', stats.sessions], ['Subscriptions', stats.subscriptions],
      ['Retained', stats.retained], ['Messages in / s', rateIn], ['Messages out / s', rateOut],
      ['Messages in', stats.messages_in], ['Messages out', stats.messages_out],
      ['Units / s now', usage.total.per_second], ['Units total', usage.total.total],
      ['Connects refused', stats.connects_refused], ['Wills published', stats.wills_published],
    ];
    document.getElementById('overview-figures').replaceChildren(...figures.map(([k, v]) =>
      h('div', { 'data-figure': k }, h('dt', {}, k), h('dd', {}, v))));
  },

  async clients() {
    const f = form('client-filter');
    const q = new URLSearchParams({ offset: state.clientOffset, limit: PAGE });
    for (const k of ['client_id', 'username', 'listener', 'protocol']) if (f[k]) q.set(k, f[k]);
    const page = await api('GET', '/api/v1/clients?' + q);
    fill(document.getElementById('client-table'),
      ['Client id', 'User', 'Listener', 'Protocol', 'Address', 'Keep alive', 'Subs', 'In flight', 'Queued', 'Units', ''],
      page.clients, (c) => [c.client_id, c.username ?? '', c.listener ?? '', c.protocol, c.address,
        c.keep_alive, c.subscriptions, c.inflight, c.queued, c.units, h('span', {},
          h('button', { onclick: () => act(null, () => showClient(c.client_id)) }, 'Details'), ' ',
          h('button', { class: 'danger', 'data-kick': c.client_id, onclick: () => kick(c.client_id) }, 'Kick'))]);
    const last = Math.min(page.offset + PAGE, page.total);
    document.getElementById('client-page').textContent =
      page.total ? `${page.offset + 1}–${last} of ${page.total}` : '0 clients';
    document.getElementById('client-prev').disabled = page.offset === 0;
    document.getElementById('client-next').disabled = last >= page.total;
  },

  async listeners() {
    const list = await api('GET', '/api/v1/listeners');
    fill(document.getElementById('listener-table'),
      ['Name', 'Kind', 'Bind', 'Bound at', 'Enabled', 'Clients', 'Allow-list (CIDR, comma separated)', ''],
      list, (l) => {
        const allow = h('input', { value: l.allow.join(', '), placeholder: 'everyone', size: 28 });
        return [l.name, l.kind, l.bind, l.address ?? '—', l.enabled ? 'yes' : 'no', l.clients,
          h('span', { class: 'inline' }, allow, h('button', {
            onclick: () => patchListener(l.name, { allow: allow.value.split(',').map((s) => s.trim()).filter(Boolean) }),
          }, 'Save')),
          h('button', {
            'data-toggle': l.name,
            onclick: () => {
              // Switching off disconnects the listener's clients: ask first.
              if (l.enabled && !confirm(`Switch listener ${l.name} off and disconnect its ${l.clients} clients?`)) return;
              patchListener(l.name, { enabled: !l.enabled });
            },
          }, l.enabled ? 'Disable' : 'Enable')];
      });
  },

  async retained() {
    const f = form('retained-filter');
    const q = new URLSearchParams({ limit: 1000 });
    if (f.filter) q.set('filter', f.filter);
    const list = await api('GET', '/api/v1/retained?' + q);
    fill(document.getElementById('retained-table'), ['Topic', 'QoS', 'Payload', ''], list, (m) => [
      m.topic, m.qos, m.payload ?? '0x' + m.payload_hex,
      h('button', { class: 'danger', 'data-delete': m.topic, onclick: () => deleteRetained(m.topic) }, 'Delete')]);
  },

  async limits() {
    const limits = await api('GET', '/api/v1/limits');
    const el = document.getElementById('limits-form');
    el.replaceChildren();
    for (const [k, v] of Object.entries(limits)) {
      el.append(h('label', { for: 'limit-' + k }, k.replaceAll('_', ' ')),
        h('input', { id: 'limit-' + k, name: k, type: 'number', min: 0, value: v }));
    }
    el.append(h('span'), h('button', { type: 'submit' }, 'Save limits'));
  },

  async usage() {
    const u = await api('GET', '/api/v1/usage');
    const body = document.getElementById('usage-body');
    const table = (title, map) => {
      const t = h('table');
      fill(t, [title, 'Total', 'Per second now'], Object.entries(map), ([k, s]) => [k, s.total, s.per_second]);
      return t;
    };
    const minutes = h('table');
    fill(minutes, ['Minute (UTC)', 'Units'], (u.total.per_minute || []).slice(-15).reverse(),
      (m) => [new Date(m.minute * 1000).toISOString().slice(11, 16), m.units]);
    body.replaceChildren(
      table('Broker', { total: u.total }), h('h3', {}, 'Last minutes'), minutes,
      h('h3', {}, 'Listeners'), table('Listener', u.listeners),
      h('h3', {}, 'Users'), table('User', u.users),
      h('h3', {}, `Clients (first ${Object.keys(u.clients).length} of ${u.clients_total})`),
      table('Client', u.clients));
  },

  async security() {
    const [users, devices, policies] = await Promise.all([
      api('GET', '/api/v1/users'), api('GET', '/api/v1/device-identities'),
      api('GET', '/api/v1/authorization-policies'),
    ]);
    fill(document.getElementById('user-table'), ['Username', 'Enabled'], users,
      (u) => [u.username, u.enabled ? 'yes' : 'no']);
    // Device keys are secrets: not shown here.
    fill(document.getElementById('device-table'), ['Device id', 'Enabled', 'Properties'], devices,
      (d) => [d.device_id, d.enabled ? 'yes' : 'no', d.properties.map(([k, v]) => k + '=' + v).join(', ')]);
    fill(document.getElementById('policy-table'),
      ['Id', 'Priority', 'Effect', 'Actions', 'Resources', 'Client ids', 'Usernames', 'Source CIDRs'],
      policies, (p) => [p.id, p.priority, p.effect, p.actions.join(', '), p.resources.join(', '),
        p.client_ids.join(', '), p.usernames.join(', '), p.source_cidrs.join(', ')]);
  },
};

// ---- actions --------------------------------------------------------------------------

async function showClient(id) {
  const c = await api('GET', `/api/v1/clients/${enc(id)}`);
  const t = h('table');
  fill(t, ['Filter', 'QoS', 'No local', 'Retain as published'], c.subscription_list,
    (s) => [s.filter, s.qos, s.no_local ? 'yes' : 'no', s.retain_as_published ? 'yes' : 'no']);
  document.getElementById('client-detail').replaceChildren(
    h('h3', {}, 'Client ', c.client_id), h('p', {}, `${c.address}, MQTT ${c.protocol}, keep alive ${c.keep_alive} s`), t);
}

function kick(id) {
  if (!confirm(`Disconnect client ${id}?`)) return;
  act(`Client ${id} kicked out.`, async () => {
    await api('DELETE', `/api/v1/clients/${enc(id)}`);
    await views.clients();
  });
}

function patchListener(name, change) {
  act(`Listener ${name} updated.`, async () => {
    await api('PATCH', `/api/v1/listeners/${enc(name)}`, change);
    await views.listeners();
  });
}

function deleteRetained(topic) {
  if (!confirm(`Delete the retained message on ${topic}?`)) return;
  act(`Retained message on ${topic} deleted.`, async () => {
    await api('DELETE', `/api/v1/retained/${enc(topic)}`);
    await views.retained();
  });
}

// ---- navigation and sign-in -----------------------------------------------------------

function show(view) {
  state.view = view;
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== view;
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    b.classList.toggle('active', b.dataset.view === view);
  }
  clearInterval(state.timer);
  act(null, views[view]);
  // The overview and the client list follow the broker live; the others refresh on action.
  if (view === 'overview' || view === 'clients') {
    state.timer = setInterval(() => act(null, views[view]), 2000);
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  clearInterval(state.timer);
  document.getElementById('nav').hidden = true;
  for (const s of document.querySelectorAll('.view')) s.hidden = true;
  document.getElementById('login').hidden = false;
  say(message || '', Boolean(message));
}

async function signIn(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    await api('GET', '/api/v1/stats');
  } catch (e) {
    if (e.message !== 'unauthorized') say(e.message, true);
    return;
  }
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  say('');
  show(state.view);
}

function wire() {
  const on = (id, event, fn) => document.getElementById(id).addEventListener(event, fn);
  on('login-form', 'submit', (e) => { e.preventDefault(); signIn(document.getElementById('api-key').value.trim()); });
  on('logout', 'click', () => signOut());
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    b.addEventListener('click', () => show(b.dataset.view));
  }
  on('client-filter', 'submit', (e) => { e.preventDefault(); state.clientOffset = 0; act(null, views.clients); });
  on('client-prev', 'click', () => { state.clientOffset = Math.max(0, state.clientOffset - PAGE); act(null, views.clients); });
  on('client-next', 'click', () => { state.clientOffset += PAGE; act(null, views.clients); });
  on('retained-filter', 'submit', (e) => { e.preventDefault(); act(null, views.retained); });
  on('publish-form', 'submit', (e) => {
    e.preventDefault();
    const f = form('publish-form');
    act(`Published to ${f.topic}.`, async () => {
      await api('POST', '/api/v1/publish', { topic: f.topic, payload: f.payload, qos: Number(f.qos), retain: f.retain === 'on' });
      await views.retained();
    });
  });
  on('limits-form', 'submit', (e) => {
    e.preventDefault();
    const limits = Object.fromEntries(Object.entries(form('limits-form')).map(([k, v]) => [k, Number(v)]));
    act('Plan limits saved; they apply now.', async () => {
      await api('PUT', '/api/v1/limits', limits);
      await views.limits();
    });
  });
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) signIn(key);
}

wire();
