// The tcp-redirs web console. It only calls the control API, with the credential the user
// typed (kept in this tab's sessionStorage, sent in the Authorization header; no cookie).
//
// Rules that keep it safe: everything that comes from the API is put in the page as text
// (textContent, text nodes, attribute values), never parsed as HTML; no inline script or
// style (the Content-Security-Policy forbids both); nothing is loaded from another origin.
'use strict';

(() => {
  const POLL_MS = 2500;
  // The most consecutive ports one redirection takes (the server's store may take fewer).
  const MAX_RANGE_PORTS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const STORAGE_KEY = 'tcp-redirs.credential';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  const state = {
    credential: null,
    orgs: [],
    apps: new Map(), // org id -> applications
    route: { view: 'apps' },
    generation: 0, // bumped on every route change: answers for an older view are dropped
    timer: null,
    polling: false,
    app: null,
    namespaces: [],
    redirs: [],
    rows: new Map(), // namespace -> { busy, confirm, error }
    history: new Map(), // "app|namespace|port" -> [{ t, bytes, open }]
    deleteApp: { confirm: false, busy: false },
    changes: [], // the application's latest events, newest first
  };
  /** How many of an application's latest changes the page lists. */
  const CHANGES = 10;

  // ---------------------------------------------------------------------------------------
  // DOM helpers: text only
  // ---------------------------------------------------------------------------------------

  /** An element with properties (`class`, `text`, `on…` listeners, other attributes) and children. */
  function el(tag, props, ...children) {
    return build(document.createElement(tag), props, children);
  }

  function svg(tag, props, ...children) {
    return build(document.createElementNS(SVG_NS, tag), props, children);
  }

  function build(node, props, children) {
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.setAttribute('class', value);
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Replaces a container's children, giving focus back to the same control (by `data-focus`). */
  function replaceKeepingFocus(container, nodes) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.getAttribute('data-focus') : null;
    container.replaceChildren(...nodes);
    if (key) {
      const again = container.querySelector(`[data-focus="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  let announced = null;
  /** Says something in the status line (read by screen readers); it goes after a while. */
  function announce(text) {
    $('status').textContent = text;
    clearTimeout(announced);
    if (text) announced = setTimeout(() => { if ($('status').textContent === text) $('status').textContent = ''; }, 8000);
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = Number(n) || 0;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
  }

  function shellWord(word) {
    return /^[A-Za-z0-9._:\/-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
  }

  function parseInstances(text) {
    return text
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((part) => {
        const weighted = /^(.+)=(\d+)$/.exec(part);
        return weighted ? { address: weighted[1], weight: Number(weighted[2]) } : { address: part };
      });
  }

  function formatInstances(instances) {
    return (instances || [])
      .map((i) => (i.weight === undefined || i.weight === null || i.weight === 1 ? i.address : `${i.address}=${i.weight}`))
      .join(', ');
  }

  // ---------------------------------------------------------------------------------------
  // The API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  function authorization(credential) {
    if (credential.secret) {
      // OAuth 1.0a PLAINTEXT, as the clever CLI sends it: only the token and the part of
      // the signature after %26 (the token's secret) are checked by the server.
      const token = encodeURIComponent(credential.token);
      const secret = encodeURIComponent(credential.secret);
      return `OAuth oauth_consumer_key="console", oauth_token="${token}", oauth_signature_method="PLAINTEXT", oauth_signature="%26${secret}"`;
    }
    return `Bearer ${credential.token}`;
  }

  async function api(method, path, body, credential = state.credential) {
    if (!credential) throw new ApiError('not signed in', 401);
    const init = {
      method,
      headers: { Accept: 'application/json', Authorization: authorization(credential) },
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(`cannot reach the server (${err.message}): is \`tcp-redirs serve\` running?`, 0);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        data && typeof data.message === 'string' ? data.message : `the server answered ${response.status} ${response.statusText}`;
      throw new ApiError(message, response.status);
    }
    return data;
  }

  const orgPath = (org) => `/v2/organisations/${encodeURIComponent(org)}`;
  const appPath = (org, app) => `${orgPath(org)}/applications/${encodeURIComponent(app)}`;

  /** A failed call: a refused credential signs out; anything else is the caller's to show. */
  function handleAuthFailure(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut(`Signed out: ${err.message}`);
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------------------------------
  // Signing in and out
  // ---------------------------------------------------------------------------------------

  function loadCredential() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
      return saved && typeof saved.token === 'string' && saved.token ? saved : null;
    } catch {
      return null;
    }
  }

  async function signIn(event) {
    event.preventDefault();
    const error = $('sign-in-error');
    const token = $('token').value.trim();
    const secret = $('secret').value.trim();
    if (!token) {
      error.textContent = 'Enter a token: the admin token is in DATA_DIR/admin.toml.';
      $('token').focus();
      return;
    }
    const credential = secret ? { token, secret } : { token };
    const button = $('sign-in');
    button.disabled = true;
    button.textContent = 'Signing in…';
    error.textContent = '';
    try {
      const orgs = await api('GET', '/v2/organisations', undefined, credential);
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credential));
      state.credential = credential;
      state.orgs = orgs || [];
      $('token').value = '';
      $('secret').value = '';
      announce('Signed in.');
      route(true);
    } catch (err) {
      error.textContent = err.message;
      $('token').focus();
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE_KEY);
    state.credential = null;
    state.orgs = [];
    state.apps = new Map();
    state.app = null;
    state.redirs = [];
    state.rows = new Map();
    state.history = new Map();
    state.generation += 1;
    stopPolling();
    showView('sign-in-view');
    $('sign-in-error').textContent = typeof message === 'string' ? message : '';
    announce(typeof message === 'string' ? message : 'Signed out: the credential is forgotten.');
    $('token').focus();
  }

  // ---------------------------------------------------------------------------------------
  // Views and routing: #/ (applications) and #/app/ORG/APP
  // ---------------------------------------------------------------------------------------

  function showView(id) {
    for (const view of ['sign-in-view', 'apps-view', 'app-view']) $(view).hidden = view !== id;
    const signedIn = Boolean(state.credential);
    $('sign-out').hidden = !signedIn;
    $('who').hidden = !signedIn;
    if (signedIn) {
      const n = state.orgs.length;
      $('who').textContent = `Signed in · ${n} organisation${n === 1 ? '' : 's'}`;
    }
  }

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    if (parts[0] === 'app' && parts.length === 3 && parts[1] && parts[2]) {
      try {
        return { view: 'app', org: decodeURIComponent(parts[1]), app: decodeURIComponent(parts[2]) };
      } catch {
        return { view: 'apps' };
      }
    }
    return { view: 'apps' };
  }

  function route(moveFocus) {
    if (!state.credential) {
      showView('sign-in-view');
      return;
    }
    const next = parseRoute();
    const changed = JSON.stringify(next) !== JSON.stringify(state.route) || moveFocus === true;
    state.route = next;
    state.generation += 1;
    if (next.view === 'app') {
      if (!state.app || state.app.id !== next.app) {
        state.app = null;
        state.redirs = [];
        state.namespaces = [];
        state.rows = new Map();
        state.deleteApp = { confirm: false, busy: false };
        $('app-title').textContent = 'Loading…';
        $('app-id').textContent = '';
        $('redirs').replaceChildren();
        $('instances').replaceChildren();
        $('cli').textContent = '';
        $('instances-input').value = '';
        $('instances-input').removeAttribute('data-app');
      }
      $('app-error').textContent = '';
      showView('app-view');
    } else {
      showView('apps-view');
      renderApps();
    }
    if (changed) {
      const heading = next.view === 'app' ? $('app-title') : $('apps-title');
      heading.setAttribute('tabindex', '-1');
      heading.focus();
    }
    poll();
  }

  // ---------------------------------------------------------------------------------------
  // Polling: every POLL_MS while the tab is visible
  // ---------------------------------------------------------------------------------------

  function stopPolling() {
    clearTimeout(state.timer);
    state.timer = null;
  }

  function schedule() {
    stopPolling();
    if (document.hidden || !state.credential) return;
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    stopPolling();
    if (!state.credential || document.hidden) return;
    if (state.polling) {
      state.pollAgain = true;
      return;
    }
    state.polling = true;
    state.pollAgain = false;
    try {
      const generation = state.generation;
      if (state.route.view === 'app') await refreshApp(generation);
      else await refreshApps(generation);
      if (generation === state.generation && $('status').dataset.stale === '1') {
        $('status').dataset.stale = '';
        announce('');
      }
    } catch (err) {
      if (!handleAuthFailure(err)) {
        $('status').dataset.stale = '1';
        announce(`Could not refresh: ${err.message}`);
      }
    } finally {
      state.polling = false;
      if (state.pollAgain) poll();
      else schedule();
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) stopPolling();
    else poll();
  });

  // ---------------------------------------------------------------------------------------
  // Applications
  // ---------------------------------------------------------------------------------------

  async function refreshApps(generation) {
    const orgs = (await api('GET', '/v2/organisations')) || [];
    const lists = await Promise.all(orgs.map((o) => api('GET', `${orgPath(o.id)}/applications`)));
    if (generation !== state.generation) return;
    state.orgs = orgs;
    state.apps = new Map(orgs.map((o, i) => [o.id, lists[i] || []]));
    showView('apps-view');
    renderApps();
  }

  function instanceLine(instance) {
    const seen = instance.state !== undefined && instance.state !== null;
    const stateText = seen ? instance.state : 'not used yet';
    return el(
      'li',
      { class: 'instance' },
      el('code', { text: instance.address }),
      el('span', { class: `badge ${seen ? instance.state : 'unknown'}`, text: stateText }),
      el('span', { class: 'hint', text: `${instance.activeConnections || 0} open` }),
      instance.weight !== undefined && instance.weight !== null && instance.weight !== 1
        ? el('span', { class: 'hint', text: `weight ${instance.weight}` })
        : null,
      typeof instance.lastCheck === 'number'
        ? el('span', {
            class: 'hint',
            text: `checked ${Math.max(0, Math.round(Date.now() / 1000 - instance.lastCheck))} s ago`,
          })
        : null,
    );
  }

  function renderApps() {
    const sections = state.orgs.map((org) => {
      const apps = state.apps.get(org.id) || [];
      const headingId = `org-${org.id}`;
      return el(
        'section',
        { class: 'org', 'aria-labelledby': headingId },
        el('h2', { id: headingId }, 'Organisation ', el('span', { class: 'name', text: org.name })),
        apps.length === 0
          ? el('p', { class: 'hint', text: 'No application yet: create one below, or with `tcp-redirs apps create`.' })
          : el(
              'ul',
              { class: 'apps' },
              apps.map((app) =>
                el(
                  'li',
                  { class: 'app card', 'data-app': app.id },
                  el('a', { class: 'app-link', href: `#/app/${encodeURIComponent(org.id)}/${encodeURIComponent(app.id)}`, 'data-focus': `app-${app.id}`, text: app.name }),
                  el('p', { class: 'hint', text: app.id }),
                  app.instances && app.instances.length
                    ? el('ul', { class: 'instances', 'aria-label': `Instances of ${app.name}` }, app.instances.map(instanceLine))
                    : el('p', { class: 'hint', text: 'No instance: connections have nowhere to go.' }),
                ),
              ),
            ),
      );
    });
    replaceKeepingFocus($('apps-list'), sections);

    const select = $('create-app-org');
    const current = select.value;
    const options = state.orgs.map((o) => el('option', { value: o.id, text: o.name }));
    if (JSON.stringify(state.orgs) !== select.dataset.orgs) {
      select.dataset.orgs = JSON.stringify(state.orgs);
      select.replaceChildren(...options);
      if (current && state.orgs.some((o) => o.id === current)) select.value = current;
    }
    $('create-app-org-field').hidden = state.orgs.length <= 1;
  }

  async function createApp(event) {
    event.preventDefault();
    const error = $('create-app-error');
    const org = $('create-app-org').value || (state.orgs[0] && state.orgs[0].id);
    const name = $('create-app-name').value.trim();
    const instances = parseInstances($('create-app-instances').value);
    if (!org) {
      error.textContent = 'No organisation to create it in.';
      return;
    }
    const button = $('create-app');
    button.disabled = true;
    button.textContent = 'Creating…';
    error.textContent = '';
    try {
      const app = await api('POST', `${orgPath(org)}/applications`, { name, instances });
      $('create-app-name').value = '';
      $('create-app-instances').value = '';
      announce(`Application ${app.name} created.`);
      location.hash = `#/app/${encodeURIComponent(app.ownerId || org)}/${encodeURIComponent(app.id)}`;
    } catch (err) {
      if (!handleAuthFailure(err)) {
        error.textContent = err.message;
        $('create-app-name').focus();
      }
    } finally {
      button.disabled = false;
      button.textContent = 'Create application';
    }
  }

  // ---------------------------------------------------------------------------------------
  // One application: its redirections (one row per namespace and protocol), instances, deletion
  // ---------------------------------------------------------------------------------------

  async function refreshApp(generation) {
    const { org, app } = state.route;
    let answers;
    try {
      answers = await Promise.all([
        api('GET', appPath(org, app)),
        api('GET', `${orgPath(org)}/namespaces`),
        api('GET', `${appPath(org, app)}/tcpRedirs`),
        api('GET', `${appPath(org, app)}/udpRedirs`),
        api('GET', `${orgPath(org)}/events?app=${encodeURIComponent(app)}&limit=${CHANGES}`),
      ]);
    } catch (err) {
      if (generation === state.generation && err instanceof ApiError && err.status === 404) {
        $('app-title').textContent = 'Application not found';
        $('app-error').textContent = err.message;
        return;
      }
      throw err;
    }
    if (generation !== state.generation) return;
    const [application, namespaces, tcp, udp, changes] = answers;
    state.changes = (changes && changes.events) || [];
    state.app = application;
    state.namespaces = namespaces || [];
    state.redirs = (tcp || []).concat(udp || []);
    $('app-error').textContent = '';
    record(application, state.redirs);
    renderApp();
  }

  /** Adds this poll's figures to each redirection's history (for the plot). */
  function record(application, redirs) {
    const now = Date.now();
    const live = new Set();
    for (const r of redirs) {
      const key = `${application.id}|${r.namespace}|${protocolOf(r)}|${r.port}`;
      live.add(key);
      const samples = state.history.get(key) || [];
      samples.push({ t: now, bytes: (r.bytesIn || 0) + (r.bytesOut || 0), open: r.activeConnections || 0 });
      while (samples.length > 2 && samples[0].t < now - HISTORY_MS - POLL_MS) samples.shift();
      state.history.set(key, samples);
    }
    for (const key of state.history.keys()) {
      if (key.startsWith(`${application.id}|`) && !live.has(key)) state.history.delete(key);
    }
  }

  /** A redirection's protocol: UDP ones say so, TCP ones (as Clever's) do not. */
  function protocolOf(redir) {
    return redir.protocol || 'tcp';
  }

  const PROTOCOLS = ['tcp', 'udp'];

  /** The redirection of `protocol` in `namespace`, or null. */
  function redirOf(namespace, protocol) {
    return state.redirs.find((r) => r.namespace === namespace && protocolOf(r) === protocol) || null;
  }

  /** The row of a namespace and protocol. */
  function rowOf(namespace, protocol) {
    return $('redirs').querySelector(`[data-namespace="${CSS.escape(namespace)}"][data-protocol="${protocol}"]`);
  }

  /** What tells a UDP row's ids and labels from the TCP one's (TCP keeps the plain ones). */
  function suffix(protocol) {
    return protocol === 'tcp' ? '' : `-${protocol}`;
  }

  function rowUi(namespace, protocol) {
    const key = `${namespace}|${protocol}`;
    if (!state.rows.has(key)) state.rows.set(key, { busy: null, confirm: false, error: '', editing: false, draft: null });
    return state.rows.get(key);
  }

  /** Why a redirection is not fully listening, or nothing. */
  function problems(redir) {
    const out = [];
    for (const node of redir.nodes || []) {
      if (node.state === 'unbound') out.push(`node ${node.node} cannot listen on the port: another program holds it there (it retries every 5 s)`);
      else if (node.state !== 'listening') out.push(`node ${node.node} has not confirmed that it listens yet`);
    }
    if (out.length === 0 && redir.state === 'unbound') {
      out.push('the gateway cannot listen on the port: another program holds it (it retries every 5 s)');
    }
    return out;
  }

  function renderApp() {
    const app = state.app;
    if (!app) return;
    $('app-title').textContent = app.name;
    const orgName = (state.orgs.find((o) => o.id === app.ownerId) || {}).name || app.ownerId;
    $('app-id').textContent = `${app.id} · organisation ${orgName}`;
    document.title = `${app.name} · tcp-redirs console`;
    renderRows();
    renderCli();
    replaceKeepingFocus($('instances'), (app.instances || []).length ? app.instances.map(instanceLine) : [el('li', { class: 'hint', text: 'No instance.' })]);
    const input = $('instances-input');
    if (input.getAttribute('data-app') !== app.id) {
      input.value = formatInstances(app.instances);
      input.setAttribute('data-app', app.id);
    }
    renderChanges();
    renderDeleteApp();
  }

  /** The application's latest changes, from the audit trail: when, what, who, from where. */
  function renderChanges() {
    const lines = (state.changes || []).map((e) => {
      const record = e.after || e.before || {};
      let what = '';
      if (e.kind.startsWith('redirection.')) {
        what = ` ${record.protocol === 'udp' ? 'UDP' : 'TCP'} port ${record.port} in ${record.namespace}`;
      } else if (e.kind === 'application.instances') {
        what = `: ${formatInstances(record.instances) || 'none'}`;
      }
      const when = new Date(e.at).toISOString().replace('T', ' ').slice(0, 19);
      const from = e.client ? ` from ${e.client}` : '';
      return el('li', { text: `${when} UTC · ${e.kind}${what} · by ${e.actor.name}${from}` });
    });
    replaceKeepingFocus($('changes'), lines.length ? lines : [el('li', { class: 'hint', text: 'No change recorded.' })]);
  }

  function renderRows() {
    const list = $('redirs');
    const wanted = state.namespaces.map((ns) => ns.namespace);
    // Rows are kept from one poll to the next: only a row whose shape changed is rebuilt,
    // and its figures and plot are updated in place, so that focus and clicks are not lost.
    for (const row of [...list.children]) {
      if (!wanted.includes(row.getAttribute('data-namespace'))) row.remove();
    }
    let previous = null;
    for (const ns of state.namespaces) for (const protocol of PROTOCOLS) {
      const redir = redirOf(ns.namespace, protocol);
      const ui = rowUi(ns.namespace, protocol);
      const shape = JSON.stringify({
        ns,
        port: redir && redir.port,
        address: redir && redir.address,
        problems: redir ? problems(redir) : null,
        ui,
      });
      let row = rowOf(ns.namespace, protocol);
      if (!row) {
        row = el('li', { class: 'redir', 'data-namespace': ns.namespace, 'data-protocol': protocol });
        row.dataset.shape = '';
      }
      if (row.dataset.shape !== shape) {
        const active = document.activeElement;
        const key = active && row.contains(active) ? active.getAttribute('data-focus') : null;
        row.replaceChildren(...rowContent(ns, protocol, redir, ui));
        row.dataset.shape = shape;
        row.setAttribute('aria-busy', ui.busy ? 'true' : 'false');
        row.classList.toggle('active', Boolean(redir));
        row.classList.toggle('busy', Boolean(ui.busy));
        if (key) {
          const again = row.querySelector(`[data-focus="${CSS.escape(key)}"]`) || row.querySelector('.actions button:not([disabled])');
          if (again) again.focus();
        }
      }
      if (redir) updateFigures(row, redir);
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (row !== expected) list.insertBefore(row, expected);
      previous = row;
    }
    if (wanted.length === 0 && list.children.length === 0) {
      list.append(el('li', { class: 'hint', text: "No namespace is open to this application's organisation: ask the operator." }));
    }
  }

  function rowContent(ns, protocol, redir, ui) {
    const name = ns.namespace;
    // The ids, focus keys and labels of a UDP row; a TCP row keeps the plain ones.
    const id = `${name}${suffix(protocol)}`;
    const kind = protocol === 'tcp' ? 'redirection' : `${protocol.toUpperCase()} redirection`;
    const parts = [];
    const issues = redir ? problems(redir) : [];
    if (!redir) parts.push(el('span', { class: 'mark off', 'aria-hidden': 'true', text: '○' }), el('span', { class: 'sr-only', text: 'Inactive.' }));
    else if (issues.length) parts.push(el('span', { class: 'mark warn', 'aria-hidden': 'true', text: '!' }), el('span', { class: 'sr-only', text: 'Warning.' }));
    else parts.push(el('span', { class: 'mark tick', 'aria-hidden': 'true', text: '✓' }), el('span', { class: 'sr-only', text: 'Active.' }));

    const main = el('div', { class: 'main' }, el('p', { class: 'ns' }, el('strong', { class: 'ns-name', text: name }), ' ', el('span', { class: `protocol ${protocol}`, text: protocol.toUpperCase() }), ns.description ? el('span', { class: 'hint', text: ` ${ns.description}` }) : null));
    if (redir) {
      const address = redir.address || `${protocol}://${ns.publicHost || 'localhost'}:${redir.port}/`;
      main.append(
        el('p', { class: 'where' }, redir.lastPort ? 'Ports ' : 'Port ', el('span', { class: 'port', text: portsText(redir) }), ' ', el('code', { class: 'address', text: address }),
          el('button', { type: 'button', class: 'quiet copy', 'data-focus': `copy-${id}`, 'aria-label': `Copy ${address}`, onclick: () => copy(address) }, 'Copy')),
      );
      for (const issue of issues) main.append(el('p', { class: 'warning', text: `Warning: ${issue}.` }));
      main.append(
        el('dl', { class: 'figures' },
          el('div', {}, el('dt', { text: 'Open' }), el('dd', { class: 'open', text: '0' })),
          el('div', {}, el('dt', { text: 'Total' }), el('dd', { class: 'total', text: '0' })),
          el('div', {}, el('dt', { text: 'In' }), el('dd', { class: 'in', text: '0 B' })),
          el('div', {}, el('dt', { text: 'Out' }), el('dd', { class: 'out', text: '0 B' }))),
      );
    } else {
      main.append(el('p', { class: 'hint', text: `No ${kind} in ${name}: you can create one; it gets a port of its own.` }));
    }
    parts.push(main);
    if (redir) parts.push(el('div', { class: 'plot' }));

    const actions = el('div', { class: 'actions' });
    if (ui.busy) {
      const busyText = { creating: 'Creating…', deleting: 'Deleting…', saving: 'Saving…' }[ui.busy];
      actions.append(el('button', { type: 'button', disabled: true, 'data-focus': `busy-${id}` }, el('span', { class: 'spinner', 'aria-hidden': 'true' }), busyText));
    } else if (redir && ui.confirm) {
      const what = protocol === 'tcp' ? 'It stops accepting at once and its open connections are reset.' : 'It stops answering at once and its flows end.';
      actions.append(
        el('p', { class: 'confirm', id: `confirm-${id}`, text: `Delete ${protocol === 'tcp' ? '' : `${protocol.toUpperCase()} `}port ${redir.port} in ${name}? ${what}` }),
        el('button', { type: 'button', class: 'danger confirm-delete', 'data-focus': `confirm-${id}`, 'aria-describedby': `confirm-${id}`, onclick: () => removeRedir(name, protocol, redir.port) }, 'Yes, delete'),
        el('button', { type: 'button', class: 'cancel', 'data-focus': `cancel-${id}`, onclick: () => confirmRow(name, protocol, false) }, 'Cancel'),
      );
    } else if (redir) {
      actions.append(el('button', { type: 'button', class: 'settings', 'data-focus': `settings-${id}`, 'aria-expanded': ui.editing ? 'true' : 'false', 'aria-controls': `settings-${id}`, 'aria-label': `Settings of the ${kind} on port ${redir.port} in ${name}`, onclick: () => editRow(name, protocol, !ui.editing) }, 'Settings'));
      actions.append(el('button', { type: 'button', class: 'danger delete', 'data-focus': `delete-${id}`, 'aria-label': `Delete the ${kind} on port ${redir.port} in ${name}`, onclick: () => confirmRow(name, protocol, true) }, 'Delete'));
    } else {
      // A TCP redirection may take a range of consecutive ports (issue 34): 1 by default.
      if (protocol === 'tcp') {
        actions.append(el('label', { class: 'ports-count', for: `ports-${id}` }, 'Ports ',
          el('input', { type: 'number', id: `ports-${id}`, class: 'ports', min: '1', max: String(MAX_RANGE_PORTS), value: ui.ports || '1', inputmode: 'numeric', 'aria-label': `How many consecutive ports the ${kind} in ${name} takes`, oninput: (event) => { ui.ports = event.target.value; } })));
      }
      actions.append(el('button', { type: 'button', class: 'primary create', 'data-focus': `create-${id}`, 'aria-label': `Create a ${kind} in ${name}`, onclick: () => createRedir(name, protocol) }, 'Create'));
    }
    parts.push(actions);
    if (redir && ui.editing && !ui.busy) parts.push(settingsForm(name, protocol, redir, ui, id));
    parts.push(el('p', { class: 'error row-error', role: 'alert', text: ui.error || '' }));
    return parts;
  }

  /** The settings a redirection of `protocol` has, in the API's names, with their labels. */
  function settingsOf(protocol) {
    const numbers = protocol === 'tcp'
      ? [['connectTimeout', 'Connect timeout (s)'], ['idleTimeout', 'Idle timeout (s)'], ['halfCloseTimeout', 'Half-close timeout (s)'], ['maxConnections', 'Max connections'], ['maxConnectionsPerSecond', 'Max connections per second'], ['maxConnectionsPerClient', 'Max connections per client address'], ['maxConnectionsPerSecondPerClient', 'Max connections per second per client address'], ['bandwidthLimit', 'Bandwidth limit (bytes/s each way)']]
      : [['idleTimeout', 'Idle timeout (s)'], ['maxConnections', 'Max flows'], ['maxConnectionsPerSecond', 'Max new flows per second'], ['maxDatagramsPerSecond', 'Max datagrams per second per client'], ['maxConnectionsPerClient', 'Max flows per client address'], ['maxConnectionsPerSecondPerClient', 'Max new flows per second per client address']];
    const proxy = protocol === 'tcp' ? ['v1', 'v2'] : ['v2', 'v2-every'];
    return { numbers, proxy };
  }

  /** The form's values, from a draft or from the redirection's settings in force. */
  function formValues(protocol, redir) {
    const values = {};
    for (const [key] of settingsOf(protocol).numbers) values[key] = redir[key] == null ? '' : String(redir[key]);
    values.proxyProtocol = redir.proxyProtocol || '';
    values.allow = (redir.allow || []).join('\n');
    values.deny = (redir.deny || []).join('\n');
    return values;
  }

  /** The settings form of a row: the values in force; Save sends what changed. */
  function settingsForm(namespace, protocol, redir, ui, id) {
    const { numbers, proxy } = settingsOf(protocol);
    const values = ui.draft || formValues(protocol, redir);
    const field = (key, label, input) => el('div', { class: 'field' }, el('label', { for: `${key}-${id}`, text: label }), input);
    const form = el('form', { class: 'settings-form', id: `settings-${id}`, action: '/', method: 'post', novalidate: true, 'aria-label': `Settings of port ${redir.port} in ${namespace}`, onsubmit: (event) => { event.preventDefault(); saveSettings(namespace, protocol, redir, form); } });
    const grid = el('div', { class: 'settings-grid' });
    for (const [key, label] of numbers) {
      grid.append(field(key, label, el('input', { id: `${key}-${id}`, name: key, type: 'number', min: '1', step: '1', inputmode: 'numeric', value: values[key], 'data-focus': `${key}-${id}` })));
    }
    const select = el('select', { id: `proxyProtocol-${id}`, name: 'proxyProtocol', 'data-focus': `proxyProtocol-${id}` }, el('option', { value: '', text: 'off' }), ...proxy.map((v) => el('option', { value: v, text: v })));
    select.value = values.proxyProtocol;
    grid.append(field('proxyProtocol', 'PROXY protocol', select));
    form.append(
      grid,
      field('allow', 'Allow only (one address or CIDR range a line; empty: everyone)', el('textarea', { id: `allow-${id}`, name: 'allow', rows: '2', spellcheck: 'false', text: values.allow, 'data-focus': `allow-${id}` })),
      field('deny', 'Deny (one address or CIDR range a line)', el('textarea', { id: `deny-${id}`, name: 'deny', rows: '2', spellcheck: 'false', text: values.deny, 'data-focus': `deny-${id}` })),
      el('p', { class: 'hint', text: 'An empty number takes the namespace\'s setting again. Open connections keep their settings; new ones get these at once.' }),
      el('div', { class: 'actions' },
        el('button', { type: 'submit', class: 'primary save-settings', 'data-focus': `save-${id}` }, 'Save settings'),
        el('button', { type: 'button', class: 'cancel-settings', 'data-focus': `cancel-settings-${id}`, onclick: () => editRow(namespace, protocol, false) }, 'Cancel')),
    );
    return form;
  }

  /** The ranges of a text area: one a line (commas and spaces separate too). */
  function ranges(text) {
    return text.split(/[\s,]+/).filter(Boolean);
  }

  function editRow(namespace, protocol, editing) {
    const ui = rowUi(namespace, protocol);
    ui.editing = editing;
    ui.draft = null;
    ui.error = '';
    renderRows();
    const row = rowOf(namespace, protocol);
    const target = row && row.querySelector(editing ? '.settings-form input, .settings-form select' : '.actions button.settings');
    if (target) target.focus();
  }

  /** Sends the settings that changed (a cleared number: `null`, the namespace's again). */
  function saveSettings(namespace, protocol, redir, form) {
    const { org, app } = state.route;
    const ui = rowUi(namespace, protocol);
    const before = formValues(protocol, redir);
    const draft = {};
    for (const input of form.querySelectorAll('input, select, textarea')) draft[input.name] = input.value.trim();
    const patch = {};
    for (const [key] of settingsOf(protocol).numbers) {
      if (draft[key] === before[key]) continue;
      if (draft[key] === '') patch[key] = null;
      else if (/^[0-9]+$/.test(draft[key])) patch[key] = Number(draft[key]);
      else {
        ui.error = `${key}: write a whole number of at least 1, or leave it empty for the namespace's.`;
        ui.draft = draft;
        renderRows();
        return Promise.resolve();
      }
    }
    if (draft.proxyProtocol !== before.proxyProtocol) patch.proxyProtocol = draft.proxyProtocol || null;
    for (const key of ['allow', 'deny']) {
      if (ranges(draft[key]).join(' ') !== ranges(before[key]).join(' ')) patch[key] = ranges(draft[key]);
    }
    ui.draft = draft;
    if (Object.keys(patch).length === 0) {
      ui.editing = false;
      ui.draft = null;
      announce('Nothing changed.');
      renderRows();
      return Promise.resolve();
    }
    const what = protocol === 'tcp' ? 'redirection' : `${protocol.toUpperCase()} redirection`;
    return rowCall(
      namespace,
      protocol,
      'saving',
      () => api('PATCH', `${appPath(org, app)}/${protocol}Redirs/${encodeURIComponent(redir.port)}?namespace=${encodeURIComponent(namespace)}`, patch),
      (updated) => {
        state.redirs = state.redirs.map((r) => (isRow(r, namespace, protocol) ? { ...r, ...updated } : r));
        ui.editing = false;
        ui.draft = null;
        announce(`Settings of the ${what} on port ${redir.port} in ${namespace} saved: ${Object.keys(patch).join(', ')}.`);
      },
    );
  }

  function updateFigures(row, redir) {
    const set = (cls, text) => {
      const node = row.querySelector(`.${cls}`);
      if (node && node.textContent !== text) node.textContent = text;
    };
    set('open', String(redir.activeConnections || 0));
    set('total', String(redir.connections || 0));
    set('in', bytes(redir.bytesIn));
    set('out', bytes(redir.bytesOut));
    const holder = row.querySelector('.plot');
    if (holder) holder.replaceChildren(...plot(state.history.get(`${state.app.id}|${redir.namespace}|${protocolOf(redir)}|${redir.port}`) || []));
  }

  /** A small plot of the last minutes: bytes per second (both ways) and open connections. */
  function plot(samples) {
    const width = 240;
    const height = 56;
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    // The time axis spans what the page has seen, from a few polls up to HISTORY_MS.
    const span = Math.min(HISTORY_MS, Math.max(4 * POLL_MS, samples.length ? now - samples[0].t : 0));
    const start = now - span;
    const rates = [];
    for (let i = 1; i < samples.length; i += 1) {
      const dt = (samples[i].t - samples[i - 1].t) / 1000;
      const db = samples[i].bytes - samples[i - 1].bytes;
      rates.push({ t: samples[i].t, v: dt > 0 && db > 0 ? db / dt : 0 });
    }
    const opens = samples.map((s) => ({ t: s.t, v: s.open }));
    const peakRate = Math.max(0, ...rates.map((r) => r.v));
    const peakOpen = Math.max(0, ...opens.map((o) => o.v));
    const x = (t) => (((Math.max(t, start) - start) / span) * (width - 2) + 1).toFixed(1);
    const y = (v, peak) => (height - 2 - (peak > 0 ? (v / peak) * (height - 8) : 0)).toFixed(1);
    const line = (points, peak, cls) =>
      points.length > 1 ? svg('polyline', { class: cls, points: points.map((p) => `${x(p.t)},${y(p.v, peak)}`).join(' ') }) : null;
    const rateNow = rates.length ? rates[rates.length - 1].v : 0;
    const openNow = opens.length ? opens[opens.length - 1].v : 0;
    const seconds = Math.round(span / 1000);
    const over = seconds >= 120 ? `${Math.round(seconds / 60)} minutes` : `${seconds} seconds`;
    const label = `Traffic over the last ${over}: ${bytes(rateNow)}/s now, peak ${bytes(peakRate)}/s; ${openNow} open connections now, peak ${peakOpen}.`;
    return [
      svg('svg', { class: 'spark', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label, preserveAspectRatio: 'none' },
        svg('title', { text: label }),
        svg('line', { class: 'axis', x1: 0, y1: height - 1, x2: width, y2: height - 1 }),
        line(rates, peakRate, 'rate'),
        line(opens, peakOpen, 'conns')),
      el('p', { class: 'legend', 'aria-hidden': 'true' },
        el('span', { class: 'key rate' }), `${bytes(rateNow)}/s`, ' ',
        el('span', { class: 'key conns' }), `${openNow} open`),
    ];
  }

  function renderCli() {
    const app = state.app;
    const name = shellWord(app.name);
    const lines = [`tcp-redirs --app ${name}`];
    for (const protocol of PROTOCOLS) for (const ns of state.namespaces) {
      const redir = redirOf(ns.namespace, protocol);
      const udp = protocol === 'udp' ? ' --udp' : '';
      lines.push(redir
        ? `tcp-redirs remove ${redir.port}${udp} --namespace ${shellWord(ns.namespace)} --app ${name}`
        : `tcp-redirs add${udp} --namespace ${shellWord(ns.namespace)} --app ${name}`);
    }
    const text = lines.join('\n');
    if ($('cli').textContent !== text) $('cli').textContent = text;
  }

  function confirmRow(namespace, protocol, confirm) {
    const ui = rowUi(namespace, protocol);
    ui.confirm = confirm;
    ui.error = '';
    renderRows();
    const row = rowOf(namespace, protocol);
    const target = row && row.querySelector(confirm ? '.confirm-delete' : '.actions button:not([disabled])');
    if (target) target.focus();
  }

  async function rowCall(namespace, protocol, busy, call, done) {
    const ui = rowUi(namespace, protocol);
    const generation = state.generation;
    ui.busy = busy;
    ui.confirm = false;
    ui.error = '';
    const row = rowOf(namespace, protocol);
    const hadFocus = row && row.contains(document.activeElement);
    renderRows();
    if (hadFocus) row.querySelector('.actions button').focus();
    try {
      const answer = await call();
      if (generation !== state.generation) return;
      done(answer);
    } catch (err) {
      if (handleAuthFailure(err)) return;
      ui.error = err.message;
    } finally {
      ui.busy = null;
    }
    if (generation !== state.generation) return;
    const focusNow = row && (row.contains(document.activeElement) || document.activeElement === document.body);
    renderRows();
    renderCli();
    if (focusNow) {
      // The row's action: Delete after a creation, Create after a deletion, Settings after
      // a save.
      const button = row.querySelector(busy === 'saving' ? '.actions button.settings' : '.actions button.delete, .actions button.create');
      if (button) button.focus();
    }
    poll();
  }

  /** Whether `r` is the redirection of `protocol` in `namespace`. */
  function isRow(r, namespace, protocol) {
    return r.namespace === namespace && protocolOf(r) === protocol;
  }

  /** A redirection's ports for people: `5000`, or `5000-5099` for a range. */
  function portsText(redir) {
    return redir.lastPort ? `${redir.port}-${redir.lastPort}` : String(redir.port);
  }

  function createRedir(namespace, protocol) {
    const { org, app } = state.route;
    const what = protocol === 'tcp' ? 'Redirection' : `${protocol.toUpperCase()} redirection`;
    const body = { namespace };
    const ports = Number(rowUi(namespace, protocol).ports || 1);
    if (ports > 1) body.ports = ports;
    return rowCall(
      namespace,
      protocol,
      'creating',
      () => api('POST', `${appPath(org, app)}/${protocol}Redirs`, body),
      (redir) => {
        rowUi(namespace, protocol).ports = '';
        state.redirs = state.redirs.filter((r) => !isRow(r, namespace, protocol)).concat([redir]);
        record(state.app, state.redirs);
        announce(`${what} created in ${namespace}: ${redir.lastPort ? 'ports' : 'port'} ${portsText(redir)}.`);
      },
    );
  }

  function removeRedir(namespace, protocol, port) {
    const { org, app } = state.route;
    const what = protocol === 'tcp' ? 'Redirection' : `${protocol.toUpperCase()} redirection`;
    return rowCall(
      namespace,
      protocol,
      'deleting',
      () => api('DELETE', `${appPath(org, app)}/${protocol}Redirs/${encodeURIComponent(port)}?namespace=${encodeURIComponent(namespace)}`),
      () => {
        state.redirs = state.redirs.filter((r) => !isRow(r, namespace, protocol));
        announce(`${what} on port ${port} in ${namespace} deleted.`);
      },
    );
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      announce(`Copied ${text}.`);
    } catch {
      announce(`Could not copy: select ${text} and copy it.`);
    }
  }

  async function saveInstances(event) {
    event.preventDefault();
    const { org, app } = state.route;
    const error = $('instances-error');
    const button = $('save-instances');
    button.disabled = true;
    button.textContent = 'Saving…';
    error.textContent = '';
    try {
      const updated = await api('PUT', `${appPath(org, app)}/instances`, parseInstances($('instances-input').value));
      state.app = updated;
      $('instances-input').value = formatInstances(updated.instances);
      renderApp();
      announce('Instances saved: new connections go to the new list.');
    } catch (err) {
      if (!handleAuthFailure(err)) error.textContent = err.message;
    } finally {
      button.disabled = false;
      button.textContent = 'Save instances';
    }
  }

  function renderDeleteApp() {
    const app = state.app;
    const ui = state.deleteApp;
    const zone = $('delete-app-zone');
    const nodes = [];
    if (ui.busy) {
      nodes.push(el('button', { type: 'button', disabled: true, 'data-focus': 'delete-app-busy' }, 'Deleting…'));
    } else if (ui.confirm) {
      nodes.push(
        el('p', { class: 'confirm', id: 'delete-app-question', text: `Delete ${app.name} and its redirections? This cannot be undone.` }),
        el('button', { type: 'button', id: 'delete-app-confirm', class: 'danger', 'data-focus': 'delete-app-confirm', 'aria-describedby': 'delete-app-question', onclick: deleteApp }, 'Yes, delete the application'),
        el('button', { type: 'button', id: 'delete-app-cancel', 'data-focus': 'delete-app-cancel', onclick: () => { ui.confirm = false; renderDeleteApp(); $('delete-app').focus(); } }, 'Cancel'),
      );
    } else {
      nodes.push(el('button', { type: 'button', id: 'delete-app', class: 'danger', 'data-focus': 'delete-app', onclick: () => { ui.confirm = true; renderDeleteApp(); $('delete-app-confirm').focus(); } }, 'Delete application'));
    }
    const shape = JSON.stringify({ ui, name: app.name });
    if (zone.dataset.shape !== shape) {
      zone.dataset.shape = shape;
      replaceKeepingFocus(zone, nodes);
    }
  }

  async function deleteApp() {
    const { org, app } = state.route;
    state.deleteApp = { confirm: false, busy: true };
    renderDeleteApp();
    $('delete-app-error').textContent = '';
    try {
      const removed = await api('DELETE', appPath(org, app));
      state.deleteApp = { confirm: false, busy: false };
      announce(`Application ${removed.name} deleted.`);
      state.app = null;
      location.hash = '#/';
    } catch (err) {
      state.deleteApp = { confirm: false, busy: false };
      if (!handleAuthFailure(err)) {
        $('delete-app-error').textContent = err.message;
        renderDeleteApp();
        $('delete-app').focus();
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------

  function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('create-app-form').addEventListener('submit', createApp);
    $('instances-form').addEventListener('submit', saveInstances);
    $('sign-out').addEventListener('click', () => signOut());
    $('redirs').addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      const row = event.target.closest('[data-namespace]');
      if (!row) return;
      const [namespace, protocol] = [row.getAttribute('data-namespace'), row.getAttribute('data-protocol')];
      if (rowUi(namespace, protocol).confirm) confirmRow(namespace, protocol, false);
      else if (rowUi(namespace, protocol).editing) editRow(namespace, protocol, false);
    });
    window.addEventListener('hashchange', () => route(false));
    state.credential = loadCredential();
    if (!state.credential) {
      showView('sign-in-view');
      $('token').focus();
      return;
    }
    // A credential from earlier in this tab: check it (and learn the organisations) first.
    api('GET', '/v2/organisations')
      .then((orgs) => {
        state.orgs = orgs || [];
        route(false);
      })
      .catch((err) => {
        if (!handleAuthFailure(err)) {
          showView('apps-view');
          announce(`Could not load: ${err.message}`);
          route(false);
        }
      });
  }

  start();
})();
