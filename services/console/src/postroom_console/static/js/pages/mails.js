// The mail list: newest first, cursor-paged (infinite scroll, never everything at once),
// filters kept in the URL, rows inserted and updated live from the WebSocket feed.

import { api } from "../api.js";
import {
  LABELS, STATUSES, clear, confidenceCell, debounce, emptyRow, fmtMs, h, labelBadge,
  statusBadge, timeCell, toast,
} from "../dom.js";

const PAGE_SIZE = 100;
// A page left open all day keeps at most this many rows: while the operator looks at the top,
// rows beyond it are dropped from the bottom (scrolling down fetches them again).
const MAX_ROWS = 2000;
const FILTERS = ["tenant", "label", "status", "sender", "q", "since", "until"];

// The list as it was when the page was left, so "back" from a mail shows the same rows at the
// same scroll position instead of starting over at the top.
let kept = null;
let lastListHash = "#/mails";
// The filter field being typed in when the filters were applied (the page is mounted anew
// with the new URL): focus and caret go back to it, so typing goes on uninterrupted.
let refocus = null;

/** The list URL with the filters last used (the detail's back link). */
export function listHref() {
  return lastListHash;
}

export function tenantsOf(body) {
  const list = Array.isArray(body) ? body : body?.items || body?.tenants || [];
  return list.map((t) => (typeof t === "string" ? { slug: t, name: t } : { ...t, slug: t.slug || t.tenant || t.id || t.name }));
}

function dayStart(date) {
  // <input type=date> gives YYYY-MM-DD; the API takes ISO-8601 instants (local midnight).
  const d = new Date(`${date}T00:00:00`);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** API parameters from the filters in the URL. */
function apiParams(filters) {
  const params = {};
  for (const name of ["tenant", "label", "status", "sender", "q"]) if (filters[name]) params[name] = filters[name];
  const since = filters.since && dayStart(filters.since);
  if (since) params.since = since.toISOString();
  const until = filters.until && dayStart(filters.until);
  if (until) params.until = new Date(until.getTime() + 86_400_000).toISOString(); // the whole day
  return params;
}

/** Would the server list this mail under these filters? (for rows arriving live) */
export function matches(filters, mail) {
  if (filters.tenant && mail.tenant !== filters.tenant) return false;
  if (filters.label && mail.label !== filters.label) return false; // the model's label, as the API filters
  if (filters.status && mail.status !== filters.status) return false;
  if (filters.sender) {
    const needle = filters.sender.toLowerCase();
    const from = `${mail.from || ""} ${mail.envelope_from || ""} ${mail.header_from || ""}`.toLowerCase();
    if (!from.includes(needle)) return false;
  }
  if (filters.q && !(mail.subject || "").toLowerCase().includes(filters.q.toLowerCase())) return false;
  const at = Date.parse(mail.received_at);
  const since = filters.since && dayStart(filters.since);
  if (since && at < since.getTime()) return false;
  const until = filters.until && dayStart(filters.until);
  if (until && at >= until.getTime() + 86_400_000) return false;
  return true;
}

/** Newest first; ties by mail_key descending, as the API's keyset order. */
function newerThan(a, b) {
  const ta = Date.parse(a.received_at);
  const tb = Date.parse(b.received_at);
  if (ta !== tb) return ta > tb;
  return a.mail_key > b.mail_key;
}

function recipients(to) {
  if (!to) return "";
  return Array.isArray(to) ? to.join(", ") : String(to);
}

export function mount(view, { query, session, navigate, live }) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || ""]));
  lastListHash = location.hash.startsWith("#/mails") ? location.hash : "#/mails";
  const filterKey = JSON.stringify(filters);
  const showTenant = session.admin;
  const rows = new Map(); // mail_key -> {mail, tr}
  let nextCursor = null;
  let tailUntil = null; // after a trim: the next page is the mail older than this
  let done = false;
  let loading = null; // AbortController of the page being fetched
  let generation = 0; // bumps on reload so a late page of an old query is dropped
  let selected = null; // mail_key
  let unseen = 0;

  // ---------- filters ----------
  const field = (name, el) => {
    el.id = `filter-${name}`;
    el.name = name;
    el.value = filters[name];
    return el;
  };
  const option = (value, text, current) => h("option", { value, selected: value === current }, text);
  const tenantSelect = field("tenant", h("select", { "aria-label": "Tenant" },
    option("", "All tenants", filters.tenant),
    filters.tenant ? option(filters.tenant, filters.tenant, filters.tenant) : null));
  const labelSelect = field("label", h("select", { "aria-label": "Label" },
    option("", "Any label", filters.label), LABELS.map((l) => option(l, l, filters.label))));
  const statusSelect = field("status", h("select", { "aria-label": "Status" },
    option("", "Any status", filters.status), STATUSES.map((s) => option(s, s, filters.status))));
  const sender = field("sender", h("input", { type: "search", placeholder: "Sender", "aria-label": "Sender contains", autocomplete: "off" }));
  const search = field("q", h("input", { type: "search", placeholder: "Search subjects  ( / )", "aria-label": "Subject contains", autocomplete: "off" }));
  const since = field("since", h("input", { type: "date", "aria-label": "Received from (day)" }));
  const until = field("until", h("input", { type: "date", "aria-label": "Received until (day)" }));
  const reset = h("button", { type: "reset", class: "ghost", title: "Clear all filters" }, "Clear");
  const form = h("form", { id: "mail-filters", class: "filters", role: "search" },
    search, sender, showTenant ? tenantSelect : null, labelSelect, statusSelect,
    h("span", { class: "range" }, since, h("span", { class: "dash" }, "–"), until), reset);

  function applyFilters() {
    const params = new URLSearchParams();
    for (const el of form.elements) {
      if (el.name && el.value) params.set(el.name, el.value.trim());
    }
    const qs = params.toString();
    kept = null;
    const active = document.activeElement;
    refocus = active && form.contains(active) && active.id
      ? { id: active.id, caret: active.type === "search" ? active.selectionStart : null } : null;
    navigate(`/mails${qs ? `?${qs}` : ""}`, { replace: true });
  }
  const applySoon = debounce(applyFilters, 350);
  form.addEventListener("input", (e) => (e.target.type === "search" ? applySoon() : null));
  form.addEventListener("change", (e) => (e.target.type === "search" ? null : applyFilters()));
  form.addEventListener("submit", (e) => { e.preventDefault(); applySoon.cancel(); applyFilters(); });
  form.addEventListener("reset", (e) => {
    e.preventDefault();
    applySoon.cancel();
    kept = null;
    navigate("/mails", { replace: true });
  });

  if (showTenant) {
    api("/api/v1/tenants").then((body) => {
      clear(tenantSelect).append(option("", "All tenants", filters.tenant));
      for (const t of tenantsOf(body)) tenantSelect.append(option(t.slug, t.name && t.name !== t.slug ? `${t.slug} · ${t.name}` : t.slug, filters.tenant));
      tenantSelect.value = filters.tenant;
    }).catch(() => { /* the filter still works by slug */ });
  }

  // ---------- table ----------
  const headRow = h("tr", {},
    h("th", { class: "col-time", scope: "col" }, "Received"),
    showTenant ? h("th", { class: "col-tenant", scope: "col" }, "Tenant") : null,
    h("th", { class: "col-from", scope: "col" }, "From"),
    h("th", { class: "col-subject", scope: "col" }, "Subject"),
    h("th", { class: "col-label", scope: "col" }, "Label"),
    h("th", { class: "col-status", scope: "col" }, "Status"),
    h("th", { class: "col-ms num", scope: "col", title: "received → classified" }, "Took"),
  );
  const columns = headRow.children.length;
  const tbody = h("tbody", {});
  const table = h("table", { id: "mail-table", class: "grid mails" }, h("thead", {}, headRow), tbody);
  const footer = h("p", { id: "mail-list-status", class: "list-status", "aria-live": "polite" }, "Loading…");
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  const newPill = h("button", { id: "new-mails", class: "new-pill", type: "button", hidden: true }, "");
  newPill.addEventListener("click", () => {
    window.scrollTo({ top: 0, behavior: "smooth" });
  });

  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Mails"), form),
    newPill,
    h("div", { class: "table-wrap" }, table),
    footer,
    sentinel,
  );

  function renderRow(mail) {
    const href = `#/mails/${encodeURIComponent(mail.mail_key)}`;
    const docs = Number(mail.documents || 0);
    const tr = h("tr", {
      "data-mail-key": mail.mail_key,
      "data-sequence": mail.sequence ?? "",
      "data-status": mail.status || "",
      class: [selected === mail.mail_key && "selected", mail.status === "failed" && "failed"],
    },
    h("td", { class: "col-time" }, timeCell(mail.received_at)),
    showTenant ? h("td", { class: "col-tenant" }, mail.tenant) : null,
    h("td", { class: "col-from", title: `${mail.from || ""} → ${recipients(mail.to)}` }, mail.from || ""),
    h("td", { class: "col-subject" },
      h("a", { href, class: "subject", title: mail.subject || "" }, mail.subject || "(no subject)"),
      docs ? h("span", { class: "chip", title: `${docs} document${docs > 1 ? "s" : ""}` }, `${docs} doc${docs > 1 ? "s" : ""}`) : null,
      mail.transcripts ? h("span", { class: "chip", title: "transcribed voicemail" }, "transcript") : null,
      mail.deliveries ? h("span", { class: "chip", title: `${mail.deliveries} deliveries` }, `${mail.deliveries} out`) : null),
    h("td", { class: "col-label" }, labelBadge(mail), " ", confidenceCell(mail)),
    h("td", { class: "col-status" }, statusBadge(mail.status)),
    h("td", { class: "col-ms num" }, mail.processing_ms != null ? fmtMs(mail.processing_ms) : ""),
    );
    return tr;
  }

  function updateFooter() {
    if (rows.size === 0 && (done || !loading)) {
      footer.textContent = done ? "No mail matches these filters." : "";
    } else {
      footer.textContent = `${rows.size.toLocaleString("en")} mail${rows.size === 1 ? "" : "s"} shown${done ? " · end of list" : " · scroll for more"}`;
    }
    const empty = tbody.querySelector("tr.empty");
    if (rows.size === 0 && done && !empty) tbody.append(emptyRow(columns, "No mail matches these filters."));
    if (rows.size > 0 && empty) empty.remove();
  }

  function append(items) {
    const frag = document.createDocumentFragment();
    for (const mail of items) {
      live.noteSequence(mail.sequence);
      if (rows.has(mail.mail_key)) continue; // already inserted live
      const tr = renderRow(mail);
      rows.set(mail.mail_key, { mail, tr });
      frag.append(tr);
    }
    tbody.append(frag);
  }

  async function loadMore() {
    if (loading || done) return;
    const ctl = new AbortController();
    loading = ctl;
    const gen = generation;
    footer.textContent = rows.size ? "Loading more…" : "Loading…";
    try {
      const params = { ...apiParams(filters), limit: PAGE_SIZE };
      if (nextCursor) params.cursor = nextCursor;
      else if (tailUntil) params.until = tailUntil;
      const body = await api("/api/v1/mails", { params, signal: ctl.signal });
      if (gen !== generation) return;
      tailUntil = null;
      append(body.items || []);
      nextCursor = body.next_cursor || null;
      done = !nextCursor;
    } catch (err) {
      if (err.name === "AbortError") return;
      footer.textContent = `Could not load mails: ${err.message}`;
      toast(`Could not load mails: ${err.message}`, "error");
      loading = null;
      flushHeld();
      return;
    } finally {
      if (loading === ctl) loading = null;
    }
    flushHeld();
    updateFooter();
    // The sentinel may still be in view (a tall screen): keep filling.
    requestAnimationFrame(() => { if (!done && isVisible(sentinel)) loadMore(); });
  }

  function isVisible(el) {
    const r = el.getBoundingClientRect();
    return r.top < window.innerHeight + 800;
  }

  /** Drop the oldest rows down to MAX_ROWS - PAGE_SIZE; paging resumes before the last kept. */
  function trim() {
    while (rows.size > MAX_ROWS - PAGE_SIZE) {
      const last = tbody.lastElementChild;
      if (!last || !last.dataset.mailKey) break;
      rows.delete(last.dataset.mailKey);
      last.remove();
    }
    const last = tbody.lastElementChild;
    const tail = last && rows.get(last.dataset.mailKey);
    if (!tail) return;
    if (loading) loading.abort();
    loading = null;
    generation += 1;
    nextCursor = null;
    tailUntil = tail.mail.received_at;
    done = false;
  }

  function reload() {
    generation += 1;
    if (loading) loading.abort();
    loading = null;
    rows.clear();
    clear(tbody);
    nextCursor = null;
    tailUntil = null;
    done = false;
    unseen = 0;
    newPill.hidden = true;
    loadMore();
  }

  // ---------- live ----------
  // Live rows that arrive while a page is being fetched wait for it: the page may have been
  // read before their events were applied (a rebuild, a filter change), and with no rows
  // loaded yet there is nowhere to put them. Once the page is in they are merged, newest
  // state winning, so none is dropped and none is shown older than it is.
  let held = [];
  function flushHeld() {
    const waiting = held;
    held = [];
    for (const mail of waiting) upsert(mail);
  }

  function upsert(mail) {
    const existing = rows.get(mail.mail_key);
    if (existing) {
      const have = Number(existing.mail.sequence);
      if (Number(mail.sequence) < have) return; // an older snapshot than the row shows
      const merged = { ...existing.mail, ...mail };
      const tr = renderRow(merged);
      tr.classList.add("updated");
      existing.tr.replaceWith(tr);
      rows.set(mail.mail_key, { mail: merged, tr });
      return;
    }
    if (!mail.received_at || !matches(filters, mail)) return;
    // Find its place (newest first). A mail older than every loaded row is left for paging,
    // unless the whole list is loaded.
    // Rows are in DOM order, newest first; a new mail nearly always goes at the top.
    let before = null;
    for (let other = tbody.firstElementChild; other; other = other.nextElementSibling) {
      const known = rows.get(other.dataset.mailKey);
      if (known && newerThan(mail, known.mail)) { before = other; break; }
    }
    if (!before && !done) return;
    const tr = renderRow(mail);
    tr.classList.add("arrived");
    if (before) before.before(tr); else tbody.append(tr);
    rows.set(mail.mail_key, { mail, tr });
    if (rows.size > MAX_ROWS && window.scrollY < 80) trim();
    if (window.scrollY > 80) {
      unseen += 1;
      newPill.textContent = `↑ ${unseen} new mail${unseen > 1 ? "s" : ""}`;
      newPill.hidden = false;
    }
    updateFooter();
  }

  const offEvent = live.on("event", (msg) => {
    const data = msg.data || {};
    if (!data.mail_key) return;
    const mail = { ...data, sequence: msg.sequence ?? data.sequence };
    if (loading) held.push(mail);
    else upsert(mail);
  });
  const offResync = live.on("resync", () => reload());
  const onScroll = () => {
    if (window.scrollY < 40 && unseen) {
      unseen = 0;
      newPill.hidden = true;
    }
  };
  window.addEventListener("scroll", onScroll, { passive: true });

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: "800px 0px" });
  observer.observe(sentinel);

  // ---------- keyboard ----------
  function select(key, { focus = true } = {}) {
    if (selected && rows.get(selected)) rows.get(selected).tr.classList.remove("selected");
    selected = key;
    const row = rows.get(key);
    if (!row) return;
    row.tr.classList.add("selected");
    if (focus) row.tr.querySelector("a.subject")?.focus({ preventScroll: true });
    row.tr.scrollIntoView({ block: "nearest" });
  }
  function move(step) {
    const trs = [...tbody.querySelectorAll("tr[data-mail-key]")];
    if (!trs.length) return;
    const at = trs.findIndex((tr) => tr.dataset.mailKey === selected);
    const next = at < 0 ? 0 : Math.min(trs.length - 1, Math.max(0, at + step));
    select(trs[next].dataset.mailKey);
    if (next >= trs.length - 5) loadMore();
  }
  const onKey = (ev) => {
    const e = ev.detail;
    if (e.key === "j" || e.key === "ArrowDown") { e.preventDefault(); move(1); }
    else if (e.key === "k" || e.key === "ArrowUp") { e.preventDefault(); move(-1); }
    else if (e.key === "Enter" && selected) { e.preventDefault(); navigate(`/mails/${encodeURIComponent(selected)}`); }
    else if (e.key === "/") { e.preventDefault(); search.focus(); search.select(); }
  };
  view.addEventListener("pagekey", onKey);
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-mail-key]");
    if (!tr || e.target.closest("a")) return; // links handle themselves (and middle-click)
    navigate(`/mails/${encodeURIComponent(tr.dataset.mailKey)}`);
  });
  tbody.addEventListener("focusin", (e) => {
    const tr = e.target.closest("tr[data-mail-key]");
    if (tr) select(tr.dataset.mailKey, { focus: false });
  });

  if (refocus) {
    const el = form.querySelector(`#${refocus.id}`);
    if (el) {
      el.focus();
      if (refocus.caret !== null) el.setSelectionRange(refocus.caret, refocus.caret);
    }
    refocus = null;
  }

  // ---------- start ----------
  if (kept && kept.filterKey === filterKey) {
    selected = kept.selected;
    append(kept.items);
    nextCursor = kept.nextCursor;
    tailUntil = kept.tailUntil;
    done = kept.done;
    updateFooter();
    const { scrollY } = kept;
    requestAnimationFrame(() => window.scrollTo(0, scrollY));
    // Rows that changed while the page was away: the newest page again, merged in.
    api("/api/v1/mails", { params: { ...apiParams(filters), limit: PAGE_SIZE } })
      .then((body) => { for (const mail of [...(body.items || [])].reverse()) upsert(mail); })
      .catch(() => {});
  } else {
    loadMore();
  }

  return () => {
    kept = {
      filterKey,
      items: [...tbody.querySelectorAll("tr[data-mail-key]")].map((tr) => rows.get(tr.dataset.mailKey)?.mail).filter(Boolean),
      nextCursor,
      tailUntil,
      done,
      selected,
      scrollY: window.scrollY,
    };
    if (loading) loading.abort();
    observer.disconnect();
    offEvent();
    offResync();
    applySoon.cancel();
    window.removeEventListener("scroll", onScroll);
    view.removeEventListener("pagekey", onKey);
  };
}
