// chaosrun proctor page: the live room of one exam.
// Vanilla ES2020, no build step. The server sends a strict CSP, so everything the page
// does is wired up here (no inline handlers in index.html).
"use strict";

(() => {
  const TOKEN_KEY = "chaosrun-token";
  const ROW_H = 34;           // must match .row height in proctor.css
  const OVERSCAN = 6;         // rows rendered above and below the visible window
  const RESORT_MS = 1000;     // live re-sorting at most this often, so rows do not jitter
  const BACKOFF_MAX_MS = 15000;
  const LOG_MAX = 400;        // lines kept in the detail view's step log
  const FIXED_COLS = ["160px", "76px", "78px", "88px", "124px"];
  const STEP_COL = 88;

  const $ = (id) => document.getElementById(id);
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  const state = {
    token: null, me: null,
    exams: [], examId: null, operation: null,
    steps: [], stepById: new Map(),
    rows: new Map(),          // env name -> row (the room's source of truth)
    order: [],                // names after filter and sort, in display order
    seq: 0,                   // last event seq applied (Last-Event-ID on reconnect)
    dirty: new Set(), frameQueued: false,
    orderStale: false, lastSort: 0, resortTimer: null,
    counts: { done: 0, running: 0, failed: 0, suspect: 0, shortcuts: 0 }, countsDirty: true,
    rendered: new Map(),      // env name -> row element currently in the DOM
    pool: [],                 // detached row elements for reuse
    stream: null,             // AbortController of the event stream
    detailEnv: null, detailReq: 0, detailRefresh: null,
    held: null,               // events received during a resync, applied after it
  };

  // ---------- small helpers ----------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function setText(e, text) { if (e.textContent !== text) e.textContent = text; }
  function setAttr(e, name, value) {
    if (value === null || value === undefined) { if (e.hasAttribute(name)) e.removeAttribute(name); }
    else if (e.getAttribute(name) !== String(value)) e.setAttribute(name, value);
  }
  const enc = encodeURIComponent;
  const pad2 = (n) => String(n).padStart(2, "0");

  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    if (typeof v === "number") return new Date(v < 1e12 ? v * 1000 : v);
    const d = new Date(v);
    return isNaN(d) ? null : d;
  }
  function hhmm(v) { const d = toDate(v); return d ? `${pad2(d.getHours())}:${pad2(d.getMinutes())}` : "?"; }
  function hhmmss(v) { const d = toDate(v); return d ? `${hhmm(d)}:${pad2(d.getSeconds())}` : "--:--:--"; }
  function fmtDate(v) {
    const d = toDate(v);
    return d ? `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hhmm(d)}` : "";
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "";
    if (s < 10) return `${s.toFixed(1)}s`;
    if (s < 60) return `${Math.round(s)}s`;
    return fmtClock(s);
  }
  function fmtClock(s) { // 4m12s, 1h04m
    s = Math.round(s);
    if (s >= 3600) return `${Math.floor(s / 3600)}h${pad2(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 60)}m${pad2(s % 60)}s`;
  }
  function fmtValue(v) { return typeof v === "string" ? v : JSON.stringify(v); }
  function fmtPoints(p, max) { return `${p ?? "–"} / ${max ?? "–"}`; }
  function keyValues(obj) {
    return Object.entries(obj || {}).map(([k, v]) => `${k}: ${fmtValue(v)}`);
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, "server not reachable");
    }
    let data = null;
    try { data = await res.json(); } catch (e) { /* empty or not JSON */ }
    if (res.status === 401 && path !== "/v1/whoami") sessionExpired();
    if (!res.ok) throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`);
    return data;
  }

  // ---------- login ----------

  async function start() {
    bindUi();
    // Kiosk mode: ?token=... is stored, then removed from the address bar and history.
    const params = new URLSearchParams(location.search);
    if (params.has("token")) {
      sessionStorage.setItem(TOKEN_KEY, params.get("token"));
      params.delete("token");
      const q = params.toString();
      history.replaceState(history.state, "", location.pathname + (q ? `?${q}` : "") + location.hash);
    }
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) await login(token); else showLogin("");
  }

  async function login(token) {
    state.token = token;
    let me;
    try {
      me = await api("/v1/whoami");
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      showLogin(e.status === 401 || e.status === 403 ? "token not accepted" : e.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.me = me;
    $("login-view").hidden = true;
    $("app").hidden = false;
    $("token").value = "";
    $("whoami").textContent = `${me.name} (${me.role})`;
    for (const e of document.querySelectorAll(".operator-only")) e.hidden = me.role !== "operator";
    await loadExams();
  }

  function showLogin(error) {
    $("app").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = error;
    $("token").focus();
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    resetSession();
    showLogin("");
  }

  function sessionExpired() {
    sessionStorage.removeItem(TOKEN_KEY);
    resetSession();
    showLogin("token not accepted");
  }

  function resetSession() {
    stopEvents();
    closeDetail();
    state.token = null; state.me = null; state.examId = null; state.exams = [];
    clearRoom();
  }

  // ---------- exams ----------

  function examFromHash() {
    const m = /(?:^#|&)exam=([^&]*)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  async function loadExams() {
    let data;
    try { data = await api("/v1/exams"); } catch (e) { if (e.status !== 401) notice(`Exams: ${e.message}`); return; }
    state.exams = data.exams || [];
    const select = $("exam");
    const labels = state.exams.map((x) => [x.id, `${x.name} · ${fmtDate(x.created)} · ${x.environments} env`]);
    const signature = JSON.stringify(labels);
    if (select.dataset.signature !== signature) { // rebuilding an open <select> would close it
      select.dataset.signature = signature;
      select.replaceChildren(...labels.map(([id, label]) => {
        const o = el("option", null, label);
        o.value = id;
        return o;
      }));
    }
    if (!state.exams.length) {
      clearRoom();
      showEmpty("No exams on this server yet.");
      return;
    }
    const ids = new Set(state.exams.map((x) => x.id));
    const wanted = [examFromHash(), state.examId, state.exams[0].id].find((id) => id && ids.has(id));
    select.value = wanted;
    if (wanted !== state.examId) await selectExam(wanted);
  }

  async function selectExam(id) {
    stopEvents();
    closeDetail();
    state.examId = id;
    $("exam").value = id;
    if (examFromHash() !== id) history.replaceState(history.state, "", `#exam=${enc(id)}`);
    await loadRoom();
  }

  // ---------- room state ----------

  function clearRoom() {
    state.rows.clear(); state.order = []; state.steps = []; state.stepById.clear();
    state.counts = { done: 0, running: 0, failed: 0, suspect: 0, shortcuts: 0 };
    state.countsDirty = true; state.seq = 0; state.held = null;
    setOperation(null);
    rebuildColumns();
    rebuildOrder();
    scheduleFrame();
  }

  // The snapshot of the room. With resync, the rows are refreshed in place (scroll position,
  // sort and the stream are kept) and events arriving meanwhile are held back, then replayed.
  async function loadRoom({ resync = false } = {}) {
    const id = state.examId;
    if (resync) state.held = state.held || [];
    let room;
    try { room = await api(`/v1/exams/${enc(id)}/room`); } catch (e) {
      if (e.status !== 401) notice(`Room: ${e.message}`);
      if (resync) replayHeld(-Infinity);
      return;
    }
    if (id !== state.examId) return; // the user picked another exam meanwhile
    if (!resync) clearRoom();
    setOperation(room.exam && room.exam.operation);
    const stepsAdded = addSteps(room.steps || []);
    const seen = new Set();
    for (const r of room.environments || []) {
      seen.add(r.name);
      const row = ensureRow(r.name);
      Object.assign(row, r, { signals: r.signals || [], shortcuts: r.shortcuts || [], cells: r.cells || {} });
      changed(row);
    }
    for (const row of [...state.rows.values()]) if (!seen.has(row.name)) removeRow(row);
    if (stepsAdded || !resync) rebuildColumns();
    rebuildOrder();
    showEmpty(state.rows.size ? "" : "No environments in this exam yet.");
    if (resync) replayHeld(room.seq || 0);
    else {
      state.seq = room.seq || 0;
      connectEvents();
    }
  }

  function replayHeld(afterSeq) {
    const held = state.held || [];
    state.held = null;
    for (const ev of held) if (!(ev.seq <= afterSeq)) applyEvent(ev);
  }

  function removeRow(row) {
    row.state = "removed"; row.integrity = null; row.shortcuts = [];
    changed(row); // takes the row out of the counters
    state.rows.delete(row.name);
    state.dirty.delete(row.name);
    state.orderStale = true;
  }

  function ensureRow(name) {
    let row = state.rows.get(name);
    if (!row) {
      row = { name, state: "waiting", points: null, max_points: null, integrity: null,
              signals: [], shortcuts: [], penalty: null, zeroed: false, cells: {}, _flags: 0 };
      state.rows.set(name, row);
      state.orderStale = true;
      state.countsDirty = true;
    }
    return row;
  }

  const FLAG = { done: 1, running: 2, failed: 4, suspect: 8, shortcuts: 16 };
  function rowFlags(row) {
    return (row.state === "done" ? FLAG.done : 0) | (row.state === "running" ? FLAG.running : 0)
      | (row.state === "failed" ? FLAG.failed : 0) | (row.integrity === "suspect" ? FLAG.suspect : 0)
      | (row.shortcuts && row.shortcuts.length ? FLAG.shortcuts : 0);
  }

  // Called after every change to a row: counters are kept incrementally, the row is
  // repainted in the next frame if visible, and the order is refreshed (throttled).
  function changed(row) {
    const now = rowFlags(row);
    const diff = now ^ row._flags;
    if (diff) {
      for (const [k, bit] of Object.entries(FLAG)) if (diff & bit) state.counts[k] += now & bit ? 1 : -1;
      row._flags = now;
      state.countsDirty = true;
    }
    state.dirty.add(row.name);
    if (sortOrFilterActive()) state.orderStale = true;
    scheduleFrame();
  }

  function addSteps(steps) {
    let added = false;
    for (const s of steps) {
      const known = state.stepById.get(s.id);
      if (known) { if (known.points !== s.points) { known.points = s.points; added = true; } continue; }
      const step = { id: s.id, section: s.section || "steps", points: s.points };
      state.steps.push(step);
      state.stepById.set(step.id, step);
      added = true;
    }
    // chaos steps first, then verify probes; Array.sort is stable, so each keeps its order
    state.steps.sort((a, b) => (a.section === "verify") - (b.section === "verify"));
    return added;
  }

  // ---------- live events ----------

  function setLive(on) {
    const live = $("live");
    live.textContent = on ? "live" : "reconnecting";
    live.className = `live ${on ? "on" : "off"}`;
  }

  function stopEvents() {
    if (state.stream) state.stream.abort();
    state.stream = null;
    setLive(false);
  }

  function connectEvents() {
    stopEvents();
    const ctl = new AbortController();
    state.stream = ctl;
    streamLoop(state.examId, ctl.signal);
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  // EventSource cannot send an Authorization header, hence fetch() and our own parser.
  async function streamLoop(examId, signal) {
    const sse = { retryBase: 1000, delay: 1000 };
    while (!signal.aborted) {
      try {
        const res = await fetch(`/v1/exams/${enc(examId)}/events`, {
          signal, cache: "no-store",
          headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream",
                     "Last-Event-ID": String(state.seq) },
        });
        if (res.status === 401) { sessionExpired(); return; }
        if (res.status === 404) { notice("This exam is no longer on the server."); return; }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        setLive(true);
        sse.fresh = true;
        await readSse(res.body, sse, signal);
      } catch (e) {
        if (signal.aborted) return;
      }
      if (signal.aborted) return;
      setLive(false);
      await sleep(sse.delay, signal);
      sse.delay = Math.min(sse.delay * 2, BACKOFF_MAX_MS);
    }
  }

  async function readSse(body, sse, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const eol = /\r\n|\r|\n/g;
    let buf = "";
    let msg = { event: "", id: null, data: [] };
    const onAbort = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        sse.delay = sse.retryBase; // the connection works: next outage starts at the base delay
        buf += decoder.decode(value, { stream: true });
        let pos = 0;
        for (;;) {
          eol.lastIndex = pos;
          const m = eol.exec(buf);
          if (!m) break;
          if (m[0] === "\r" && m.index === buf.length - 1) break; // may be half of \r\n
          const line = buf.slice(pos, m.index);
          pos = m.index + m[0].length;
          if (line === "") {
            if (msg.data.length) dispatchSse(msg, sse);
            if (signal.aborted) return;
            msg = { event: "", id: null, data: [] };
            continue;
          }
          if (line[0] === ":") continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val[0] === " ") val = val.slice(1);
          if (field === "data") msg.data.push(val);
          else if (field === "event") msg.event = val;
          else if (field === "id") msg.id = val;
          else if (field === "retry" && /^\d+$/.test(val)) sse.retryBase = sse.delay = Math.max(250, +val);
        }
        buf = buf.slice(pos);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  function dispatchSse(msg, sse) {
    let ev;
    try { ev = JSON.parse(msg.data.join("\n")); } catch (e) { return; }
    if (!ev || typeof ev !== "object") return;
    if (!ev.type && msg.event) ev.type = msg.event;
    const seq = Number(ev.seq ?? msg.id);
    const first = sse.fresh;
    sse.fresh = false;
    if (Number.isFinite(seq)) {
      // A stream answers Last-Event-ID with later events only; an older first event means
      // the server numbers afresh (it restarted): start over from a new snapshot.
      if (first && seq < state.seq) { stopEvents(); loadRoom(); return; }
      if (seq <= state.seq) return; // already applied (overlap after a reconnect)
      state.seq = seq;
    }
    if (state.held) state.held.push(ev); // a resync is under way
    else applyEvent(ev);
  }

  function applyEvent(ev) {
    const handler = HANDLERS[ev.type];
    if (handler) handler(ev);
    if (state.detailEnv && (ev.env === state.detailEnv
        || (ev.type === "run_started" && (ev.environments || []).includes(state.detailEnv)))) {
      appendLogLine(ev);
      if (ev.type === "env_ended" || ev.type === "env_graded") refreshDetailSoon();
    }
  }

  function cellOf(ev) {
    const row = ensureRow(ev.env);
    if (!state.stepById.has(ev.step)) {
      if (addSteps([{ id: ev.step, section: ev.section || "steps", points: ev.max_points }])) rebuildColumns();
    }
    return row;
  }

  const HANDLERS = {
    operation_started(ev) {
      setOperation({ id: ev.operation, exam: state.examId, kind: ev.kind, state: "running",
                     params: ev.params, started: ev.at, ended: null, error: null, ok: null });
    },
    operation_ended(ev) {
      const op = state.operation && state.operation.id === ev.operation ? state.operation : {};
      setOperation({ ...op, id: ev.operation, kind: ev.kind || op.kind, state: ev.state,
                     error: ev.error, ok: ev.ok, ended: ev.at });
      // The server has the last word on what a stopped or failed operation left behind.
      loadRoom({ resync: true });
      loadExamsQuietly();
    },
    exam_created(ev) {
      if (addSteps(ev.steps || [])) rebuildColumns();
      for (const name of ev.environments || []) changed(ensureRow(name));
    },
    // The handlers below change a row exactly as the server's room does (server/room.py),
    // so that the live grid and a fresh snapshot always agree.
    run_started(ev) {
      if (addSteps(ev.steps || [])) rebuildColumns();
      for (const name of ev.environments || []) {
        const row = ensureRow(name);
        row.state = "waiting";
        for (const id of Object.keys(row.cells)) {
          const step = state.stepById.get(id);
          if (step && step.section !== ev.section) continue;
          // a watch's next pass: the probe's time to fix stays until the pass says otherwise
          const fix = row.cells[id].time_to_fix;
          if (fix != null) row.cells[id] = { status: null, time_to_fix: fix };
          else delete row.cells[id];
        }
        changed(row);
      }
    },
    step_started(ev) {
      const row = cellOf(ev);
      row.cells[ev.step] = { ...row.cells[ev.step], status: "running" };
      row.state = "running";
      changed(row);
    },
    step_ended(ev) {
      const row = cellOf(ev);
      const prev = row.cells[ev.step] || { time_to_fix: null };
      row.cells[ev.step] = { ...prev, status: ev.status, reason: ev.reason,
                             points: ev.points, max_points: ev.max_points, duration: ev.duration };
      changed(row);
    },
    env_ended(ev) {
      const row = ensureRow(ev.env);
      Object.assign(row, { state: ev.ok ? "done" : "failed", points: ev.points, max_points: ev.max_points });
      changed(row);
    },
    env_graded(ev) {
      const row = ensureRow(ev.env);
      Object.assign(row, { state: ev.ok ? "done" : "failed",
        points: ev.points, max_points: ev.max_points, integrity: ev.integrity,
        signals: ev.signals || [], shortcuts: ev.shortcuts || [], penalty: ev.penalty, zeroed: !!ev.zeroed });
      changed(row);
    },
    time_to_fix(ev) {
      const row = cellOf(ev);
      row.cells[ev.step] = { ...row.cells[ev.step], time_to_fix: ev.seconds,
                             regressed: ev.regressed, passing: ev.passing };
      changed(row);
    },
  };

  let examsReload = null;
  function loadExamsQuietly() {
    clearTimeout(examsReload);
    examsReload = setTimeout(() => { if (state.token) loadExams(); }, 300);
  }

  // ---------- operation status and operator buttons ----------

  function setOperation(op) {
    state.operation = op || null;
    const bar = $("opstatus");
    let text = "no operation yet";
    let cls = "idle";
    if (op && op.state === "running") {
      text = `${op.kind} running since ${hhmm(op.started)}`;
      cls = "running";
    } else if (op) {
      text = `${op.kind} ${op.state}`;
      if (op.ended) text += ` at ${hhmm(op.ended)}`;
      if (op.error) text += `: ${op.error}`;
      else if (op.state === "done" && op.ok === false) text += " (not all environments passed)";
      cls = op.state === "done" && op.ok !== false ? "done" : "failed";
    }
    bar.textContent = text;
    bar.className = `opstatus ${cls}`;
    bar.title = op ? `operation ${op.id}${op.params ? `\nparams: ${JSON.stringify(op.params)}` : ""}` : "";
    $("stop").disabled = !(op && op.state === "running");
    $("grid").classList.toggle("idle", !(op && op.state === "running"));
  }

  async function operate(label, path, body, done = "started") {
    try {
      const op = await api(path, { method: "POST", body });
      // The answer can arrive after the stream told us the operation ended (a quick
      // restore, a stop): never turn a finished operation back into a running one.
      const cur = state.operation;
      const stale = cur && op && cur.id === op.id && cur.state !== "running";
      if (op && op.id && op.kind && !stale) setOperation(op);
      notice(`${label}: ${done}${op && op.id ? ` (operation ${op.id})` : ""}`, "info");
    } catch (e) {
      if (e.status !== 401) notice(`${label}: ${e.message}`);
    }
  }

  function examPath(suffix) { return `/v1/exams/${enc(state.examId)}/${suffix}`; }

  // ---------- notices ----------

  function notice(text, kind = "error") {
    const area = $("notice");
    const box = el("div", `notice ${kind}`);
    box.append(el("span", null, text));
    const close = el("button", "close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", () => box.remove());
    box.append(close);
    area.append(box);
    while (area.children.length > 4) area.firstElementChild.remove();
    if (kind === "info") setTimeout(() => box.remove(), 6000);
  }

  function showEmpty(text) {
    const p = $("grid-empty");
    p.textContent = text;
    p.hidden = !text;
  }

  // ---------- the grid: columns, order, virtualized rows ----------

  function sortOrFilterActive() {
    return $("sort").value !== "name" || $("failed-only").checked || $("suspect-only").checked;
  }

  function rebuildColumns() {
    const grid = $("grid");
    const cols = [...FIXED_COLS, ...state.steps.map(() => `${STEP_COL}px`)];
    grid.style.setProperty("--cols", cols.join(" "));
    grid.style.setProperty("--row-w", `${cols.reduce((sum, c) => sum + parseInt(c, 10), 0)}px`);
    const head = $("grid-head");
    const fixed = ["name", "state", "points", "integrity", "shortcuts"].map((t, i) => el("span", `h h-${i}`, t));
    const firstVerify = state.steps.findIndex((s) => s.section === "verify");
    const stepHeads = state.steps.map((s, i) => {
      const h = el("span", `h h-step ${s.section}${i === firstVerify ? " section-start" : ""}`);
      h.title = `${s.id}\n${s.section === "verify" ? "verify probe" : "chaos step"}${s.points ? `, ${s.points} points` : ""}`;
      h.append(el("span", "h-id mono", s.id),
        el("span", "h-pts", s.points ? `${s.points} pt` : s.section === "verify" ? "probe" : "chaos"));
      return h;
    });
    head.replaceChildren(...fixed, ...stepHeads);
    // Row elements have one cell per column: the old ones no longer fit.
    for (const e of state.rendered.values()) e.remove();
    state.rendered.clear();
    state.pool = [];
    scheduleFrame();
  }

  const COMPARE = {
    name: (a, b) => collator.compare(a.name, b.name),
    points: (a, b) => (a.points == null) - (b.points == null) || (a.points ?? 0) - (b.points ?? 0)
      || collator.compare(a.name, b.name),
    failed: (a, b) => failRank(a) - failRank(b) || collator.compare(a.name, b.name),
    suspect: (a, b) => suspectRank(a) - suspectRank(b) || collator.compare(a.name, b.name),
  };
  function failRank(row) {
    if (row.state === "failed") return 0;
    return Object.values(row.cells).some((c) => c.status === "failed" || c.status === "timeout") ? 1 : 2;
  }
  function suspectRank(row) {
    return (row.integrity === "suspect" ? 0 : 2) + (row.shortcuts.length ? 0 : 1);
  }

  function rebuildOrder() {
    const q = $("filter").value.trim().toLowerCase();
    const failedOnly = $("failed-only").checked;
    const suspectOnly = $("suspect-only").checked;
    const list = [];
    for (const row of state.rows.values()) {
      if (q && !row.name.toLowerCase().includes(q)) continue;
      if (failedOnly && row.state !== "failed") continue;
      if (suspectOnly && row.integrity !== "suspect") continue;
      list.push(row);
    }
    list.sort(COMPARE[$("sort").value] || COMPARE.name);
    state.order = list.map((r) => r.name);
    state.orderStale = false;
    state.lastSort = performance.now();
    $("grid-body").style.height = `${state.order.length * ROW_H}px`;
    $("shown").textContent = list.length === state.rows.size ? "" : `${list.length} of ${state.rows.size} shown`;
    scheduleFrame();
  }

  function scheduleFrame() {
    if (state.frameQueued) return;
    state.frameQueued = true;
    requestAnimationFrame(paint);
  }

  // One batch per frame: refresh the order if due, then render exactly the visible window,
  // reusing elements and repainting only rows that changed since the last frame.
  function paint() {
    state.frameQueued = false;
    if (state.orderStale) {
      const wait = RESORT_MS - (performance.now() - state.lastSort);
      if (wait <= 0) rebuildOrder();
      else if (!state.resortTimer) {
        state.resortTimer = setTimeout(() => { state.resortTimer = null; scheduleFrame(); }, wait);
      }
    }
    const grid = $("grid");
    const body = $("grid-body");
    const top = grid.scrollTop - body.offsetTop;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(state.order.length, Math.ceil((top + grid.clientHeight) / ROW_H) + OVERSCAN);
    const wanted = new Map();
    for (let i = first; i < last; i++) wanted.set(state.order[i], i);

    for (const [name, e] of state.rendered) {
      if (wanted.has(name)) continue;
      e.remove();
      state.rendered.delete(name);
      if (state.pool.length < 64) state.pool.push(e);
    }
    for (const [name, i] of wanted) {
      const row = state.rows.get(name);
      let e = state.rendered.get(name);
      if (!e) {
        e = state.pool.pop() || createRowEl();
        fillRow(e, row);
        body.append(e);
        state.rendered.set(name, e);
      } else if (state.dirty.has(name)) {
        fillRow(e, row);
      }
      if (e._index !== i) {
        e.style.transform = `translateY(${i * ROW_H}px)`;
        e._index = i;
      }
    }
    if (state.detailEnv && state.dirty.has(state.detailEnv)) renderSummary();
    state.dirty.clear();
    if (state.countsDirty) paintCounts();
  }

  function paintCounts() {
    state.countsDirty = false;
    setText($("count-total"), String(state.rows.size));
    setText($("count-done"), String(state.counts.done));
    setText($("count-running"), String(state.counts.running));
    setText($("count-failed"), String(state.counts.failed));
    setText($("count-suspect"), String(state.counts.suspect));
    setText($("count-shortcuts"), String(state.counts.shortcuts));
  }

  function createRowEl() {
    const e = el("div", "row");
    e._index = -1;
    e._name = el("span", "c-name mono");
    e._state = el("span", "c-state");
    e._points = el("span", "points mono");
    e._integrity = el("span", "c-integrity");
    e._shortcuts = el("span", "c-shortcuts");
    e.append(e._name, e._state, e._points, e._integrity, e._shortcuts);
    const firstVerify = state.steps.findIndex((s) => s.section === "verify");
    e._cells = state.steps.map((s, i) => {
      const c = el("span", `cell${i === firstVerify ? " section-start" : ""}`);
      c.dataset.step = s.id;
      c._main = el("span", "v");
      c._fix = el("span", "fix");
      c.append(c._main, c._fix);
      e.append(c);
      return c;
    });
    return e;
  }

  function fillRow(e, row) {
    const shortcuts = row.shortcuts || [];
    let cls = "row";
    if (row.integrity === "suspect") cls += " suspect";
    if (shortcuts.length) cls += " shortcut";
    if (row.name === state.detailEnv) cls += " selected";
    if (e.className !== cls) e.className = cls;
    setAttr(e, "data-env", row.name);
    setAttr(e, "data-state", row.state);

    setText(e._name, row.name);
    setAttr(e._name, "title", row.name);
    setText(e._state, row.state);
    setText(e._points, fmtPoints(row.points, row.max_points));
    e._points.classList.toggle("zeroed", !!row.zeroed);
    setAttr(e._points, "title", row.zeroed ? `scored 0: ${typeof row.zeroed === "string" ? row.zeroed : "--strict"}`
      : row.penalty ? `penalty ${row.penalty}` : null);

    if (row.integrity === "suspect") {
      setText(e._integrity, "SUSPECT");
      e._integrity.className = "c-integrity badge badge-suspect";
      setAttr(e._integrity, "title", (row.signals || []).map(
        (s) => `${s.step ? `${s.step}: ` : ""}${s.signal}${s.detail ? ` (${s.detail})` : ""}`).join("\n"));
    } else {
      setText(e._integrity, row.integrity || "–");
      e._integrity.className = "c-integrity muted";
      setAttr(e._integrity, "title", null);
    }

    if (shortcuts.length) {
      setText(e._shortcuts, `${shortcuts.length} shortcut${shortcuts.length === 1 ? "" : "s"}`
        + (row.penalty ? ` −${row.penalty}` : ""));
      e._shortcuts.className = "c-shortcuts badge badge-shortcut";
      setAttr(e._shortcuts, "title", shortcuts.map((s) => keyValues(s).join(", ")).join("\n"));
    } else {
      setText(e._shortcuts, "");
      e._shortcuts.className = "c-shortcuts";
      setAttr(e._shortcuts, "title", null);
    }

    state.steps.forEach((step, i) => fillCell(e._cells[i], step, row.cells[step.id]));
  }

  const STATUS_LABEL = { ok: "ok", failed: "failed", timeout: "timeout", skipped: "skipped", running: "…", interrupted: "cut" };

  function fillCell(c, step, cell) {
    const status = (cell && cell.status) || "none";
    setAttr(c, "data-status", status);
    setAttr(c, "data-points", cell && cell.points != null ? cell.points : null);
    let main = "";
    if (status === "running") main = STATUS_LABEL.running;
    else if (status !== "none" && status !== "skipped" && step.section === "verify" && cell.max_points) {
      main = `${cell.points ?? 0}/${cell.max_points}`;
    } else if (status !== "none") main = STATUS_LABEL[status] || status;
    setText(c._main, main);
    const fix = cell && cell.time_to_fix != null ? `fixed ${fmtClock(cell.time_to_fix)}` : "";
    setText(c._fix, fix);
    c.classList.toggle("regressed", !!(cell && cell.regressed));

    const tip = [`${step.id}: ${status === "none" ? "not started" : status}`];
    if (cell) {
      if (cell.points != null) tip.push(`points: ${cell.points} / ${cell.max_points ?? "?"}`);
      if (cell.reason) tip.push(`reason: ${cell.reason}`);
      if (cell.duration != null) tip.push(`duration: ${fmtDuration(cell.duration)}`);
      if (cell.time_to_fix != null) {
        tip.push(`time to fix: ${fmtClock(cell.time_to_fix)}`
          + (cell.regressed ? ", failed again later" : "") + (cell.passing === false ? ", failing now" : ""));
      }
    }
    setAttr(c, "title", tip.join("\n"));
  }

  // ---------- detail view ----------

  function openDetail(name) {
    const old = state.detailEnv;
    state.detailEnv = name;
    if (old) state.dirty.add(old);
    state.dirty.add(name);
    scheduleFrame();
    $("detail").hidden = false;
    $("app").classList.add("with-detail");
    $("detail-name").textContent = name;
    renderSummary();
    for (const id of ["detail-flags", "detail-steps", "detail-audit"]) {
      $(id).replaceChildren(el("p", "muted", "loading…"));
    }
    $("detail-log").replaceChildren();
    loadDetail();
  }

  async function loadDetail() {
    const name = state.detailEnv;
    const req = ++state.detailReq;
    let d;
    try {
      d = await api(examPath(`environments/${enc(name)}`));
    } catch (e) {
      if (req === state.detailReq) $("detail-steps").replaceChildren(el("p", "error-text", e.message));
      return;
    }
    if (req !== state.detailReq || name !== state.detailEnv) return;
    renderFlags(d.row || state.rows.get(name) || {});
    renderSteps(d.steps || []);
    const log = $("detail-log");
    log.replaceChildren();
    const events = [...(d.events || [])].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    for (const ev of events) appendLogLine(ev);
    renderAudit(d.audit || []);
  }

  function refreshDetailSoon() {
    clearTimeout(state.detailRefresh);
    state.detailRefresh = setTimeout(() => { if (state.detailEnv) loadDetail(); }, 700);
  }

  function closeDetail() {
    if (!state.detailEnv) { $("detail").hidden = true; $("app").classList.remove("with-detail"); return; }
    state.dirty.add(state.detailEnv);
    state.detailEnv = null;
    state.detailReq++;
    clearTimeout(state.detailRefresh);
    $("detail").hidden = true;
    $("app").classList.remove("with-detail");
    scheduleFrame();
  }

  function renderSummary() {
    const row = state.rows.get(state.detailEnv);
    const box = $("detail-summary");
    if (!row) { box.replaceChildren(); return; }
    const parts = [
      el("span", `state-pill pill-${row.state}`, row.state),
      el("span", "mono big", fmtPoints(row.points, row.max_points)),
    ];
    if (row.integrity === "suspect") parts.push(el("span", "badge badge-suspect", "SUSPECT"));
    if (row.shortcuts.length) parts.push(el("span", "badge badge-shortcut", `${row.shortcuts.length} shortcuts`));
    if (row.penalty) parts.push(el("span", "muted", `penalty ${row.penalty}`));
    if (row.zeroed) {
      const z = el("span", "badge badge-suspect", "ZEROED");
      if (typeof row.zeroed === "string") z.title = row.zeroed;
      parts.push(z);
    }
    box.replaceChildren(...parts);
  }

  function renderFlags(row) {
    const box = $("detail-flags");
    const out = [];
    const signals = row.signals || [];
    const shortcuts = row.shortcuts || [];
    out.push(el("p", row.integrity === "suspect" ? "flag-title suspect-text" : "flag-title",
      `integrity: ${row.integrity || "not graded"}`));
    if (signals.length) {
      const ul = el("ul", "flags mono");
      for (const s of signals) {
        const li = el("li");
        li.append(el("b", null, s.signal), el("span", "muted", s.step ? ` on ${s.step}` : ""));
        if (s.detail) li.append(el("div", null, s.detail));
        ul.append(li);
      }
      out.push(ul);
    }
    out.push(el("p", shortcuts.length ? "flag-title shortcut-text" : "flag-title",
      shortcuts.length ? `${shortcuts.length} shortcut${shortcuts.length === 1 ? "" : "s"}` : "no shortcuts"));
    // Shortcuts are opaque to the page: every field is shown, as compact "key value" pairs.
    for (const s of shortcuts) {
      const box = el("div", "shortcut-box mono");
      for (const [k, v] of Object.entries(s)) {
        const pair = el("span", "pair");
        pair.append(el("span", "k", k), el("span", null, fmtValue(v)));
        box.append(pair);
      }
      out.push(box);
    }
    box.replaceChildren(...out);
  }

  function renderSteps(steps) {
    const box = $("detail-steps");
    if (!steps.length) { box.replaceChildren(el("p", "muted", "no report yet")); return; }
    box.replaceChildren(...steps.map((s) => {
      const div = el("div", "dstep");
      div.dataset.step = s.id;
      const head = el("div", "dstep-head");
      head.append(el("span", "mono", s.id), el("span", `state-pill pill-${s.status}`, s.status));
      if (s.max_points) head.append(el("span", "mono", `${s.points ?? 0} / ${s.max_points}`));
      if (s.duration != null) head.append(el("span", "muted", fmtDuration(s.duration)));
      div.append(head);
      if (s.reason) div.append(el("p", "reason", s.reason));
      const entries = Object.entries(s.result || {});
      if (entries.length) {
        const dl = el("dl", "kv mono");
        for (const [k, v] of entries) dl.append(el("dt", null, k), el("dd", null, fmtValue(v)));
        div.append(dl);
      }
      return div;
    }));
  }

  function describeEvent(ev) {
    switch (ev.type) {
      case "run_started": return `${ev.section} started`;
      case "step_started": return `${ev.step} started`;
      case "step_ended": {
        const pts = ev.max_points ? ` ${ev.points ?? 0}/${ev.max_points}` : "";
        const dur = ev.duration != null ? ` in ${fmtDuration(ev.duration)}` : "";
        return `${ev.step} ${ev.status}${pts}${dur}${ev.reason ? ` — ${ev.reason}` : ""}`;
      }
      case "env_ended": return `ended ${ev.ok ? "ok" : "failed"} ${fmtPoints(ev.points, ev.max_points)}`;
      case "env_graded": {
        const sc = (ev.shortcuts || []).length;
        return `graded ${fmtPoints(ev.points, ev.max_points)}, integrity ${ev.integrity || "-"}`
          + (sc ? `, ${sc} shortcut${sc === 1 ? "" : "s"}` : "") + (ev.zeroed ? ", zeroed" : "");
      }
      case "time_to_fix": return `${ev.step} fixed after ${fmtClock(ev.seconds)}`
        + (ev.regressed ? ", failed again later" : "") + (ev.passing === false ? ", failing now" : "");
      default: return ev.type || "event";
    }
  }

  function appendLogLine(ev) {
    const log = $("detail-log");
    const li = el("li", `ev ev-${ev.type}${ev.status ? ` st-${ev.status}` : ""}`);
    li.append(el("span", "ts", hhmmss(ev.at)), el("span", null, describeEvent(ev)));
    log.append(li);
    while (log.children.length > LOG_MAX) log.firstElementChild.remove();
  }

  function renderAudit(logs) {
    const box = $("detail-audit");
    if (!logs.length) { box.replaceChildren(el("p", "muted", "no audit records")); return; }
    const out = [];
    for (const { log, records } of logs) {
      out.push(el("h4", "mono", log));
      // `event` first so the eye finds what each record is; the rest as the log has it.
      const lines = (records || []).map((r) => JSON.stringify({ event: r.event, ...r }));
      out.push(el("pre", "audit mono", lines.join("\n") || "(none)"));
    }
    box.replaceChildren(...out);
  }

  // ---------- wiring ----------

  function bindUi() {
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value.trim();
      if (token) login(token);
    });
    $("logout").addEventListener("click", (e) => { e.preventDefault(); logout(); });
    $("exam").addEventListener("change", (e) => selectExam(e.target.value));
    // New exams appear in the picker without a reload.
    setInterval(() => { if (state.token && document.activeElement !== $("exam")) loadExams(); }, 30000);
    window.addEventListener("hashchange", () => {
      const id = examFromHash();
      if (id && id !== state.examId && state.exams.some((x) => x.id === id)) selectExam(id);
    });

    $("filter").addEventListener("input", rebuildOrder);
    for (const id of ["failed-only", "suspect-only", "sort"]) $(id).addEventListener("change", rebuildOrder);

    $("grid").addEventListener("scroll", scheduleFrame, { passive: true });
    window.addEventListener("resize", scheduleFrame);
    $("grid-body").addEventListener("click", (e) => {
      const row = e.target.closest(".row");
      if (row) openDetail(row.dataset.env);
    });

    $("detail-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && state.detailEnv) closeDetail();
      else if (e.key === "/" && !/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) {
        e.preventDefault();
        $("filter").focus();
      }
    });

    $("run-all").addEventListener("click", () => operate("Run", examPath("run"), {}));
    $("verify-all").addEventListener("click", () => operate("Verify all", examPath("verify"), {}));
    $("stop").addEventListener("click", () => {
      const op = state.operation;
      if (!op || op.state !== "running") { notice("Stop: no operation is running"); return; }
      operate("Stop", examPath(`operations/${enc(op.id)}/stop`), {}, `stopping ${op.kind}`);
    });
    $("verify-one").addEventListener("click", () => {
      const env = state.detailEnv;
      if (env) operate(`Verify ${env}`, examPath("verify"), { limit: env });
    });
    $("restore-one").addEventListener("click", () => {
      const env = state.detailEnv;
      if (env && confirm(`Restore ${env}? This undoes the chaos on its machines.`)) {
        operate(`Restore ${env}`, examPath("restore"), { limit: env });
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
