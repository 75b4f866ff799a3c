/*
 * The TaskGraph dashboard page. One EventSource to /events?job=NAME brings the job
 * list, then the job's snapshot, then deltas of what changed. Everything in them
 * comes from the store and is untrusted: it reaches the DOM through textContent
 * (never innerHTML) and the graph through cytoscape's data fields, drawn on a
 * canvas. Nothing here builds HTML or selectors from that data.
 */
(function () {
  'use strict';

  var JOB_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  var MAX_EVENTS_SHOWN = 200;
  var MAX_STANDBYS_SHOWN = 50;
  var FLASH_MS = 15000;

  function $(id) {
    return document.getElementById(id);
  }

  /** An element with text (as text, never as HTML). */
  function el(tag, text, className) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function short(s, n) {
    s = String(s);
    return s.length <= n ? s : s.slice(0, n - 1) + '…';
  }

  function fmtRate(r) {
    return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
  }

  function timeOf(iso) {
    var d = new Date(iso);
    return isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
  }

  var view = {
    job: null,
    exists: false,
    spec: null,
    epoch: -1,
    state: 'unknown',
    reason: undefined,
    tasks: new Map(),
    edges: new Map(),
    nodes: new Map(),
    problems: new Map(),
    events: [],
    rates: { available: false },
    jobs: [],
    selectedTask: null,
    flashing: new Map(),
    snapshots: 0,
    deltas: 0,
    structure: 0,
    laidOut: -1,
    layoutRuns: 0,
    layoutRunning: false,
    layoutWanted: false,
    connection: 'wait',
    storeStatus: null,
  };
  var api = { view: view, cy: null, error: null };
  window.taskgraphDashboard = api;

  // ---- the graph -----------------------------------------------------------------

  if (typeof window.cytoscape !== 'function') {
    api.error = 'cytoscape did not load';
    $('store-status').hidden = false;
    $('store-status').textContent = 'The graph library did not load: ' + api.error;
    return;
  }
  var cytoscape = window.cytoscape;
  var hasElk = false;
  try {
    if (!cytoscape('layout', 'elk')) {
      var ext = window.cytoscapeElk;
      if (ext && typeof ext.default === 'function') ext = ext.default;
      if (typeof ext === 'function') cytoscape.use(ext);
    }
    hasElk = !!cytoscape('layout', 'elk');
  } catch (e) {
    hasElk = false;
  }

  var cy = cytoscape({
    container: $('graph'),
    elements: [],
    minZoom: 0.02,
    maxZoom: 4,
    textureOnViewport: true,
    hideEdgesOnViewport: true,
    style: [
      {
        selector: 'node',
        style: {
          shape: 'round-rectangle',
          width: 92,
          height: 50,
          'background-color': '#e8f0fe',
          'border-width': 2,
          'border-color': '#5b7bb5',
          label: 'data(label)',
          'text-wrap': 'wrap',
          'text-valign': 'center',
          'text-halign': 'center',
          'font-size': 10,
          'font-family': 'ui-monospace, SFMono-Regular, Menlo, monospace',
          color: '#1f2933',
          'min-zoomed-font-size': 5,
        },
      },
      { selector: 'node.has-backups', style: { 'border-style': 'double', 'border-width': 5, 'border-color': '#2e7d32' } },
      { selector: 'node.failed-over', style: { 'border-width': 3, 'border-color': '#d68910', 'border-style': 'solid' } },
      { selector: 'node.no-primary', style: { 'background-color': '#fde2e1', 'border-color': '#c0392b', 'border-style': 'dashed', 'border-width': 2 } },
      { selector: 'node.flash', style: { 'background-color': '#ffd54f', 'border-color': '#e65100', 'border-width': 6, 'border-style': 'solid' } },
      { selector: 'node:selected', style: { 'overlay-color': '#1a73e8', 'overlay-opacity': 0.12, 'overlay-padding': 5 } },
      {
        selector: 'edge',
        style: {
          width: 1.5,
          'line-color': '#829ab1',
          'curve-style': 'straight',
          'font-size': 8,
          color: '#627d98',
          'text-rotation': 'autorotate',
          'text-background-color': '#fff',
          'text-background-opacity': 0.8,
          'min-zoomed-font-size': 7,
        },
      },
      { selector: 'edge.stale', style: { 'line-style': 'dashed', opacity: 0.35 } },
      { selector: 'edge.labelled', style: { label: 'data(label)', 'line-color': '#1a73e8', width: 2.5, opacity: 1 } },
    ],
  });
  api.cy = cy;

  function taskLabel(t) {
    var lines = ['task ' + t.id, t.node ? short(t.node, 18) : '(no primary)'];
    var l3 = 'inc ' + t.incarnation;
    if (t.backups.length) l3 += ' +' + t.backups.length + (t.backups.length === 1 ? ' backup' : ' backups');
    lines.push(l3);
    if (view.rates.available && typeof t.rate === 'number') lines.push(fmtRate(t.rate) + ' req/s');
    return lines.join('\n');
  }

  function taskClasses(t) {
    var c = [];
    if (!t.node) c.push('no-primary');
    if (t.backups.length) c.push('has-backups');
    if (t.failovers > 0) c.push('failed-over');
    if (view.flashing.has(t.id)) c.push('flash');
    return c.join(' ');
  }

  function taskData(t) {
    return { id: 't' + t.id, task: t.id, label: taskLabel(t), incarnation: t.incarnation, node: t.node || '', failovers: t.failovers };
  }

  function edgeStale(e) {
    return e.lastEpoch < view.epoch - 1;
  }

  function edgeElement(e) {
    return {
      group: 'edges',
      data: { id: 'e' + e.id, source: 't' + e.source, target: 't' + e.target, label: e.linkTypes.join(' / '), lastEpoch: e.lastEpoch },
      classes: edgeStale(e) ? 'stale' : '',
    };
  }

  // ---- layout: ELK (layered, top-down), re-run only when the structure changes ----

  var layoutTimer = null;

  function structureChanged() {
    view.structure++;
    scheduleLayout();
  }

  function scheduleLayout() {
    if (view.layoutRunning || layoutTimer !== null) {
      view.layoutWanted = true;
      return;
    }
    // A large graph takes ELK seconds: let its changes gather first.
    layoutTimer = setTimeout(runLayout, cy.nodes().length > 300 ? 1000 : 150);
  }

  /** True when the links seen form no cycle (a tree, or trees): ELK's mrtree draws those best. */
  function isForest() {
    var parent = new Map();
    function root(x) {
      while (parent.has(x)) {
        var p = parent.get(x);
        var up = parent.has(p) ? parent.get(p) : p;
        parent.set(x, up);
        x = up;
      }
      return x;
    }
    var forest = true;
    view.edges.forEach(function (e) {
      if (!forest) return;
      var a = root(e.source);
      var b = root(e.target);
      if (a === b) forest = false;
      else parent.set(a, b);
    });
    return forest;
  }

  /**
   * Which way a tree reads best in the canvas: top-down when it is deep, left to
   * right when it is wide (a binary tree of n tasks has about n/2 leaves).
   */
  function treeDirection() {
    var adj = new Map();
    view.edges.forEach(function (e) {
      if (!adj.has(e.source)) adj.set(e.source, []);
      if (!adj.has(e.target)) adj.set(e.target, []);
      adj.get(e.source).push(e.target);
      adj.get(e.target).push(e.source);
    });
    var seen = new Set();
    var leaves = 0;
    var depth = 0;
    var ids = Array.from(view.tasks.keys()).sort(function (a, b) {
      return a - b;
    });
    ids.forEach(function (root) {
      if (seen.has(root)) return;
      seen.add(root);
      var level = [root];
      var d = 0;
      while (level.length) {
        d++;
        var next = [];
        level.forEach(function (x) {
          var children = 0;
          (adj.get(x) || []).forEach(function (y) {
            if (!seen.has(y)) {
              seen.add(y);
              next.push(y);
              children++;
            }
          });
          if (children === 0) leaves++;
        });
        level = next;
      }
      if (d > depth) depth = d;
    });
    var canvas = cy.width() / Math.max(1, cy.height());
    var down = (leaves * 110) / (depth * 90);
    var right = (depth * 150) / (leaves * 66);
    return Math.abs(Math.log(down / canvas)) <= Math.abs(Math.log(right / canvas)) ? 'DOWN' : 'RIGHT';
  }

  function runLayout() {
    layoutTimer = null;
    view.layoutWanted = false;
    var version = view.structure;
    if (cy.nodes().length === 0) {
      view.laidOut = version;
      return;
    }
    view.layoutRunning = true;
    var tree = isForest();
    view.layoutAlgorithm = hasElk ? (tree ? 'mrtree' : 'layered') : 'grid';
    var options = hasElk
      ? {
          name: 'elk',
          fit: true,
          padding: 24,
          animate: false,
          elk: {
            algorithm: view.layoutAlgorithm,
            'elk.direction': tree ? treeDirection() : 'DOWN',
            'elk.spacing.nodeNode': 18,
            'elk.layered.spacing.nodeNodeBetweenLayers': 36,
            'elk.spacing.componentComponent': 24,
          },
        }
      : { name: 'grid', fit: true, padding: 24, animate: false };
    var layout = cy.layout(options);
    layout.one('layoutstop', function () {
      view.layoutRunning = false;
      view.layoutRuns++;
      view.laidOut = version;
      if (view.layoutWanted || view.structure !== version) scheduleLayout();
    });
    layout.run();
  }

  // ---- what the server sends -----------------------------------------------------

  function resetView(job) {
    view.job = job;
    view.exists = false;
    view.spec = null;
    view.epoch = -1;
    view.state = 'unknown';
    view.reason = undefined;
    view.tasks = new Map();
    view.edges = new Map();
    view.nodes = new Map();
    view.problems = new Map();
    view.events = [];
    view.selectedTask = null;
    view.flashing.forEach(function (t) {
      clearTimeout(t);
    });
    view.flashing = new Map();
    view.storeStatus = null;
    cy.elements().remove();
    structureChanged();
    renderAll();
  }

  function applySnapshot(s) {
    if (s.job !== view.job) return;
    view.snapshots++;
    view.exists = !!s.exists;
    view.spec = s.spec || null;
    view.epoch = s.epoch;
    view.state = s.state;
    view.reason = s.reason;
    view.rates = s.rates || { available: false };
    view.tasks = new Map();
    s.tasks.forEach(function (t) {
      view.tasks.set(t.id, t);
    });
    view.edges = new Map();
    s.edges.forEach(function (e) {
      view.edges.set(e.id, e);
    });
    view.nodes = new Map();
    s.nodes.forEach(function (n) {
      view.nodes.set(n.id, n);
    });
    view.problems = new Map();
    s.problems.forEach(function (p) {
      view.problems.set(p[0], p[1]);
    });
    view.events = s.events.slice(-MAX_EVENTS_SHOWN);
    var elements = [];
    view.tasks.forEach(function (t) {
      elements.push({ group: 'nodes', data: taskData(t), classes: taskClasses(t) });
    });
    view.edges.forEach(function (e) {
      elements.push(edgeElement(e));
    });
    cy.batch(function () {
      cy.elements().remove();
      cy.add(elements);
    });
    structureChanged();
    renderAll();
  }

  function applyDelta(d) {
    if (d.job !== view.job) return;
    view.deltas++;
    var epochChanged = false;
    if (d.epoch !== undefined && d.epoch !== view.epoch) {
      view.epoch = d.epoch;
      epochChanged = true;
    }
    if (d.state !== undefined) view.state = d.state;
    if (d.reason !== undefined) view.reason = d.reason === null ? undefined : d.reason;
    var newEdges = false;
    cy.batch(function () {
      (d.tasks || []).forEach(function (t) {
        view.tasks.set(t.id, t);
        var ele = cy.getElementById('t' + t.id);
        if (ele.nonempty()) {
          ele.data(taskData(t));
          ele.classes(taskClasses(t));
        }
      });
      (d.edges || []).forEach(function (e) {
        var had = view.edges.has(e.id);
        view.edges.set(e.id, e);
        var ele = cy.getElementById('e' + e.id);
        if (had && ele.nonempty()) {
          ele.data('label', e.linkTypes.join(' / '));
          ele.data('lastEpoch', e.lastEpoch);
          ele.toggleClass('stale', edgeStale(e));
        } else if (cy.getElementById('t' + e.source).nonempty() && cy.getElementById('t' + e.target).nonempty()) {
          cy.add(edgeElement(e));
          newEdges = true;
        }
      });
      if (epochChanged) {
        cy.edges().forEach(function (ele) {
          ele.toggleClass('stale', ele.data('lastEpoch') < view.epoch - 1);
        });
      }
    });
    (d.nodes || []).forEach(function (n) {
      view.nodes.set(n.id, n);
    });
    (d.nodesGone || []).forEach(function (id) {
      view.nodes.delete(id);
    });
    (d.problems || []).forEach(function (p) {
      view.problems.set(p[0], p[1]);
    });
    (d.problemsGone || []).forEach(function (k) {
      view.problems.delete(k);
    });
    if (d.events && d.events.length) {
      d.events.forEach(function (ev) {
        view.events.push(ev);
        if (ev.kind === 'failover' && typeof ev.task === 'number') flash(ev.task);
      });
      if (view.events.length > MAX_EVENTS_SHOWN) view.events.splice(0, view.events.length - MAX_EVENTS_SHOWN);
      renderEvents(d.events);
    }
    if (newEdges) structureChanged();
    renderFacts();
    if (d.epoch !== undefined || d.state !== undefined) renderShownJobMeta();
    if (d.nodes || d.nodesGone) renderNodes();
    if (d.problems || d.problemsGone) renderProblems();
    if (view.selectedTask !== null && d.tasks && d.tasks.some(function (t) { return t.id === view.selectedTask; })) renderDetails();
  }

  function flash(task) {
    var old = view.flashing.get(task);
    if (old) clearTimeout(old);
    view.flashing.set(
      task,
      setTimeout(function () {
        view.flashing.delete(task);
        var t = view.tasks.get(task);
        var ele = cy.getElementById('t' + task);
        if (t && ele.nonempty()) ele.classes(taskClasses(t));
      }, FLASH_MS),
    );
    var t = view.tasks.get(task);
    var ele = cy.getElementById('t' + task);
    if (t && ele.nonempty()) ele.classes(taskClasses(t));
  }

  // ---- rendering (text only) ----------------------------------------------------

  function renderAll() {
    $('job-title').textContent = view.job ? 'job ' + view.job : 'no job selected';
    renderFacts();
    renderJobs();
    renderEvents(null);
    renderNodes();
    renderProblems();
    renderRates();
    renderDetails();
    renderStoreStatus();
  }

  function fact(dl, name, value, className) {
    var div = el('div');
    div.appendChild(el('dt', name));
    div.appendChild(el('dd', value, className));
    dl.appendChild(div);
  }

  function renderFacts() {
    var dl = $('job-facts');
    clear(dl);
    if (!view.job) {
      fact(dl, 'job', 'choose one on the left');
      return;
    }
    if (!view.exists) {
      fact(dl, 'job', view.job);
      fact(dl, 'state', view.problems.size ? 'unreadable (see problems)' : 'no such job (yet)', 'state-unknown');
      return;
    }
    fact(dl, 'state', view.state + (view.reason ? ' (' + view.reason + ')' : ''), 'state-' + view.state);
    fact(dl, 'epoch', view.epoch < 0 ? '—' : view.epoch);
    fact(dl, 'tasks', view.spec.numTasks);
    var down = 0;
    var failovers = 0;
    view.tasks.forEach(function (t) {
      if (!t.node) down++;
      failovers += t.failovers;
    });
    fact(dl, 'without primary', down, down ? 'state-failed' : '');
    fact(dl, 'failovers seen', failovers);
    fact(dl, 'link types', view.spec.linkTypes.join(', '));
    if (view.spec.backups) fact(dl, 'backups', view.spec.backups + (view.spec.backupTasks ? ' of tasks ' + view.spec.backupTasks.join(', ') : ' per task'));
    $('links-note').textContent =
      'Links: the store records link types, not the topology; lines are the links meta notifications travelled on (solid: this or the last epoch, dashed: older). ' +
      view.edges.size +
      ' seen.';
  }

  /** The meta line of each job's entry, to update the shown job's in place. */
  var jobMeta = new Map();

  function jobMetaText(j) {
    var live = j.name === view.job && view.exists;
    var state = live ? view.state : j.state;
    var epoch = live ? view.epoch : j.epoch;
    var tasks = live ? view.spec.numTasks : j.numTasks;
    var meta = [j.readable === false && !live ? 'unreadable' : state];
    if (typeof epoch === 'number' && epoch >= 0) meta.push('epoch ' + epoch);
    if (typeof tasks === 'number') meta.push(tasks + ' tasks');
    return meta.join(' · ');
  }

  function renderJobs() {
    var ul = $('jobs');
    clear(ul);
    jobMeta = new Map();
    $('jobs-empty').hidden = view.jobs.length > 0;
    view.jobs.forEach(function (j) {
      var li = el('li');
      var b = el('button');
      b.type = 'button';
      b.dataset.job = j.name;
      if (j.name === view.job) b.className = 'selected';
      b.appendChild(el('span', j.name, 'job-name'));
      var meta = el('span', jobMetaText(j), 'job-meta');
      jobMeta.set(j.name, { span: meta, job: j });
      b.appendChild(meta);
      b.addEventListener('click', function () {
        selectJob(j.name);
      });
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  function renderShownJobMeta() {
    var entry = jobMeta.get(view.job);
    if (entry) entry.span.textContent = jobMetaText(entry.job);
  }

  function eventItem(ev) {
    var li = el('li', null, 'ev ev-' + ev.kind);
    li.dataset.kind = ev.kind;
    if (typeof ev.task === 'number') li.dataset.task = String(ev.task);
    var time = el('time', timeOf(ev.time));
    time.dateTime = ev.time;
    li.appendChild(time);
    li.appendChild(el('span', ev.text));
    return li;
  }

  /** fresh: events just arrived (prepended, newest first); null: draw them all. */
  function renderEvents(fresh) {
    var ol = $('events');
    if (fresh === null) {
      clear(ol);
      for (var i = view.events.length - 1; i >= 0; i--) ol.appendChild(eventItem(view.events[i]));
    } else {
      fresh.forEach(function (ev) {
        var li = eventItem(ev);
        li.classList.add('fresh');
        ol.insertBefore(li, ol.firstChild);
      });
      while (ol.children.length > MAX_EVENTS_SHOWN) ol.removeChild(ol.lastChild);
    }
    $('event-count').textContent = view.events.length ? '(' + view.events.length + ')' : '';
    if (view.events.length === 0 && view.job) {
      ol.appendChild(el('li', 'No failovers seen since this page opened. They appear here as they happen.', 'muted empty'));
    } else {
      var empty = ol.querySelector('li.empty');
      if (empty) ol.removeChild(empty);
    }
  }

  function renderNodes() {
    var primaries = 0;
    var backups = 0;
    var standbys = [];
    view.nodes.forEach(function (n) {
      if (n.role === 'primary') primaries++;
      else if (n.role === 'backup') backups++;
      else standbys.push(n.id);
    });
    $('node-counts').textContent = view.job
      ? view.nodes.size + ' live: ' + primaries + ' primary, ' + backups + ' backup, ' + standbys.length + ' standby'
      : '';
    var ul = $('standbys');
    clear(ul);
    standbys.sort();
    standbys.slice(0, MAX_STANDBYS_SHOWN).forEach(function (id) {
      ul.appendChild(el('li', id + ' (standby)'));
    });
    if (standbys.length > MAX_STANDBYS_SHOWN) ul.appendChild(el('li', '… and ' + (standbys.length - MAX_STANDBYS_SHOWN) + ' more', 'muted'));
  }

  function renderProblems() {
    var ul = $('problems');
    clear(ul);
    $('problems-section').hidden = view.problems.size === 0;
    view.problems.forEach(function (message, key) {
      ul.appendChild(el('li', key + ': ' + message));
    });
  }

  function renderRates() {
    var p = $('rates');
    if (!view.job) {
      p.textContent = '';
    } else if (view.rates.available) {
      p.textContent = 'Requests per second per task, from ' + (view.rates.label || 'the configured source') + '; shown on each task and in its details.';
    } else {
      p.textContent =
        'Not available: the store does not record request rates. Start the dashboard with a requestRates source (startDashboard({ requestRates })) to show them here.';
    }
    p.dataset.available = String(!!view.rates.available);
  }

  function row(table, name, value) {
    var tr = el('tr');
    tr.appendChild(el('th', name));
    tr.appendChild(el('td', value));
    table.appendChild(tr);
  }

  function renderDetails() {
    var box = $('task-details');
    clear(box);
    var t = view.selectedTask === null ? undefined : view.tasks.get(view.selectedTask);
    if (!t) {
      box.className = 'muted';
      box.textContent = view.job ? 'Click a task in the graph.' : '';
      return;
    }
    box.className = '';
    var table = el('table');
    row(table, 'task', t.id);
    row(table, 'primary', t.node || 'none (no node runs it now)');
    row(table, 'address', t.address || '—');
    row(table, 'incarnation', t.incarnation);
    row(table, 'claims', t.claims);
    row(table, 'failovers seen', t.failovers);
    if (t.backups.length === 0) row(table, 'backups', 'none');
    t.backups.forEach(function (b) {
      row(table, 'backup ' + b.slot, b.node + ' (' + b.state + ')');
    });
    row(table, 'requests/s', view.rates.available ? (typeof t.rate === 'number' ? fmtRate(t.rate) : 'not reported') : 'not available');
    var neighbours = [];
    cy.getElementById('t' + t.id)
      .connectedEdges()
      .forEach(function (e) {
        var other = e.data('source') === 't' + t.id ? e.data('target') : e.data('source');
        neighbours.push(other.slice(1) + ' (' + e.data('label') + ')');
      });
    row(table, 'links seen', neighbours.length ? neighbours.join(', ') : 'none yet');
    box.appendChild(table);
  }

  function renderStoreStatus() {
    var p = $('store-status');
    var s = view.storeStatus;
    p.hidden = !s || s.ok;
    p.textContent = s && !s.ok ? 'Store: ' + (s.message || 'failing') : '';
  }

  function setConnection(state) {
    view.connection = state;
    var c = $('conn');
    c.className = 'conn conn-' + state;
    c.textContent = state === 'live' ? 'live' : state === 'down' ? 'disconnected' : 'connecting…';
  }

  // ---- the stream ----------------------------------------------------------------

  var source = null;

  function connect(job) {
    if (source) source.close();
    resetView(job);
    setConnection('wait');
    var url = '/events' + (job ? '?job=' + encodeURIComponent(job) : '');
    var es = new EventSource(url);
    source = es;
    es.addEventListener('open', function () {
      setConnection('live');
    });
    es.addEventListener('error', function () {
      setConnection(es.readyState === EventSource.CLOSED ? 'down' : 'wait');
    });
    es.addEventListener('jobs', function (m) {
      view.jobs = JSON.parse(m.data);
      renderJobs();
      if (!view.job && view.jobs.length) {
        var running = view.jobs.filter(function (j) {
          return j.state === 'running';
        });
        selectJob((running[0] || view.jobs[0]).name);
      }
    });
    es.addEventListener('snapshot', function (m) {
      applySnapshot(JSON.parse(m.data));
    });
    es.addEventListener('delta', function (m) {
      applyDelta(JSON.parse(m.data));
    });
    es.addEventListener('status', function (m) {
      var s = JSON.parse(m.data);
      if (s.job === view.job) {
        view.storeStatus = s;
        renderStoreStatus();
      }
    });
  }

  function jobFromHash() {
    var m = /^#job=(.*)$/.exec(location.hash);
    if (!m) return null;
    var name;
    try {
      name = decodeURIComponent(m[1]);
    } catch (e) {
      return null;
    }
    return JOB_NAME.test(name) ? name : null;
  }

  function selectJob(name) {
    if (!JOB_NAME.test(name)) return;
    if (location.hash !== '#job=' + name) location.hash = '#job=' + name;
    else if (view.job !== name) connect(name);
  }

  window.addEventListener('hashchange', function () {
    var job = jobFromHash();
    if (job !== view.job) connect(job);
  });

  function selectTask(id) {
    view.selectedTask = id;
    cy.batch(function () {
      cy.edges('.labelled').removeClass('labelled');
      if (id !== null) cy.getElementById('t' + id).connectedEdges().addClass('labelled');
    });
    renderDetails();
  }

  cy.on('tap', 'node', function (e) {
    selectTask(e.target.data('task'));
  });
  cy.on('tap', function (e) {
    if (e.target === cy) selectTask(null);
  });
  $('fit').addEventListener('click', function () {
    cy.fit(undefined, 24);
  });
  $('relayout').addEventListener('click', function () {
    scheduleLayout();
  });
  $('find-task').addEventListener('change', function (e) {
    var id = Number(e.target.value);
    var ele = cy.getElementById('t' + id);
    if (!Number.isInteger(id) || ele.empty()) return;
    cy.$(':selected').unselect();
    ele.select();
    cy.animate({ center: { eles: ele }, zoom: Math.max(cy.zoom(), 1) }, { duration: 300 });
    selectTask(id);
  });
  $('refresh-jobs').addEventListener('click', function () {
    fetch('/api/jobs', { cache: 'no-store' })
      .then(function (r) {
        return r.ok ? r.json() : Promise.reject(new Error(String(r.status)));
      })
      .then(function (jobs) {
        view.jobs = jobs;
        renderJobs();
      })
      .catch(function () {
        /* the stream's next list will do */
      });
  });

  connect(jobFromHash());
})();
