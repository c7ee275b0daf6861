// Dead letters (admin): messages a consumer gave up on, with a Replay button that publishes
// the original again (POST /api/v1/dead-letters/{sequence}/replay).

import { ApiError, api } from "../api.js";
import { clear, emptyRow, fmtInt, h, timeCell, toast } from "../dom.js";

export function mount(view, { session }) {
  let alive = true;
  const tbody = h("tbody", {});
  const table = h("table", { id: "dlq-table", class: "grid" },
    h("thead", {}, h("tr", {}, ["Seq", "Consumer", "Subject", "Mail", "Tries", "Error", "Failed", ""].map((t, i) =>
      h("th", { scope: "col", class: i === 0 || i === 4 ? "num" : null }, t)))),
    tbody);
  const count = h("span", { id: "dlq-count", class: "muted small" }, "");
  const refresh = h("button", { type: "button", class: "ghost", id: "dlq-refresh" }, "Refresh");
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Dead letters"), h("div", { class: "filters" }, count, refresh)),
    h("div", { class: "table-wrap" }, table));
  if (!session.admin) {
    clear(tbody).append(emptyRow(8, "Dead letters are shown to admin keys only."));
    return () => {};
  }

  async function replay(letter, button) {
    button.disabled = true;
    button.textContent = "Replaying…";
    try {
      await api(`/api/v1/dead-letters/${letter.sequence}/replay`, { method: "POST" });
      toast(`Dead letter #${letter.sequence} replayed to ${letter.original_subject}`, "ok");
      const tr = button.closest("tr");
      tr.classList.add("replayed");
      tr.dataset.replayed = "true";
      button.textContent = "Replayed";
      await load();
    } catch (err) {
      toast(`Replay failed: ${err.message}`, "error");
      button.disabled = false;
      button.textContent = "Replay";
    }
  }

  function render(letters) {
    clear(tbody);
    count.textContent = `${fmtInt(letters.length)} dead letter${letters.length === 1 ? "" : "s"}`;
    if (!letters.length) {
      tbody.append(emptyRow(8, "No dead letters. Every consumer is keeping up."));
      return;
    }
    for (const d of letters) {
      const button = h("button", { type: "button", class: "replay small", "data-sequence": d.sequence }, "Replay");
      button.addEventListener("click", () => replay(d, button));
      tbody.append(h("tr", { "data-sequence": d.sequence },
        h("td", { class: "num" }, String(d.sequence)),
        h("td", {}, d.consumer),
        h("td", { class: "mono small" }, d.original_subject),
        h("td", {}, d.mail_key ? h("a", { href: `#/mails/${encodeURIComponent(d.mail_key)}`, class: "mono small" }, d.mail_key.slice(0, 12)) : "–"),
        h("td", { class: "num" }, String(d.deliveries ?? "")),
        h("td", { class: "error-text", title: d.error || "" }, d.error || ""),
        h("td", {}, timeCell(d.failed_at)),
        h("td", {}, button)));
    }
  }

  async function load() {
    try {
      const body = await api("/api/v1/dead-letters");
      if (alive) render(Array.isArray(body) ? body : body.items || []);
    } catch (err) {
      if (!alive) return;
      clear(tbody).append(emptyRow(8, err instanceof ApiError && err.status === 403
        ? "Dead letters are shown to admin keys only." : `Could not load dead letters: ${err.message}`));
    }
  }
  refresh.addEventListener("click", load);
  load();
  const timer = setInterval(load, 15_000);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
