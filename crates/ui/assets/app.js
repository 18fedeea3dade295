// shoal's dashboard: hand-written JavaScript, no framework and no build step.
// The page calls the Kubernetes API with the user's bearer token and keeps
// each table current through a watch (`?watch=1`, one JSON event a line,
// read from a streaming fetch). Cluster data is only ever inserted as text
// (`Node.append(string)`, `textContent`), never parsed as markup.
'use strict';

const TOKEN_KEY = 'shoal.dashboard.token';
const PAGE_SIZE = 50;
// How long a failed watch waits before it is opened again.
const WATCH_RETRY_MS = 1000;

const state = {
  page: 'store',
  namespace: '',
  labelSelector: '',
  // What the current page runs: live lists and timers, stopped on leaving it.
  running: [],
  renderQueued: false,
  render: null,
};

// Events the page applied, newest last, for the browser tests and the
// benchmark (bounded).
window.shoalEvents = [];

// ---- small helpers -------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function $(id) { return document.getElementById(id); }

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(message, code) { super(message); this.code = code; }
}

async function api(path, options) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: 'Bearer ' + token(), Accept: 'application/json' },
  });
  if (response.status === 401) {
    logout('The API server refused the token (401 Unauthorized): log in again.');
    throw new ApiError('unauthorized', 401);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new ApiError((body && body.message) || response.statusText, response.status);
  }
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? '?' + text : '';
}

function keyOf(object) {
  const meta = object.metadata || {};
  return meta.namespace ? meta.namespace + '/' + meta.name : meta.name;
}

function age(timestamp) {
  if (!timestamp) return '';
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return seconds + 's';
  if (seconds < 7200) return Math.floor(seconds / 60) + 'm';
  if (seconds < 172800) return Math.floor(seconds / 3600) + 'h';
  return Math.floor(seconds / 86400) + 'd';
}

function bytes(count) {
  if (count === undefined || count === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(count);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit === 0 ? value : value.toFixed(1)) + ' ' + units[unit];
}

const QUANTITY_SUFFIXES = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

// A Kubernetes quantity ("250m", "1Gi", "1e3") as a number; 0 if unreadable.
function quantity(text) {
  if (text === undefined || text === null) return 0;
  const match = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(String(text).trim());
  if (!match || !(match[2] in QUANTITY_SUFFIXES)) return 0;
  return Number(match[1]) * QUANTITY_SUFFIXES[match[2]];
}

function cpu(cores) { return cores < 1 ? Math.round(cores * 1000) + 'm' : (Math.round(cores * 100) / 100).toString(); }

function bar(done, total) {
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  const inner = el('span');
  inner.style.width = Math.round(fraction * 100) + '%';
  return el('span', { class: 'bar', title: done + ' of ' + total }, inner);
}

function table(headers, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, headers.map((header) => el('th', {}, header)))),
    el('tbody', {}, rows));
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    if (state.render) state.render();
  });
}

// ---- live lists ----------------------------------------------------------

// One page of a resource's list (`limit`, `continue`), kept current by a
// watch opened at the list's resourceVersion. Events for objects outside
// the page only move the count; an object that sorts into the page (the
// API lists in key order: namespace, then name) is added to it.
class LiveList {
  constructor(resource, options) {
    this.resource = resource; // { group: '', version: 'v1', plural: 'pods', namespaced: true }
    this.fieldSelector = (options && options.fieldSelector) || '';
    this.pageSize = (options && options.pageSize) || PAGE_SIZE;
    this.useLabels = !(options && options.ignoreLabels);
    this.items = new Map();
    this.total = 0;
    this.totalKnown = false;
    this.next = null;
    this.pages = [null]; // continue tokens of the pages seen, for "previous"
    this.error = '';
    this.loaded = false;
    this.controller = null;
    this.stopped = false;
    this.generation = 0;
  }

  path() {
    const { group, version, plural, namespaced } = this.resource;
    const base = group ? '/apis/' + group + '/' + version : '/api/' + version;
    if (namespaced && state.namespace) {
      return base + '/namespaces/' + encodeURIComponent(state.namespace) + '/' + plural;
    }
    return base + '/' + plural;
  }

  selectors() {
    return {
      labelSelector: this.useLabels ? state.labelSelector : '',
      fieldSelector: this.fieldSelector,
    };
  }

  start() { this.load(null); return this; }

  stop() {
    this.stopped = true;
    this.generation += 1;
    if (this.controller) this.controller.abort();
  }

  async load(continueToken) {
    this.generation += 1;
    const generation = this.generation;
    if (this.controller) this.controller.abort();
    this.continueToken = continueToken;
    try {
      const list = await api(this.path() + query({
        limit: this.pageSize, continue: continueToken, ...this.selectors(),
      }));
      if (generation !== this.generation) return;
      const offset = (this.pages.length - 1) * this.pageSize;
      this.items = new Map(list.items.map((item) => [keyOf(item), item]));
      this.resourceVersion = list.metadata.resourceVersion;
      this.next = list.metadata.continue || null;
      const remaining = list.metadata.remainingItemCount;
      this.totalKnown = !this.next || remaining !== undefined;
      this.total = offset + list.items.length + (remaining || 0);
      this.error = '';
      this.loaded = true;
      if (!window.shoalFirstData) {
        window.shoalFirstData = performance.now();
        performance.mark('shoal:first-data');
      }
      scheduleRender();
      this.watch(generation);
    } catch (error) {
      if (generation !== this.generation) return;
      this.error = error.message;
      this.loaded = true;
      scheduleRender();
      if (error.code !== 401 && error.code !== 403 && error.code !== 400) {
        setTimeout(() => { if (generation === this.generation) this.load(continueToken); }, WATCH_RETRY_MS);
      }
    }
  }

  nextPage() { if (this.next) { this.pages.push(this.next); this.load(this.next); } }

  previousPage() {
    if (this.pages.length > 1) { this.pages.pop(); this.load(this.pages[this.pages.length - 1]); }
  }

  firstKey() { for (const key of this.items.keys()) return key; return null; }

  lastKey() { let last = null; for (const key of this.items.keys()) last = key; return last; }

  // Whether an object with `key` sorts into the page shown.
  inPage(key) {
    const first = this.firstKey();
    const last = this.lastKey();
    if (first === null) return !this.next;
    const afterStart = this.pages.length === 1 || key >= first;
    const beforeEnd = !this.next || key <= last;
    return afterStart && beforeEnd;
  }

  insert(key, object) {
    this.items.set(key, object);
    this.items = new Map([...this.items.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
  }

  async watch(generation) {
    const controller = new AbortController();
    this.controller = controller;
    try {
      const response = await fetch(this.path() + query({
        watch: '1', resourceVersion: this.resourceVersion, allowWatchBookmarks: 'true',
        ...this.selectors(),
      }), { signal: controller.signal, headers: { Authorization: 'Bearer ' + token() } });
      if (response.status === 401) { logout('The API server refused the token (401 Unauthorized): log in again.'); return; }
      if (!response.ok || !response.body) throw new ApiError('watch: ' + response.status, response.status);
      setLive(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line && generation === this.generation) this.apply(JSON.parse(line));
        }
      }
    } catch (error) {
      if (error.name === 'AbortError' || generation !== this.generation) return;
      setLive(false);
    }
    // The server ended the watch (its timeout, a restart): go on from the
    // last version seen.
    if (generation === this.generation && !this.stopped) {
      setTimeout(() => { if (generation === this.generation) this.watch(generation); }, WATCH_RETRY_MS);
    }
  }

  apply(event) {
    const object = event.object || {};
    if (event.type === 'ERROR') {
      // 410 Gone: the version is compacted away; list again.
      this.load(this.continueToken);
      return;
    }
    if (object.metadata && object.metadata.resourceVersion) {
      this.resourceVersion = object.metadata.resourceVersion;
    }
    if (event.type === 'BOOKMARK') return;
    const key = keyOf(object);
    window.shoalEvents.push({ type: event.type, key, resource: this.resource.plural, at: performance.now() });
    if (window.shoalEvents.length > 1000) window.shoalEvents.splice(0, 500);
    if (event.type === 'ADDED') {
      this.total += 1;
      if (this.items.has(key)) this.items.set(key, object);
      else if (this.inPage(key)) this.insert(key, object);
    } else if (event.type === 'MODIFIED') {
      if (this.items.has(key)) this.items.set(key, object);
      else if (this.inPage(key)) { this.insert(key, object); }
    } else if (event.type === 'DELETED') {
      this.total = Math.max(0, this.total - 1);
      this.items.delete(key);
    }
    scheduleRender();
  }

  values() { return [...this.items.values()]; }

  // The count line and paging buttons above a table.
  pager(noun) {
    const count = this.totalKnown ? String(this.total) : 'more than ' + this.total;
    const first = (this.pages.length - 1) * this.pageSize;
    const shown = this.items.size ? (first + 1) + '–' + (first + this.items.size) : '0';
    return el('div', { class: 'pager' },
      el('span', { 'data-count': noun }, count + ' ' + noun),
      this.items.size < this.total ? el('span', { class: 'muted' }, 'showing ' + shown) : null,
      this.pages.length > 1 ? el('button', { type: 'button', onclick: () => this.previousPage() }, 'Previous') : null,
      this.next ? el('button', { type: 'button', onclick: () => this.nextPage() }, 'Next') : null,
      this.error ? el('span', { class: 'error' }, this.error) : null);
  }
}

function setLive(open) {
  const live = $('live');
  live.hidden = false;
  live.classList.toggle('stale', !open);
  live.textContent = open ? 'live' : 'reconnecting';
}

const RESOURCES = {
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true },
  events: { group: '', version: 'v1', plural: 'events', namespaced: true },
  services: { group: '', version: 'v1', plural: 'services', namespaced: true },
  endpointslices: { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true },
  deployments: { group: 'apps', version: 'v1', plural: 'deployments', namespaced: true },
};

function live(resource, options) {
  const list = new LiveList(RESOURCES[resource], options).start();
  state.running.push(() => list.stop());
  return list;
}

function every(milliseconds, action) {
  action();
  const timer = setInterval(action, milliseconds);
  state.running.push(() => clearInterval(timer));
}

// ---- pages ---------------------------------------------------------------

const PAGES = {
  store() {
    let status = null;
    let error = '';
    every(2000, async () => {
      try { status = await api('/ui/api/store'); error = ''; } catch (failure) { error = failure.message; }
      if (status && !window.shoalFirstData) { window.shoalFirstData = performance.now(); performance.mark('shoal:first-data'); }
      scheduleRender();
    });
    return () => {
      if (!status) return el('div', {}, el('h1', {}, 'Store'), el('p', { class: error ? 'error' : 'muted' }, error || 'loading…'));
      const leader = status.members.find((member) => member.isLeader);
      const card = (label, value, kind) => el('div', { class: 'card', 'data-card': label },
        el('div', { class: 'label' }, label), el('div', { class: 'value ' + (kind || '') }, value));
      return el('div', {},
        el('h1', {}, 'Store'),
        error ? el('p', { class: 'error' }, error) : null,
        el('div', { class: 'cards' },
          card('Leader', leader ? leader.name || leader.id : 'none', leader ? 'ok' : 'bad'),
          card('Members', String(status.members.length)),
          card('Revision', String(status.revision ?? '')),
          card('Raft term', String(status.raftTerm ?? '')),
          card('Raft index', String(status.raftIndex ?? '')),
          card('DB size', bytes(status.dbSizeBytes)),
          card('DB in use', bytes(status.dbSizeInUseBytes)),
          card('WAL fsync p99', status.walFsyncSecondsP99 == null ? 'n/a' : (status.walFsyncSecondsP99 * 1000).toFixed(2) + ' ms')),
        status.error ? el('p', { class: 'error' }, status.error) : null,
        status.errors && status.errors.length ? el('p', { class: 'bad' }, 'alarms: ' + status.errors.join(', ')) : null,
        el('h2', {}, 'Members'),
        table(['Name', 'ID', 'Role', 'Peer URLs', 'Client URLs'], status.members.map((member) =>
          el('tr', { 'data-member': member.name },
            el('td', {}, member.name),
            el('td', {}, member.id),
            el('td', {}, member.isLeader ? el('span', { class: 'ok' }, 'leader') : member.isLearner ? 'learner' : 'follower'),
            el('td', {}, member.peerURLs.join(', ')),
            el('td', {}, member.clientURLs.join(', '))))),
        el('p', { class: 'muted' }, 'Status from member ' + status.memberId + ', etcd API ' + status.version + '.'));
    };
  },

  machines() {
    const nodes = live('nodes');
    // Requests and pods of the nodes shown, read per node (a field
    // selector), so a summary never lists every pod in the cluster.
    const usage = new Map();
    every(3000, async () => {
      const names = nodes.values().map((node) => node.metadata.name);
      for (let index = 0; index < names.length; index += 6) {
        await Promise.all(names.slice(index, index + 6).map(async (name) => {
          try {
            const pods = await api('/api/v1/pods' + query({ fieldSelector: 'spec.nodeName=' + name }));
            let cpuRequested = 0;
            let memoryRequested = 0;
            let running = 0;
            for (const pod of pods.items) {
              const phase = (pod.status || {}).phase;
              if (phase === 'Succeeded' || phase === 'Failed') continue;
              running += 1;
              for (const container of pod.spec.containers || []) {
                const requests = (container.resources || {}).requests || {};
                cpuRequested += quantity(requests.cpu);
                memoryRequested += quantity(requests.memory);
              }
            }
            usage.set(name, { cpuRequested, memoryRequested, pods: running });
          } catch (_) { /* shown as blank */ }
        }));
      }
      scheduleRender();
    });
    return () => el('div', {},
      el('h1', {}, 'Machines'),
      nodes.pager('nodes'),
      table(['Name', 'Ready', 'Roles', 'CPU requested', 'Memory requested', 'Pods', 'Version', 'Age'],
        nodes.values().map((node) => {
          const status = node.status || {};
          const ready = (status.conditions || []).find((condition) => condition.type === 'Ready');
          const isReady = ready && ready.status === 'True';
          const roles = Object.keys(node.metadata.labels || {})
            .filter((label) => label.startsWith('node-role.kubernetes.io/'))
            .map((label) => label.slice('node-role.kubernetes.io/'.length));
          const allocatable = status.allocatable || status.capacity || {};
          const used = usage.get(node.metadata.name);
          const unschedulable = node.spec && node.spec.unschedulable;
          return el('tr', { 'data-node': node.metadata.name, class: isReady ? '' : 'failing' },
            el('td', {}, node.metadata.name),
            el('td', { class: isReady ? 'ok' : 'bad' }, (isReady ? 'Ready' : 'NotReady') + (unschedulable ? ',SchedulingDisabled' : '')),
            el('td', {}, roles.length ? roles.join(',') : el('span', { class: 'muted' }, '<none>')),
            el('td', {}, used ? cpu(used.cpuRequested) + ' / ' + cpu(quantity(allocatable.cpu)) : ''),
            el('td', {}, used ? bytes(used.memoryRequested) + ' / ' + bytes(quantity(allocatable.memory)) : ''),
            el('td', { 'data-pods': '' }, used ? used.pods + ' / ' + (allocatable.pods || '?') : ''),
            el('td', {}, (status.nodeInfo || {}).kubeletVersion || ''),
            el('td', {}, age(node.metadata.creationTimestamp)));
        })));
  },

  workloads() {
    const deployments = live('deployments');
    const pods = live('pods');
    const lastEvents = new Map();
    every(3000, async () => {
      const failing = pods.values().filter((pod) => podStatus(pod).failing).slice(0, 20);
      await Promise.all(failing.map(async (pod) => {
        try {
          const events = await api('/api/v1/namespaces/' + encodeURIComponent(pod.metadata.namespace) + '/events' +
            query({ fieldSelector: 'involvedObject.name=' + pod.metadata.name }));
          const newest = events.items.sort((a, b) => eventTime(b) - eventTime(a))[0];
          if (newest) lastEvents.set(keyOf(pod), newest.reason + ': ' + newest.message);
        } catch (_) { /* shown as blank */ }
      }));
      scheduleRender();
    });
    return () => el('div', {},
      el('h1', {}, 'Workloads'),
      el('h2', {}, 'Deployments'),
      deployments.pager('deployments'),
      table(['Namespace', 'Name', 'Ready', 'Up-to-date', 'Available', 'Rollout', 'Images', 'Age'],
        deployments.values().map((deployment) => {
          const spec = deployment.spec || {};
          const status = deployment.status || {};
          const desired = spec.replicas ?? 1;
          const ready = status.readyReplicas || 0;
          const updated = status.updatedReplicas || 0;
          const available = status.availableReplicas || 0;
          const progressing = (status.conditions || []).find((condition) => condition.type === 'Progressing');
          const done = updated === desired && available === desired && (status.replicas || 0) === desired;
          const images = ((spec.template || {}).spec || {}).containers || [];
          return el('tr', { 'data-deployment': deployment.metadata.name, class: progressing && progressing.reason === 'ProgressDeadlineExceeded' ? 'failing' : '' },
            el('td', {}, deployment.metadata.namespace),
            el('td', {}, deployment.metadata.name),
            el('td', { 'data-ready': '', class: ready === desired ? 'ok' : 'warn' }, ready + '/' + desired),
            el('td', {}, String(updated)),
            el('td', {}, String(available)),
            el('td', {}, bar(Math.min(updated, available), desired), ' ',
              el('span', { class: 'muted' }, done ? 'complete' : progressing ? progressing.reason : 'progressing')),
            el('td', {}, images.map((container) => container.image).join(', ')),
            el('td', {}, age(deployment.metadata.creationTimestamp)));
        })),
      el('h2', {}, 'Pods'),
      pods.pager('pods'),
      table(['Namespace', 'Name', 'Status', 'Ready', 'Restarts', 'Node', 'IP', 'Age', 'Last event'],
        pods.values().map((pod) => {
          const status = podStatus(pod);
          return el('tr', { 'data-pod': pod.metadata.name, class: status.failing ? 'failing' : '' },
            el('td', {}, pod.metadata.namespace),
            el('td', {}, pod.metadata.name),
            el('td', { 'data-status': '', class: status.failing ? 'bad' : status.text === 'Running' ? 'ok' : '' }, status.text),
            el('td', {}, status.ready),
            el('td', {}, String(status.restarts)),
            el('td', {}, (pod.spec || {}).nodeName || ''),
            el('td', {}, (pod.status || {}).podIP || ''),
            el('td', {}, age(pod.metadata.creationTimestamp)),
            el('td', { class: 'wrap' }, status.failing ? lastEvents.get(keyOf(pod)) || '' : ''));
        })));
  },

  services() {
    const services = live('services');
    const slices = live('endpointslices', { ignoreLabels: true, pageSize: 500 });
    return () => {
      const endpoints = new Map();
      for (const slice of slices.values()) {
        const service = (slice.metadata.labels || {})['kubernetes.io/service-name'];
        if (!service) continue;
        const key = slice.metadata.namespace + '/' + service;
        const list = endpoints.get(key) || [];
        const ports = (slice.ports || []).map((port) => port.port);
        for (const endpoint of slice.endpoints || []) {
          const ready = !endpoint.conditions || endpoint.conditions.ready !== false;
          for (const address of endpoint.addresses || []) {
            list.push({ text: ports.length ? ports.map((port) => address + ':' + port).join(', ') : address, ready });
          }
        }
        endpoints.set(key, list);
      }
      return el('div', {},
        el('h1', {}, 'Services'),
        services.pager('services'),
        table(['Namespace', 'Name', 'Type', 'Cluster IP', 'Ports', 'Endpoints', 'Age'],
          services.values().map((service) => {
            const spec = service.spec || {};
            const found = endpoints.get(keyOf(service)) || [];
            return el('tr', { 'data-service': service.metadata.name },
              el('td', {}, service.metadata.namespace),
              el('td', {}, service.metadata.name),
              el('td', {}, spec.type || 'ClusterIP'),
              el('td', {}, spec.clusterIP || ''),
              el('td', {}, (spec.ports || []).map((port) => port.port + '/' + (port.protocol || 'TCP')).join(', ')),
              el('td', { class: 'wrap', 'data-endpoints': '' }, found.length
                ? found.map((endpoint) => el('span', { class: 'pill' + (endpoint.ready ? '' : ' warn') }, endpoint.text))
                : el('span', { class: 'muted' }, '<none>')),
              el('td', {}, age(service.metadata.creationTimestamp)));
          })));
    };
  },

  events() {
    const events = live('events', { pageSize: 100 });
    return () => el('div', {},
      el('h1', {}, 'Recent events'),
      events.pager('events'),
      table(['Last seen', 'Type', 'Reason', 'Object', 'Message', 'Count'],
        events.values().sort((a, b) => eventTime(b) - eventTime(a)).map((event) => {
          const object = event.involvedObject || {};
          return el('tr', { class: event.type === 'Warning' ? 'failing' : '' },
            el('td', {}, age(new Date(eventTime(event)).toISOString())),
            el('td', { class: event.type === 'Warning' ? 'bad' : '' }, event.type || ''),
            el('td', {}, event.reason || ''),
            el('td', {}, (object.kind || '').toLowerCase() + '/' + (object.name || '')),
            el('td', { class: 'wrap' }, event.message || event.note || ''),
            el('td', {}, String(event.count || (event.series || {}).count || 1)));
        })));
  },
};

function eventTime(event) {
  return Date.parse(event.lastTimestamp || event.eventTime || (event.metadata || {}).creationTimestamp || 0) || 0;
}

// A pod's status as kubectl prints it, and whether it is failing.
function podStatus(pod) {
  const status = pod.status || {};
  let text = status.reason || status.phase || 'Pending';
  let restarts = 0;
  let readyCount = 0;
  const containers = status.containerStatuses || [];
  for (const container of containers) {
    restarts += container.restartCount || 0;
    if (container.ready) readyCount += 1;
    const current = container.state || {};
    if (current.waiting && current.waiting.reason && current.waiting.reason !== 'ContainerCreating') text = current.waiting.reason;
    else if (current.terminated && current.terminated.reason && status.phase !== 'Succeeded') text = current.terminated.reason;
  }
  if (pod.metadata.deletionTimestamp) text = 'Terminating';
  const total = ((pod.spec || {}).containers || []).length;
  const failing = text !== 'Running' && text !== 'Completed' && text !== 'Succeeded' && text !== 'Pending' && text !== 'Terminating'
    || (status.phase === 'Running' && readyCount < total && restarts > 0)
    || status.phase === 'Failed';
  return { text, restarts, ready: readyCount + '/' + total, failing };
}

// ---- the shell: login, navigation, filters --------------------------------

function stopPage() {
  for (const stop of state.running.splice(0)) stop();
  state.render = null;
}

function showPage() {
  stopPage();
  const name = (location.hash.replace(/^#\/?/, '') || 'store').split('?')[0];
  state.page = name in PAGES ? name : 'store';
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('current', link.dataset.page === state.page);
  }
  $('filters').hidden = state.page === 'store';
  const view = PAGES[state.page]();
  state.render = () => { $('main').replaceChildren(view()); };
  state.render();
}

function showLoggedIn() {
  $('login').hidden = true;
  for (const id of ['nav', 'main', 'logout']) $(id).hidden = false;
  showPage();
  api('/api/v1/namespaces').then((list) => {
    $('namespaces').replaceChildren(...list.items.map((item) => el('option', { value: item.metadata.name })));
  }).catch(() => { /* a user who may not list namespaces types one */ });
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPage();
  for (const id of ['nav', 'main', 'logout', 'filters', 'live']) $(id).hidden = true;
  $('main').replaceChildren();
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').value = '';
}

async function login(event) {
  event.preventDefault();
  const candidate = $('token').value.trim();
  if (!candidate) return;
  const response = await fetch('/api', { headers: { Authorization: 'Bearer ' + candidate, Accept: 'application/json' } })
    .catch((error) => ({ ok: false, status: 0, statusText: error.message }));
  if (response.status === 401) { $('login-error').textContent = 'The API server does not know this token.'; return; }
  if (!response.ok && response.status !== 403) {
    $('login-error').textContent = 'The API server did not answer: ' + response.status + ' ' + response.statusText;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $('login-error').textContent = '';
  showLoggedIn();
}

function applyFilters() {
  state.namespace = $('namespace').value.trim();
  state.labelSelector = $('labels').value.trim();
  $('filter-error').textContent = '';
  showPage();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => logout(''));
  window.addEventListener('hashchange', () => { if (token()) showPage(); });
  for (const id of ['namespace', 'labels']) {
    $(id).addEventListener('change', applyFilters);
    $(id).addEventListener('keydown', (event) => { if (event.key === 'Enter') applyFilters(); });
  }
  if (token()) showLoggedIn();
  else logout('');
});
