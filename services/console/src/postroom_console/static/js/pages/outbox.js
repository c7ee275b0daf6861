// The mailer's outbox as the console saw it: deliveries requested, sent or failed, newest
// first, cursor-paged like the mail list, refreshed by delivery events.

import { api } from "../api.js";
import { clear, debounce, emptyRow, h, statusBadge, timeCell, toast } from "../dom.js";

const STATUSES = ["requested", "sent", "failed"];

function list(value) {
  return Array.isArray(value) ? value.join(", ") : value || "";
}

export function mount(view, { query, navigate, live }) {
  const status = query.get("status") || "";
  let cursor = null;
  let done = false;
  let loading = false;
  let alive = true;
  const select = h("select", { id: "outbox-status", "aria-label": "Status" },
    h("option", { value: "" }, "Any status"), STATUSES.map((st) => h("option", { value: st, selected: st === status }, st)));
  select.addEventListener("change", () => navigate(`/outbox${select.value ? `?status=${select.value}` : ""}`, { replace: true }));
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "ghost", id: "outbox-more", hidden: true }, "Load more");
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Outbox"), h("div", { class: "filters" }, select)),
    h("div", { class: "table-wrap" }, h("table", { id: "outbox-table", class: "grid" },
      h("thead", {}, h("tr", {}, ["Requested", "Tenant", "Kind", "To", "Status", "Finished", "Relay", "Mail"].map((t) => h("th", { scope: "col" }, t)))),
      tbody)),
    h("p", { class: "list-status" }, more));

  function row(d) {
    return h("tr", { "data-delivery-id": d.delivery_id, class: d.status === "failed" ? "warn" : null },
      h("td", {}, timeCell(d.requested_at)),
      h("td", {}, d.tenant || ""),
      h("td", {}, d.kind || ""),
      h("td", { title: list(d.to) }, list(d.to)),
      h("td", { title: d.error || "" }, statusBadge(d.status), d.error ? h("div", { class: "error-text small" }, d.error) : null),
      h("td", {}, timeCell(d.finished_at)),
      h("td", { class: "mono small" }, d.relay || ""),
      h("td", {}, d.mail_key ? h("a", { href: `#/mails/${encodeURIComponent(d.mail_key)}`, class: "mono small" }, d.mail_key.slice(0, 12)) : ""));
  }

  async function load(reset = false) {
    if (loading || (done && !reset)) return;
    loading = true;
    try {
      const body = await api("/api/v1/outbox", { params: { status, limit: 100, cursor: reset ? undefined : cursor } });
      if (!alive) return;
      const items = Array.isArray(body) ? body : body.items || [];
      if (reset) clear(tbody);
      for (const d of items) tbody.append(row(d));
      cursor = body.next_cursor || null;
      done = !cursor;
      more.hidden = done;
      if (!tbody.children.length) tbody.append(emptyRow(8, "No deliveries."));
    } catch (err) {
      if (alive) toast(`Could not load the outbox: ${err.message}`, "error");
    } finally {
      loading = false;
    }
  }
  more.addEventListener("click", () => load());
  const refresh = debounce(() => load(true), 500);
  const off = live.on("event", (msg) => { if (String(msg.event || "").startsWith("delivery.")) refresh(); });
  load(true);
  return () => {
    alive = false;
    off();
    refresh.cancel();
  };
}
