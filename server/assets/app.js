// The dashboard: a single page over the app API (REST + one WebSocket). No build step; the
// server embeds this file. Views: devices, one device with a widget per datastream, templates.
'use strict';

const state = {
  key: localStorage.getItem('blynk-key') || '',
  me: null,                // the key's name and scope, from GET /api/me
  socket: null,
  devices: new Map(),      // id -> summary from GET /api/devices
  templates: [],
  device: null,            // details of the open device
  history: new Map(),      // pin -> [numbers], for sparklines
  writes: new Map(),       // write id -> pin
  nextWrite: 1,
  retry: null,
};

const main = document.getElementById('main');
const linkBadge = document.getElementById('link');

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { 'Authorization': `Bearer ${state.key}`, 'Content-Type': 'application/json' },
  });
  if (response.status === 401) { logout(); throw new Error('wrong key'); }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

/** A GET with the admin key whose body is read by the caller (a stream, a download). */
async function authorized(path) {
  const response = await fetch(path, { headers: { 'Authorization': `Bearer ${state.key}` } });
  if (response.status === 401) { logout(); throw new Error('wrong admin key'); }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response;
}

function ago(ms) {
  if (!ms) return 'never';
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

function show(value) {
  if (value === undefined || value === null) return '—';
  return Array.isArray(value) ? value.join(', ') : String(value);
}

function badge(online) {
  return el('span', { class: `badge ${online ? 'online' : ''}`, 'data-presence': online ? 'online' : 'offline' },
    el('span', { class: 'dot' }), online ? 'online' : 'offline');
}

// ---- what the key may do (the server refuses the rest with a 403; the page hides it) ------

function isAdmin() {
  return Boolean(state.me && state.me.scope === 'admin');
}

function canControl(device) {
  if (!state.me) return false;
  if (state.me.scope === 'admin') return true;
  return state.me.scope === 'control'
    && (state.me.devices.includes(device.id) || state.me.templates.includes(device.template_id));
}

async function loadMe() {
  state.me = await api('/api/me');
  document.body.dataset.scope = state.me.scope;
}

// ---- live connection -------------------------------------------------------------------

function connect() {
  if (state.socket) state.socket.close();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/api/ws?key=${encodeURIComponent(state.key)}`);
  state.socket = socket;
  socket.addEventListener('open', () => {
    linkBadge.textContent = 'live';
    linkBadge.classList.add('live');
    if (state.device) socket.send(JSON.stringify({ type: 'watch', devices: [state.device.id] }));
  });
  socket.addEventListener('close', () => {
    linkBadge.textContent = 'reconnecting';
    linkBadge.classList.remove('live');
    if (state.socket === socket && state.key) {
      clearTimeout(state.retry);
      state.retry = setTimeout(connect, 1500);
    }
  });
  socket.addEventListener('message', (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    // Several events ready at once arrive as one batch, in order.
    if (event.type === 'batch') {
      for (const each of event.events || []) handle(each);
    } else {
      handle(event);
    }
  });
}

function watch(id) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: 'watch', devices: [id] }));
  }
}

function handle(event) {
  switch (event.type) {
    case 'presence': {
      const device = state.devices.get(event.device);
      if (device) { device.online = event.online; device.last_seen = event.at; }
      if (state.device && state.device.id === event.device) {
        state.device.online = event.online;
        state.device.last_seen = event.at;
      }
      refreshPresence(event.device, event.online, event.at);
      break;
    }
    case 'snapshot':
      for (const details of event.devices) {
        if (state.device && details.id === state.device.id) {
          state.device = details;
          for (const [pin, entry] of Object.entries(details.values)) updateWidget(pin, entry.value);
          for (const property of details.properties) applyProperty(property.pin, property.name, property.value);
        }
      }
      break;
    case 'value':
      if (state.device && event.device === state.device.id) {
        state.device.values[event.pin] = { value: event.value, version: event.version, at: event.at, origin: event.origin };
        pushHistory(event.pin, event.value);
        chartValue(event.device, event.pin, event.value, event.at);
        updateWidget(event.pin, event.value);
      }
      break;
    case 'property':
      if (state.device && event.device === state.device.id) applyProperty(event.pin, event.name, event.value);
      break;
    case 'event':
      if (state.device && event.device === state.device.id) addEvent(event);
      break;
    case 'write':
      writeStatus(event);
      break;
    case 'device_added':
    case 'device_removed':
      if (location.hash === '' || location.hash === '#/') renderDevices();
      break;
    default:
      break;
  }
}

// ---- views -------------------------------------------------------------------------------

function setNav(name) {
  for (const link of document.querySelectorAll('[data-nav]')) link.classList.toggle('active', link.dataset.nav === name);
}

function renderLogin() {
  setNav('');
  document.body.classList.remove('signed-in');
  document.getElementById('logout').hidden = true;
  main.replaceChildren(document.getElementById('login-view').content.cloneNode(true));
  document.getElementById('login-form').addEventListener('submit', async (submit) => {
    submit.preventDefault();
    state.key = document.getElementById('key').value.trim();
    try {
      await loadMe();
      localStorage.setItem('blynk-key', state.key);
      document.getElementById('logout').hidden = false;
      connect();
      route();
    } catch (error) {
      document.getElementById('login-error').textContent = error.message;
    }
  });
}

function logout() {
  state.key = '';
  state.me = null;
  delete document.body.dataset.scope;
  localStorage.removeItem('blynk-key');
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close();
  renderLogin();
}

async function renderDevices() {
  setNav('devices');
  state.device = null;
  const [devices, templates] = await Promise.all([api('/api/devices'), api('/api/templates')]);
  state.templates = templates;
  state.devices = new Map(devices.map((device) => [device.id, device]));
  const rows = devices.map((device) => el('tr', { class: 'device-row', 'data-device': device.id, onclick: () => { location.hash = `#/device/${device.id}`; } },
    el('td', {}, el('a', { href: `#/device/${device.id}` }, device.name)),
    el('td', { class: 'hide-small' }, device.template),
    el('td', { 'data-cell': 'presence' }, badge(device.online)),
    el('td', { 'data-cell': 'seen', class: 'muted' }, device.online ? 'now' : ago(device.last_seen))));
  const message = el('p', { class: 'error', role: 'alert' });
  const created = el('div');
  const form = el('form', { class: 'row', onsubmit: async (submit) => {
    submit.preventDefault();
    message.textContent = '';
    try {
      const device = await api('/api/devices', { method: 'POST', body: JSON.stringify({ name: form.name.value, template: form.template.value }) });
      created.replaceChildren(el('p', {}, `Device “${device.name}” created. Its token: `), tokenBox(device.token));
      form.reset();
      renderDeviceRows(device);
    } catch (error) { message.textContent = error.message; }
  } },
  el('label', {}, 'Name', el('input', { name: 'name', required: true, maxlength: 64, placeholder: 'kitchen' })),
  el('label', {}, 'Template', el('select', { name: 'template' }, templates.map((t) => el('option', { value: t.name }, t.name)))),
  el('div', {}, el('button', { type: 'submit' }, 'Add device')));
  main.replaceChildren(
    el('div', { class: 'head' }, el('h1', {}, 'Devices')),
    el('section', { class: 'card' }, devices.length
      ? el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', { class: 'hide-small' }, 'Template'), el('th', {}, 'Status'), el('th', {}, 'Last seen'))), el('tbody', { id: 'device-rows' }, rows))
      : el('p', { class: 'muted' }, 'No devices yet.')),
    ...(isAdmin() ? [el('section', { class: 'card' }, el('h2', {}, 'Add a device'), form, message, created)] : []));
}

function renderDeviceRows(device) {
  state.devices.set(device.id, device);
  const body = document.getElementById('device-rows');
  if (!body) return;
  body.append(el('tr', { class: 'device-row', 'data-device': device.id, onclick: () => { location.hash = `#/device/${device.id}`; } },
    el('td', {}, el('a', { href: `#/device/${device.id}` }, device.name)),
    el('td', { class: 'hide-small' }, device.template),
    el('td', { 'data-cell': 'presence' }, badge(false)),
    el('td', { 'data-cell': 'seen', class: 'muted' }, 'never')));
}

function refreshPresence(id, online, at) {
  for (const row of document.querySelectorAll(`[data-device="${id}"]`)) {
    const presence = row.querySelector('[data-cell="presence"]');
    if (presence) presence.replaceChildren(badge(online));
    const seen = row.querySelector('[data-cell="seen"]');
    if (seen) seen.textContent = online ? 'now' : ago(at);
  }
}

function tokenBox(token) {
  const code = el('code', { 'data-token': token }, '•'.repeat(12));
  let shown = false;
  return el('span', { class: 'token' }, code,
    el('button', { class: 'small secondary', type: 'button', onclick: (click) => {
      shown = !shown;
      code.textContent = shown ? token : '•'.repeat(12);
      click.target.textContent = shown ? 'Hide' : 'Show';
    } }, 'Show'),
    el('button', { class: 'small secondary', type: 'button', onclick: async (click) => {
      try { await navigator.clipboard.writeText(token); click.target.textContent = 'Copied'; }
      catch { code.textContent = token; click.target.textContent = 'Select and copy'; }
    } }, 'Copy'));
}

async function renderDevice(id) {
  setNav('devices');
  const details = await api(`/api/devices/${id}`);
  state.device = details;
  state.history = new Map();
  const writable = canControl(details);
  const grid = el('div', { class: 'grid', id: 'widgets', 'data-writable': String(writable) },
    details.datastreams.map((datastream) => widget(datastream, writable)));
  const events = el('ul', { class: 'events', id: 'events' });
  main.replaceChildren(
    el('div', { class: 'head' },
      el('div', {}, el('h1', {}, details.name), el('span', { class: 'muted' }, `template ${details.template}`)),
      el('div', { 'data-device': details.id },
        el('span', { 'data-cell': 'presence' }, badge(details.online)), ' ',
        el('span', { 'data-cell': 'seen', class: 'muted' }, details.online ? 'now' : ago(details.last_seen)))),
    ...(details.token ? [el('section', { class: 'card' }, el('h2', {}, 'Token'), tokenBox(details.token))] : []),
    grid,
    historySection(details, authorized),
    el('section', { class: 'card spaced' }, el('h2', {}, 'Recent events'), events));
  for (const [pin, entry] of Object.entries(details.values)) updateWidget(pin, entry.value);
  for (const property of details.properties) applyProperty(property.pin, property.name, property.value);
  watch(details.id);
  const [recent] = await Promise.all([
    api(`/api/devices/${id}/events?limit=20`),
    loadCharts(details, authorized),
    ...details.datastreams.map(async (datastream) => {
      const points = await api(`/api/devices/${id}/history/${datastream.pin}?limit=40`);
      state.history.set(datastream.pin, points.reverse().map((point) => Number(Array.isArray(point.value) ? point.value[0] : point.value)).filter(Number.isFinite));
      drawSpark(datastream.pin);
    }),
  ]);
  if (!recent.length) events.append(el('li', { class: 'muted empty' }, 'No events yet.'));
  for (const event of recent.reverse()) addEvent(event);
}

// ---- widgets -----------------------------------------------------------------------------

function kindOf(datastream) {
  if (datastream.kind === 'command') return 'button';
  const numeric = datastream.type === 'integer' || datastream.type === 'double' || datastream.type === 'enum';
  if (numeric && datastream.min === 0 && datastream.max === 1 && datastream.type !== 'double') return 'switch';
  if (numeric && /led/i.test(datastream.name) && datastream.max === 255) return 'led';
  if (numeric && datastream.min !== null && datastream.max !== null) return 'slider';
  return 'display';
}

/** A widget; without `writable` (the key may not write to the device) it only shows values. */
function widget(datastream, writable) {
  const kind = kindOf(datastream);
  const status = el('div', { class: 'status', 'data-status': datastream.pin });
  const value = el('div', { class: 'value', 'data-value': datastream.pin }, show(datastream.default));
  let control = null;
  if (kind === 'led') {
    control = el('div', { class: 'led', role: 'img', 'aria-label': `${datastream.name} LED`, 'data-led': datastream.pin });
  } else if (!writable) {
    control = null;
  } else if (kind === 'switch') {
    control = el('button', { class: 'switch', role: 'switch', 'aria-checked': 'false', 'aria-label': datastream.name, 'data-control': datastream.pin,
      onclick: () => write(datastream.pin, control.getAttribute('aria-checked') === 'true' ? 0 : 1) });
  } else if (kind === 'slider') {
    const step = datastream.type === 'double' ? 'any' : '1';
    control = el('input', { type: 'range', min: datastream.min, max: datastream.max, step, 'aria-label': datastream.name, 'data-control': datastream.pin,
      onchange: () => write(datastream.pin, Number(control.value)) });
  } else if (kind === 'button') {
    control = el('button', { type: 'button', 'data-control': datastream.pin, onclick: () => write(datastream.pin, 1) }, 'Send');
  } else {
    const input = el('input', { name: 'value', placeholder: 'new value', 'aria-label': `${datastream.name} value` });
    control = el('form', { class: 'row', 'data-control': datastream.pin, onsubmit: (submit) => {
      submit.preventDefault();
      const parts = input.value.split(',').map((part) => part.trim()).filter((part) => part.length);
      if (parts.length) write(datastream.pin, parts.length === 1 ? parts[0] : parts);
      input.value = '';
    } }, input, el('button', { type: 'submit', class: 'small' }, 'Set'));
  }
  const spark = el('div', { 'data-spark': datastream.pin });
  const tags = [datastream.pin, datastream.type, datastream.sync ? 'sync' : null, datastream.kind === 'command' ? 'command' : null].filter(Boolean).join(' · ');
  return el('article', { class: 'widget', 'data-widget': datastream.pin, 'data-kind': kind },
    el('header', {}, el('span', { class: 'name', 'data-label': datastream.pin }, datastream.name), el('span', { class: 'pin' }, tags)),
    kind === 'button' && writable ? null : value, control, spark, status);
}

function updateWidget(pin, value) {
  const valueNode = document.querySelector(`[data-value="${pin}"]`);
  if (valueNode) valueNode.textContent = show(value);
  const first = Array.isArray(value) ? value[0] : value;
  const control = document.querySelector(`[data-control="${pin}"]`);
  if (control && control.classList.contains('switch')) control.setAttribute('aria-checked', String(Number(first) === 1));
  if (control && control.type === 'range') control.value = first;
  const led = document.querySelector(`[data-led="${pin}"]`);
  if (led) {
    const level = Math.max(0, Math.min(255, Number(first) || 0));
    const color = led.dataset.color || '#ffcc33';
    led.style.background = level > 0 ? color : '#222';
    led.style.opacity = level > 0 ? String(0.35 + 0.65 * level / 255) : '1';
    led.style.boxShadow = level > 0 ? `0 0 ${6 + level / 16}px ${color}` : 'none';
    led.dataset.level = String(level);
  }
}

function applyProperty(pin, name, value) {
  const shown = show(value);
  if (name === 'label') {
    const label = document.querySelector(`[data-label="${pin}"]`);
    if (label) label.textContent = shown;
  } else if (name === 'color') {
    const widgetNode = document.querySelector(`[data-widget="${pin}"]`);
    if (widgetNode) widgetNode.style.borderTop = `4px solid ${shown}`;
    const led = document.querySelector(`[data-led="${pin}"]`);
    if (led) { led.dataset.color = shown; updateWidget(pin, state.device.values[pin] ? state.device.values[pin].value : 0); }
  }
}

function pushHistory(pin, value) {
  const number = Number(Array.isArray(value) ? value[0] : value);
  if (!Number.isFinite(number)) return;
  const points = state.history.get(pin) || [];
  points.push(number);
  if (points.length > 40) points.shift();
  state.history.set(pin, points);
  drawSpark(pin);
}

function drawSpark(pin) {
  const holder = document.querySelector(`[data-spark="${pin}"]`);
  const points = state.history.get(pin) || [];
  if (!holder || points.length < 2) return;
  const low = Math.min(...points);
  const high = Math.max(...points);
  const span = high - low || 1;
  const coordinates = points.map((point, index) => `${(index / (points.length - 1)) * 100},${38 - ((point - low) / span) * 34}`).join(' ');
  holder.innerHTML = `<svg class="spark" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label="recent values"><polyline points="${coordinates}"/></svg>`;
}

function addEvent(event) {
  const list = document.getElementById('events');
  if (!list) return;
  const empty = list.querySelector('.empty');
  if (empty) empty.remove();
  list.prepend(el('li', {}, el('strong', {}, event.code), event.description ? ` — ${event.description}` : '', el('span', { class: 'muted' }, ` · ${ago(event.at)}`)));
}

function write(pin, value) {
  const status = document.querySelector(`[data-status="${pin}"]`);
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    if (status) { status.className = 'status error'; status.textContent = 'not connected; try again'; }
    return;
  }
  const id = `w${state.nextWrite++}`;
  state.writes.set(id, pin);
  if (status) { status.className = 'status'; status.textContent = 'sending…'; }
  state.socket.send(JSON.stringify({ type: 'write', id, device: state.device.id, pin, value }));
}

function writeStatus(event) {
  const pin = state.writes.get(event.id);
  const status = pin && document.querySelector(`[data-status="${pin}"]`);
  if (!status) return;
  const text = {
    stored: 'stored, sending to the device…',
    pending: 'pending — the device is offline; it gets this when it reconnects',
    delivered: 'delivered',
    expired: 'expired before the device came back',
    superseded: 'the device changed it again',
    error: event.message || 'refused',
  }[event.status] || event.status;
  status.className = `status ${event.status}`;
  status.dataset.state = event.status;
  status.textContent = text;
}

async function renderTemplates() {
  setNav('templates');
  state.device = null;
  const templates = await api('/api/templates');
  const message = el('p', { class: 'error', role: 'alert' });
  const source = el('textarea', { name: 'template', 'aria-label': 'template JSON' }, JSON.stringify({
    name: 'thermostat',
    datastreams: [
      { pin: 'V0', name: 'Target', type: 'double', min: 5, max: 30, sync: true, default: 21 },
      { pin: 'V1', name: 'Reading', type: 'double' },
    ],
  }, null, 2));
  const form = el('form', { onsubmit: async (submit) => {
    submit.preventDefault();
    message.textContent = '';
    try {
      await api('/api/templates', { method: 'POST', body: source.value });
      renderTemplates();
    } catch (error) { message.textContent = error.message; }
  } }, source, el('button', { type: 'submit' }, 'Create template'));
  main.replaceChildren(
    el('div', { class: 'head' }, el('h1', {}, 'Templates')),
    ...templates.map((template) => el('section', { class: 'card' }, el('h2', {}, template.name),
      el('table', {}, el('thead', {}, el('tr', {}, ['Pin', 'Name', 'Type', 'Range', 'Default', 'Sync', 'Kind'].map((h) => el('th', {}, h)))),
        el('tbody', {}, template.datastreams.map((d) => el('tr', {},
          el('td', {}, d.pin), el('td', {}, d.name), el('td', {}, d.type),
          el('td', {}, d.min !== null || d.max !== null ? `${d.min ?? ''}..${d.max ?? ''}` : ''),
          el('td', {}, show(d.default)), el('td', {}, d.sync ? 'yes' : ''), el('td', {}, d.kind))))))),
    ...(isAdmin() ? [el('section', { class: 'card' }, el('h2', {}, 'New template'), form, message)] : []));
}

async function route() {
  if (!state.key) { renderLogin(); return; }
  document.getElementById('logout').hidden = false;
  document.body.classList.add('signed-in');
  const hash = location.hash || '#/';
  try {
    if (!state.me) await loadMe();
    const device = hash.match(/^#\/device\/(\d+)$/);
    if (device) await renderDevice(Number(device[1]));
    else if (hash === '#/templates') await renderTemplates();
    else await renderDevices();
  } catch (error) {
    if (state.key) main.replaceChildren(el('section', { class: 'card' }, el('p', { class: 'error' }, error.message)));
  }
}

document.getElementById('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
setInterval(() => {
  for (const [id, device] of state.devices) if (!device.online) refreshPresence(id, false, device.last_seen);
}, 15000);
if (state.key) connect();
route();
