// AI replies: the drafts awaiting a person's decision (held ones first in the eye: their
// guardrail reasons are highlighted), newest first, cursor-paged, refreshed by reply events.
// Selecting one opens the review panel: the draft's text to edit, approve or reject (with a
// reason). A decision is final; the server answers 409 to a second one.

import { ApiError, api } from "../api.js";
import { clear, debounce, emptyRow, facts, h, statusBadge, timeCell, toast } from "../dom.js";

const FILTERS = [
  ["awaiting", "Awaiting review"], ["held", "Held"], ["pending", "Pending"],
  ["approved", "Approved"], ["rejected", "Rejected"], ["auto", "Sent automatically"],
  ["skipped", "Skipped"], ["", "All"],
];

function reasons(r) {
  const list = r.held_reasons || [];
  if (!list.length) return null;
  return h("ul", { class: "held-reasons" }, list.map((x) => h("li", {}, x)));
}

function reviewPanel(reply, onDone) {
  const panel = h("section", { id: "review", class: "card review", "data-reply-id": reply.reply_id });
  const mail = reply.mail || {};
  panel.append(
    h("h2", {}, `Reply to “${mail.subject || reply.subject || ""}”`),
    facts([
      ["Status", statusBadge(reply.status)],
      ["To", (reply.to || []).join(", ")],
      ["Subject", reply.subject || ""],
      ["Mailbox", `${reply.tenant} / ${reply.mailbox || ""}`],
      ["Model", `${reply.model || ""} (${reply.backend || ""}, ${reply.language || ""})`],
      ["Mail", h("a", { href: `#/mails/${encodeURIComponent(reply.mail_key)}` }, mail.from || reply.mail_key)],
    ]),
  );
  const held = reasons(reply);
  if (held) panel.append(h("div", { class: "held-box", role: "alert" }, h("strong", {}, "Held: "), held));
  if ((reply.sources || []).length) {
    panel.append(h("details", {}, h("summary", {}, `Sources (${reply.sources.length})`),
      h("ul", {}, reply.sources.map((s) => h("li", {}, `${s.kind}: ${s.title || s.ref}`)))));
  }
  const text = h("textarea", { id: "review-text", rows: 10, "aria-label": "Reply text" });
  text.value = reply.edited_text ?? reply.draft_text ?? "";
  const reason = h("input", { id: "review-reason", type: "text", placeholder: "Reason (for a rejection)", "aria-label": "Reason" });
  const approve = h("button", { type: "button", id: "review-approve", class: "primary" }, "Approve and send");
  const reject = h("button", { type: "button", id: "review-reject", class: "danger" }, "Reject");
  const result = h("p", { id: "review-result", class: "muted" });
  if (!reply.reviewable) {
    text.readOnly = true;
    approve.disabled = reject.disabled = true;
    reason.disabled = true;
    result.textContent = reply.decision
      ? `${reply.decision} by ${reply.reviewed_by}${reply.reason ? `: ${reply.reason}` : ""}`
      : `Not awaiting review (${reply.status}).`;
  }
  async function decide(decision) {
    approve.disabled = reject.disabled = true;
    const body = { decision };
    if (decision === "approved" && text.value !== (reply.draft_text || "")) body.body_text = text.value;
    if (reason.value.trim()) body.reason = reason.value.trim();
    try {
      await api(`/api/v1/replies/${encodeURIComponent(reply.reply_id)}/review`, { method: "POST", body });
      result.textContent = decision === "approved" ? "Approved: the reply goes out." : "Rejected: it will not be sent.";
      result.className = "ok";
      toast(`Reply ${decision}`, "ok");
      onDone();
    } catch (err) {
      result.textContent = err instanceof ApiError && err.status === 409
        ? "Already decided (by someone else?)." : `Failed: ${err.message}`;
      result.className = "error-text";
      onDone();
    }
  }
  approve.addEventListener("click", () => decide("approved"));
  reject.addEventListener("click", () => decide("rejected"));
  panel.append(h("label", { for: "review-text" }, "Draft (edit before approving)"), text,
    h("div", { class: "review-actions" }, approve, reason, reject), result);
  const body = reply.body_text ? h("details", {}, h("summary", {}, "As it would be sent (template)"),
    h("pre", { class: "wrap" }, reply.body_text)) : null;
  if (body) panel.append(body);
  return panel;
}

export function mount(view, { query, navigate, live }) {
  const status = query.has("status") ? query.get("status") : "awaiting";
  const selected = query.get("reply");
  let cursor = null;
  let done = false;
  let loading = false;
  let alive = true;
  const select = h("select", { id: "replies-status", "aria-label": "Status" },
    FILTERS.map(([v, t]) => h("option", { value: v, selected: v === status }, t)));
  select.addEventListener("change", () => navigate(`/replies?status=${select.value}`, { replace: true }));
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "ghost", id: "replies-more", hidden: true }, "Load more");
  const side = h("div", { id: "review-side" });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Replies"), h("div", { class: "filters" }, select)),
    h("div", { class: "replies-layout" },
      h("div", { class: "table-wrap" }, h("table", { id: "replies-table", class: "grid" },
        h("thead", {}, h("tr", {}, ["Drafted", "Tenant", "Mail", "Status", "Held because"].map((t) => h("th", { scope: "col" }, t)))),
        tbody), h("p", { class: "list-status" }, more)),
      side));

  function open(replyId) {
    navigate(`/replies?status=${encodeURIComponent(status)}&reply=${encodeURIComponent(replyId)}`, { replace: true });
  }

  function row(r) {
    const mail = r.mail || {};
    const tr = h("tr", { "data-reply-id": r.reply_id, class: [r.status === "held" ? "held" : null, r.reply_id === selected ? "selected" : null], tabindex: 0 },
      h("td", {}, timeCell(r.drafted_at)),
      h("td", {}, r.tenant),
      h("td", {}, h("div", { class: "subject" }, mail.subject || r.subject || ""), h("div", { class: "muted small" }, mail.from || "")),
      h("td", {}, statusBadge(r.status)),
      h("td", { class: "held-cell" }, reasons(r) || (r.reason ? h("span", { class: "muted small" }, r.reason) : "")));
    tr.addEventListener("click", () => open(r.reply_id));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") open(r.reply_id); });
    return tr;
  }

  async function load(reset = false) {
    if (loading || (done && !reset)) return;
    loading = true;
    try {
      const body = await api("/api/v1/replies", { params: { status, limit: 100, cursor: reset ? undefined : cursor } });
      if (!alive) return;
      if (reset) clear(tbody);
      for (const r of body.items || []) tbody.append(row(r));
      cursor = body.next_cursor || null;
      done = !cursor;
      more.hidden = done;
      if (!tbody.children.length) tbody.append(emptyRow(5, status === "awaiting" ? "No drafts awaiting review." : "No replies."));
    } catch (err) {
      if (alive) toast(`Could not load the replies: ${err.message}`, "error");
    } finally {
      loading = false;
    }
  }

  async function showSelected() {
    if (!selected) return;
    try {
      const reply = await api(`/api/v1/replies/${encodeURIComponent(selected)}`);
      if (!alive) return;
      clear(side);
      side.append(reviewPanel(reply, () => { load(true); showSelectedSoon(); }));
    } catch (err) {
      if (alive) side.replaceChildren(h("p", { class: "error-text" }, `Could not load the reply: ${err.message}`));
    }
  }
  const showSelectedSoon = debounce(() => { if (!side.querySelector("textarea:focus")) showSelected(); }, 700);

  more.addEventListener("click", () => load());
  const refresh = debounce(() => load(true), 400);
  const off = live.on("event", (msg) => {
    if (String(msg.event || "").startsWith("reply.")) {
      refresh();
      if (selected && (msg.data || {}).mail_key && side.firstChild?.dataset?.replyId === selected) showSelectedSoon();
    }
  });
  load(true);
  showSelected();
  return () => {
    alive = false;
    off();
    refresh.cancel();
    showSelectedSoon.cancel();
  };
}
