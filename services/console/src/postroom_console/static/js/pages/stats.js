// Figures an operator glances at: volume per hour and day, labels, latency percentiles,
// consumer lag per service and the console's own projection lag. Refreshed every few seconds
// and soon after live events (at most every 3 s).

import { api } from "../api.js";
import { barChart, hbarChart, tile } from "../charts.js";
import { clear, fmtInt, fmtMs, fmtPct, h, timeCell, toast } from "../dom.js";
import { tenantsOf } from "./mails.js";

const REFRESH_MS = 10_000;
// Live events refresh the figures, at most this often: a busy stream must not turn every
// open stats page into a stream of heavy queries.
const MIN_GAP_MS = 3_000;

function hourLabel(iso, withDay = false) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const hour = `${String(d.getHours()).padStart(2, "0")}h`;
  return withDay ? `${d.getMonth() + 1}/${d.getDate()} ${hour}` : hour;
}

function dayLabel(iso) {
  const d = new Date(iso.length === 10 ? `${iso}T00:00:00` : iso); // the UTC day, as written
  return Number.isNaN(d.getTime()) ? String(iso) : `${d.getMonth() + 1}/${d.getDate()}`;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Every hour of the period, empty ones as 0 (the API lists only hours that had mail). */
export function fillHours(perHour, hours, now = Date.now()) {
  const counts = new Map(perHour.map((p) => [Date.parse(p.hour), p.count]));
  const last = Math.floor(now / HOUR) * HOUR; // UTC hour boundaries, as the API buckets
  const out = [];
  for (let t = last - (hours - 1) * HOUR; t <= last; t += HOUR) {
    out.push({ hour: new Date(t).toISOString(), count: counts.get(t) || 0 });
  }
  return out;
}

/** The last ``days`` UTC days, empty ones as 0. */
export function fillDays(perDay, days, now = Date.now()) {
  const counts = new Map(perDay.map((p) => [String(p.day).slice(0, 10), p.count]));
  const today = Math.floor(now / DAY) * DAY;
  const out = [];
  for (let t = today - (days - 1) * DAY; t <= today; t += DAY) {
    const day = new Date(t).toISOString().slice(0, 10);
    out.push({ day, count: counts.get(day) || 0 });
  }
  return out;
}

export function mount(view, { query, session, navigate, live }) {
  const hours = query.get("hours") || "24";
  const tenant = query.get("tenant") || "";
  let alive = true;
  let timer = null;
  let inFlight = false;
  let lastLoad = 0;

  const hoursSelect = h("select", { id: "stats-hours", "aria-label": "Period" },
    [["24", "Last 24 hours"], ["72", "Last 3 days"], ["168", "Last 7 days"], ["720", "Last 30 days"]]
      .map(([v, t]) => h("option", { value: v, selected: v === hours }, t)));
  const tenantSelect = h("select", { id: "stats-tenant", "aria-label": "Tenant" },
    h("option", { value: "" }, "All tenants"), tenant ? h("option", { value: tenant, selected: true }, tenant) : null);
  const go = () => {
    const p = new URLSearchParams();
    if (hoursSelect.value !== "24") p.set("hours", hoursSelect.value);
    if (tenantSelect.value) p.set("tenant", tenantSelect.value);
    navigate(`/stats${p.toString() ? `?${p}` : ""}`, { replace: true });
  };
  hoursSelect.addEventListener("change", go);
  tenantSelect.addEventListener("change", go);
  if (session.admin) {
    api("/api/v1/tenants").then((body) => {
      for (const t of tenantsOf(body)) if (t.slug !== tenant) tenantSelect.append(h("option", { value: t.slug }, t.slug));
    }).catch(() => {});
  }
  const updated = h("span", { id: "stats-updated", class: "muted small" }, "");
  const content = h("div", { id: "stats", class: "stats" }, h("p", { class: "muted" }, "Loading…"));
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Stats"),
      h("div", { class: "filters" }, hoursSelect, session.admin ? tenantSelect : null, updated)),
    content,
  );

  let last = null;
  function render(st) {
    last = st;
    const full = Math.max(300, content.clientWidth - 34); // card padding and border
    const half = window.innerWidth > 1000 ? Math.max(300, (content.clientWidth - 14) / 2 - 34) : full;
    const totals = st.totals || {};
    const ms = st.processing_ms || {};
    const proj = st.projection || {};
    const days = Math.min(31, Math.max(7, Math.ceil(Number(hours) / 24) + 1));
    const perHour = fillHours(st.per_hour || [], Number(hours)).map((p) => ({ key: p.hour, label: hourLabel(p.hour, Number(hours) > 24), value: p.count, title: `${new Date(p.hour).toLocaleString()}: ${p.count} mails` }));
    const perDay = fillDays(st.per_day || [], days).map((p) => ({ key: p.day, label: dayLabel(p.day), value: p.count, title: `${p.day}: ${p.count} mails` }));
    const perLabel = Object.entries(st.per_label || {}).map(([key, value]) => ({ key, value })).sort((a, b) => b.value - a.value);
    const lag = Number(proj.lag || 0);
    const consumers = st.consumers || [];
    clear(content).append(
      h("div", { class: "tiles" },
        tile("tile-mails", fmtInt(totals.mails), "mails"),
        tile("tile-classified", fmtInt(totals.classified), "classified"),
        tile("tile-failed", fmtInt(totals.failed), "failed", totals.failed ? "warn" : ""),
        tile("tile-success", totals.success_rate != null ? fmtPct(totals.success_rate) : "–", "success rate"),
        tile("tile-p50", fmtMs(ms.p50), "p50 received → classified"),
        tile("tile-p95", fmtMs(ms.p95), "p95"),
        tile("tile-p99", fmtMs(ms.p99), "p99"),
        tile("tile-lag", fmtInt(lag), "projection lag (events)", lag > 100 ? "warn" : ""),
      ),
      h("div", { class: "chart-grid" },
        h("section", { class: "card wide" }, h("h2", {}, "Volume per hour"),
          barChart(perHour, { id: "stats-volume", width: full, every: Math.max(1, Math.ceil(perHour.length / (Number(hours) > 24 ? 8 : 12))) })),
        h("section", { class: "card" }, h("h2", {}, "Per label"), hbarChart(perLabel, { id: "stats-labels", width: half })),
        h("section", { class: "card" }, h("h2", {}, "Volume per day"),
          barChart(perDay, { id: "stats-daily", width: half, height: 150, every: Math.max(1, Math.ceil(perDay.length / 10)) })),
      ),
      h("section", { class: "card" }, h("h2", {}, "Consumers"),
        consumers.length
          ? h("table", { id: "consumers-table", class: "grid compact" },
            h("thead", {}, h("tr", {}, ["Stream", "Consumer", "Pending", "Ack pending", "Redelivered", "Last active"].map((t, i) => h("th", { scope: "col", class: i >= 2 && i <= 4 ? "num" : null }, t)))),
            h("tbody", {}, consumers.map((c) => h("tr", { "data-consumer": c.name, class: c.pending > 1000 ? "warn" : null },
              h("td", {}, c.stream), h("td", {}, c.name),
              h("td", { class: "num" }, fmtInt(c.pending)), h("td", { class: "num" }, fmtInt(c.ack_pending)),
              h("td", { class: "num" }, fmtInt(c.redelivered)), h("td", {}, timeCell(c.last_active))))))
          : h("p", { class: "muted" }, session.admin ? "No consumers reported." : "Consumer figures are shown to admin keys.")),
      h("section", { class: "card" }, h("h2", {}, "Projection"),
        h("p", { id: "projection" }, `Position ${fmtInt(proj.position)} of ${fmtInt(proj.stream_last)} — `,
          h("strong", { class: lag > 100 ? "warn" : null }, `${fmtInt(lag)} behind`))),
    );
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function load() {
    if (!alive || inFlight) return;
    inFlight = true;
    lastLoad = Date.now();
    try {
      const st = await api("/api/v1/stats", { params: { hours, tenant } });
      if (alive) render(st);
    } catch (err) {
      if (alive) toast(`Could not load stats: ${err.message}`, "error");
    } finally {
      inFlight = false;
      if (alive) {
        clearTimeout(timer);
        timer = setTimeout(load, REFRESH_MS);
      }
    }
  }
  let soon = null;
  const off = live.on("event", () => {
    if (soon) return;
    const wait = Math.max(300, MIN_GAP_MS - (Date.now() - lastLoad));
    soon = setTimeout(() => { soon = null; load(); }, wait);
  });
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (last && alive) render(last); }, 150);
  };
  window.addEventListener("resize", onResize);
  load();
  return () => {
    alive = false;
    window.removeEventListener("resize", onResize);
    clearTimeout(resizeTimer);
    clearTimeout(timer);
    clearTimeout(soon);
    off();
  };
}
