// Mailboxes: the IMAP / provider accounts mailbox-sync reads, with their sync state, read
// through the console (GET /api/v1/mailboxes -> mailbox-sync's /api/v1/accounts). Without
// CONSOLE_MAILBOX_SYNC_URL the page says so.

import { api } from "../api.js";
import { clear, emptyRow, h, timeCell, toast } from "../dom.js";

function stateBadge(state) {
  const s = String(state || "unknown");
  return h("span", { class: ["badge", `sync-${s.replace(/[^a-z]/g, "")}`] }, s);
}

export function mount(view) {
  let alive = true;
  const body = h("div", { id: "mailboxes-body" }, h("p", { class: "muted" }, "Loading…"));
  const reload = h("button", { type: "button", class: "ghost", id: "mailboxes-reload" }, "Reload");
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Mailboxes"), h("div", { class: "filters" }, reload)), body);

  function table(accounts) {
    const tbody = h("tbody", {});
    for (const a of accounts) {
      const status = a.status || {};
      const folders = status.folders || [];
      const last = folders.map((f) => f.last_sync_at).filter(Boolean).sort().pop();
      const ingested = folders.reduce((n, f) => n + (f.ingested || 0), 0);
      tbody.append(h("tr", { "data-account-id": a.id, class: status.state === "error" ? "warn" : null },
        h("td", { class: "mono" }, a.id),
        h("td", {}, `${a.tenant || ""} / ${a.mailbox || ""}`),
        h("td", {}, a.address || a.username || ""),
        h("td", {}, `${a.kind || ""}${a.host ? ` ${a.host}` : ""}`),
        h("td", {}, (a.folders || folders.map((f) => f.folder)).join(", ")),
        h("td", { class: "sync-state" }, stateBadge(a.enabled === false ? "disabled" : status.state)),
        h("td", {}, last ? timeCell(last) : h("span", { class: "muted" }, "never")),
        h("td", { class: "num" }, String(ingested)),
        h("td", { class: "error-text small" }, status.last_error || "")));
    }
    if (!accounts.length) tbody.append(emptyRow(9, "No accounts."));
    return h("div", { class: "table-wrap" }, h("table", { id: "mailboxes-table", class: "grid" },
      h("thead", {}, h("tr", {}, ["Account", "Tenant / mailbox", "Address", "Kind", "Folders", "State", "Last sync", "Ingested", "Last error"].map((t) => h("th", { scope: "col" }, t)))),
      tbody));
  }

  async function load() {
    try {
      const got = await api("/api/v1/mailboxes");
      if (!alive) return;
      clear(body);
      if (!got.configured) {
        body.append(h("p", { id: "mailboxes-not-configured", class: "muted" },
          "Mailbox sync is not configured: set CONSOLE_MAILBOX_SYNC_URL (and CONSOLE_MAILBOX_SYNC_TOKEN) to show its accounts here."));
      } else if (!got.reachable) {
        body.append(h("p", { id: "mailboxes-unreachable", class: "error-text" }, `mailbox-sync does not answer: ${got.error || ""}`));
      } else {
        body.append(table(got.accounts || []));
      }
    } catch (err) {
      if (alive) toast(`Could not load the mailboxes: ${err.message}`, "error");
    }
  }
  reload.addEventListener("click", load);
  load();
  const timer = setInterval(load, 15_000);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
