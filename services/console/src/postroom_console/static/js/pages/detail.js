// One mail's whole journey: the timeline of its events (timestamps, time since it was
// received), trace id, authentication verdicts, classification and its correction, documents,
// transcripts, replies, deliveries and the body (HTML sanitised by the server, shown in a
// sandboxed frame). Updates itself when an event for this mail arrives on the live feed.

import { ApiError, api, download, withTicket } from "../api.js";
import {
  LABELS, clear, confidenceCell, debounce, facts, fmtBytes, fmtMs, fmtPct, fmtStamp, h,
  labelBadge, statusBadge, timeCell, toast,
} from "../dom.js";
import { listHref } from "./mails.js";

function section(id, title, ...content) {
  return h("section", { id, class: "card" }, h("h2", {}, title), ...content);
}

function list(value) {
  if (!value) return "";
  return Array.isArray(value) ? value.join(", ") : String(value);
}

function resultChip(result) {
  const r = String(result || "none").toLowerCase();
  return h("span", { class: ["verdict", `verdict-${r.replace(/[^a-z]/g, "")}`] }, r);
}

/** A compact one-line summary of an event, when the server gave none. */
function summarize(row) {
  if (row.summary && row.summary !== row.event_type) return row.summary;
  const p = row.payload || {};
  switch (row.event_type) {
    case "mail.received": return `${p.source || "smtp"} · ${fmtBytes(p.size)} · ${list(p.recipients)}`;
    case "mail.parsed": return `${(p.documents || p.document_ids || []).length} document(s)${p.has_html ? " · HTML" : ""}`;
    case "mail.authenticated": return `DMARC ${p.dmarc?.result || "?"} · SPF ${p.spf?.result || "?"}`;
    case "document.stored": return `${p.filename} · ${fmtBytes(p.size)}`;
    case "voicemail.transcribed": return `${p.status} · ${p.engine || ""} · ${(p.text || "").slice(0, 60)}`;
    case "mail.classified": return `${p.classification} · ${fmtPct(p.confidence)}`;
    case "mail.label_corrected": return `${p.previous_label || "?"} → ${p.label} by ${p.corrected_by || "?"}`;
    case "delivery.requested": return `${p.kind} to ${list(p.to)}`;
    case "delivery.sent": return `sent to ${list(p.to)}`;
    case "delivery.failed": return `failed: ${p.error || ""}`;
    case "mail.failed": return `${p.stage}: ${p.error}`;
    case "reply.drafted": return `${p.status || "drafted"}${(p.held_reasons || []).length ? ` (${p.held_reasons.join("; ")})` : ""} · “${p.subject || ""}” to ${list(p.to)}${p.model ? ` (${p.model})` : ""}`;
    case "reply.reviewed": return `${p.decision} by ${p.reviewed_by || "?"}${p.body_text ? " (edited)" : ""}${p.reason ? `: ${p.reason}` : ""}`;
    case "reply.skipped": return `no reply: ${p.reason}${p.detail ? ` (${p.detail})` : ""}`;
    default: return "";
  }
}

function timeline(detail) {
  const rows = [...(detail.timeline || [])].sort((a, b) => a.sequence - b.sequence);
  const ol = h("ol", { id: "timeline", class: "timeline" });
  let previous = null;
  for (const row of rows) {
    const since = row.since_received_ms;
    const step = previous !== null && since != null ? since - previous : null;
    previous = since ?? previous;
    const failed = /failed/.test(row.event_type);
    ol.append(h("li", {
      "data-event-type": row.event_type, "data-sequence": row.sequence,
      class: failed ? "failed" : null,
    },
    h("div", { class: "tl-when" },
      h("time", { datetime: row.occurred_at, title: row.occurred_at }, fmtStamp(row.occurred_at)),
      h("span", { class: "tl-since", title: "since received" }, since != null ? `${since < 0 ? "" : "+"}${fmtMs(since)}` : ""),
      step != null && step > 0 ? h("span", { class: "tl-step", title: "since the previous step" }, `Δ ${fmtMs(step)}`) : null),
    h("div", { class: "tl-what" },
      h("span", { class: "tl-type" }, row.event_type),
      h("span", { class: "tl-summary" }, summarize(row)),
      row.event_type === "reply.drafted" && (row.payload?.draft_text || row.payload?.body_text)
        ? h("blockquote", { class: "tl-draft" }, row.payload.draft_text || row.payload.body_text) : null,
      row.event_type === "reply.reviewed" && row.payload?.body_text
        ? h("blockquote", { class: "tl-draft" }, row.payload.body_text) : null,
      row.trace_id && row.trace_id !== detail.trace_id
        ? h("span", { class: "tl-trace", title: "trace id of this event" }, row.trace_id) : null,
      h("details", { class: "tl-payload" },
        h("summary", {}, `#${row.sequence} payload`),
        h("pre", {}, JSON.stringify(row.payload ?? {}, null, 2))))));
  }
  if (!rows.length) ol.append(h("li", { class: "empty" }, "No events yet."));
  return ol;
}

function authentication(auth) {
  if (!auth) return h("p", { class: "muted" }, "No authentication verdicts (yet).");
  const rows = [];
  if (auth.spf) rows.push(["SPF", auth.spf.result, [auth.spf.identity, auth.spf.domain].filter(Boolean).join(" "), auth.spf.reason]);
  for (const d of auth.dkim || []) rows.push(["DKIM", d.result, [d.domain, d.selector && `s=${d.selector}`].filter(Boolean).join(" "), d.reason]);
  if (!(auth.dkim || []).length) rows.push(["DKIM", "none", "no signature", ""]);
  if (auth.dmarc) rows.push(["DMARC", auth.dmarc.result, [auth.dmarc.header_from, auth.dmarc.policy && `p=${auth.dmarc.policy}`].filter(Boolean).join(" "), auth.dmarc.reason]);
  if (auth.arc) rows.push(["ARC", auth.arc.result, `chain ${auth.arc.chain_length}`, auth.arc.reason]);
  if (auth.iprev) rows.push(["iprev", auth.iprev.result, [auth.iprev.ip, auth.iprev.hostname].filter(Boolean).join(" "), auth.iprev.reason]);
  return h("div", {},
    h("table", { id: "auth-table", class: "grid compact" },
      h("tbody", {}, rows.map(([name, result, what, why]) => h("tr", { "data-mechanism": name.toLowerCase() },
        h("th", { scope: "row" }, name), h("td", {}, resultChip(result)), h("td", { title: why || "" }, what))))),
    auth.authentication_results
      ? h("details", {}, h("summary", {}, "Authentication-Results"), h("pre", { class: "wrap" }, auth.authentication_results))
      : null);
}

function classification(detail) {
  const cls = detail.classification || {};
  const scores = Object.entries(detail.scores || cls.scores || {}).sort((a, b) => b[1] - a[1]);
  const label = detail.label || cls.classification;
  return h("div", {},
    h("p", { class: "cls-head" }, labelBadge(detail), " ", confidenceCell(detail)),
    facts([
      ["Model said", label ? `${label} (${fmtPct(detail.confidence ?? cls.confidence)})` : null],
      ["Model", detail.model_version || cls.model_version],
      ["Spam score", detail.spam_score ?? cls.spam_score],
      ["Processed", cls.processed_at ? fmtStamp(cls.processed_at) : null],
      ["Took", cls.processing_time_ms != null ? fmtMs(cls.processing_time_ms) : null],
      ["Processor", cls.processor_id],
      ["Corrected by", detail.corrected_by],
    ]),
    scores.length
      ? h("table", { id: "scores", class: "scores" }, h("tbody", {}, scores.map(([name, value]) =>
        h("tr", { "data-label": name, class: name === label ? "chosen" : null },
          h("th", { scope: "row" }, name),
          h("td", {}, h("meter", { min: 0, max: 1, value, title: fmtPct(value) })),
          h("td", { class: "num" }, fmtPct(value))))))
      : h("p", { class: "muted" }, "Not classified yet."));
}

function documents(detail) {
  const docs = detail.documents || [];
  if (!docs.length) return h("p", { class: "muted" }, "No documents.");
  return h("ul", { id: "documents", class: "docs" }, docs.map((d) => {
    const meta = d.metadata || {};
    const button = h("button", { type: "button", class: "download small", "data-document-id": d.document_id }, "Download");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const url = d.download_url || `/api/v1/mails/${encodeURIComponent(detail.mail_key)}/documents/${encodeURIComponent(d.document_id)}`;
        const got = await download(url, d.filename);
        toast(`Saved ${got.name} (${fmtBytes(got.size)})`, "ok");
      } catch (err) {
        toast(`Download failed: ${err.message}`, "error");
      } finally {
        button.disabled = false;
      }
    });
    return h("li", { "data-document-id": d.document_id },
      h("div", { class: "doc-name" }, h("strong", {}, d.filename), " ", button),
      h("div", { class: "muted small" }, [
        d.sniffed_content_type || d.declared_content_type, fmtBytes(d.size),
        meta.pages != null ? `${meta.pages} page${meta.pages === 1 ? "" : "s"}` : null,
        meta.rows != null ? `${meta.rows} row${meta.rows === 1 ? "" : "s"}` : null,
        meta.sheets ? `sheets: ${meta.sheets.join(", ")}` : null,
        d.supported === false ? "not read" : null, meta.error,
      ].filter(Boolean).join(" · ")),
      meta.text_excerpt ? h("blockquote", { class: "excerpt" }, meta.text_excerpt) : null);
  }));
}

function transcripts(detail) {
  const items = detail.transcripts || [];
  if (!items.length) return null;
  return section("transcripts", "Transcripts", items.map((t) => h("article", { class: "transcript" },
    h("p", { class: "muted small" }, [t.filename, t.status, t.engine, t.model, t.language,
      t.duration_seconds != null ? `${t.duration_seconds.toFixed(1)} s audio` : null,
      t.confidence != null ? `confidence ${fmtPct(t.confidence)}` : null,
      t.fallback ? "fallback engine" : null].filter(Boolean).join(" · ")),
    t.call && (t.call.caller_name || t.call.caller_number)
      ? h("p", { class: "small" }, `Caller: ${[t.call.caller_name, t.call.caller_number].filter(Boolean).join(" ")}`) : null,
    t.text ? h("blockquote", { class: "transcript-text" }, t.text) : null,
    t.error ? h("p", { class: "error" }, t.error) : null)));
}

function replies(detail) {
  const items = detail.replies || [];
  const skipped = detail.replies_skipped || [];
  if (!items.length && !skipped.length) return null;
  return section("replies", "Replies",
    items.map((r) => h("article", { class: "reply", "data-reply-id": r.reply_id, "data-status": r.status },
      h("p", { class: "small" }, statusBadge(r.status), " ", h("strong", {}, r.subject || ""), ` → ${list(r.to)}`,
        r.model ? h("span", { class: "muted" }, ` · ${r.model}`) : null,
        r.reviewable ? h("a", { class: "review-link", href: `#/replies?status=awaiting&reply=${encodeURIComponent(r.reply_id)}` }, " Review…") : null),
      (r.held_reasons || []).length ? h("ul", { class: "held-reasons" }, r.held_reasons.map((x) => h("li", {}, x))) : null,
      r.decision ? h("p", { class: "small muted" }, `${r.decision} by ${r.reviewed_by}${r.reason ? `: ${r.reason}` : ""}`) : null,
      h("pre", { class: "wrap draft-text" }, r.edited_text ?? r.draft_text ?? r.body_text ?? ""))),
    skipped.map((x) => h("p", { class: "reply-skipped muted" }, `No reply: ${x.reason}${x.detail ? ` (${x.detail})` : ""}`)));
}

function deliveries(detail) {
  const items = detail.deliveries || [];
  if (!items.length) return null;
  return section("deliveries", "Deliveries", h("table", { id: "deliveries-table", class: "grid compact" },
    h("thead", {}, h("tr", {}, ["Kind", "To", "Status", "At"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((d) => h("tr", { "data-delivery-id": d.delivery_id || "" },
      h("td", {}, d.kind || ""), h("td", {}, list(d.to)),
      h("td", { title: d.error || d.message_id || "" }, statusBadge(d.status)),
      h("td", {}, timeCell(d.at)))))));
}

function correction(detail, state, onSubmit) {
  const current = detail.corrected_label || detail.label || "";
  const select = h("select", { name: "label", "aria-label": "Correct label" },
    LABELS.map((l) => h("option", { value: l, selected: l === current }, l)));
  const button = h("button", { type: "submit", class: "primary small" }, "Correct");
  const note = h("p", { class: "muted small", "aria-live": "polite" }, state.note || "");
  const form = h("form", { id: "correct-label", class: "inline-form" }, select, button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    onSubmit(select.value, button, note);
  });
  return h("div", {}, form, note);
}

function copyButton(text) {
  const b = h("button", { type: "button", class: "ghost small", title: "Copy" }, "Copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast("Trace id copied", "ok", 2000);
    } catch {
      const sel = window.getSelection();
      const range = document.createRange();
      range.selectNodeContents(document.getElementById("trace-id"));
      sel.removeAllRanges();
      sel.addRange(range);
    }
  });
  return b;
}

/** The body: plain text, or the server-sanitised HTML in a frame with every sandbox flag. */
function body(detail) {
  const wrap = h("section", { id: "body", class: "card body" });
  const hasHtml = Boolean(detail.html_url);
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const panel = h("div", { class: "body-panel" });
  const show = (which) => {
    for (const b of tabs.children) b.setAttribute("aria-selected", String(b.dataset.tab === which));
    clear(panel);
    if (which === "text") {
      panel.append(h("pre", { id: "body-text", class: "wrap body-text" }, detail.body_text || "(no text body)"));
    } else {
      const frame = h("iframe", {
        id: "body-html", title: "Mail HTML (sanitised, sandboxed)", sandbox: "",
        referrerpolicy: "no-referrer", loading: "lazy", class: "body-html",
      });
      panel.append(frame);
      // A frame cannot send the auth header; its URL carries a ticket (60 s, as the
      // WebSocket's) instead of the key. The response carries its own CSP (inline styles of
      // the mail allowed, nothing else, sandbox) and the frame has every sandbox flag: no
      // scripts, no same origin, no forms, no top navigation.
      withTicket(detail.html_url).then((src) => { frame.src = src; },
        (err) => toast(`Could not load the HTML body: ${err.message}`, "error"));
    }
  };
  for (const [name, text] of [["text", "Text"], ...(hasHtml ? [["html", "HTML"]] : [])]) {
    const b = h("button", { type: "button", role: "tab", "data-tab": name, class: "tab" }, text);
    b.addEventListener("click", () => show(name));
    tabs.append(b);
  }
  tabs.hidden = !hasHtml; // one view only: no tabs to choose from
  wrap.append(h("div", { class: "body-head" }, h("h2", {}, "Body"), tabs), panel);
  show(detail.body_text || !hasHtml ? "text" : "html");
  return wrap;
}

export function mount(view, { params, navigate, live }) {
  const key = params.mailKey;
  const state = { note: "", bodyKey: null, bodyEl: null, pending: null };
  let alive = true;
  const root = h("div", { class: "detail", "data-mail-key": key }, h("p", { class: "muted" }, "Loading…"));
  view.append(root);

  async function submitCorrection(label, button, note) {
    button.disabled = true;
    try {
      const res = await api(`/api/v1/mails/${encodeURIComponent(key)}/label`, { method: "POST", body: { label } });
      state.pending = label;
      state.note = `Correction to “${label}” sent${res?.correction_id ? ` (${res.correction_id})` : ""}; waiting for it to come back…`;
      note.textContent = state.note;
      toast(`Label correction to ${label} sent`, "ok");
    } catch (err) {
      toast(`Correction failed: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  function render(detail) {
    if (state.pending && detail.corrected_label === state.pending) {
      state.note = `Corrected to “${state.pending}”.`;
      state.pending = null;
    }
    const scrollY = window.scrollY;
    const bodyKey = `${detail.html_url || ""}|${detail.body_text || ""}`;
    if (bodyKey !== state.bodyKey) {
      state.bodyKey = bodyKey;
      state.bodyEl = body(detail);
    }
    const header = h("header", { class: "detail-head" },
      h("a", { href: listHref(), class: "back", title: "Back to the list (Esc)" }, "← Mails"),
      h("h1", { id: "mail-subject" }, detail.subject || "(no subject)"),
      h("div", { class: "detail-badges" }, statusBadge(detail.status), " ", labelBadge(detail), " ", confidenceCell(detail)),
      facts([
        ["From", detail.from],
        ["To", list(detail.to)],
        ["Received", h("span", {}, timeCell(detail.received_at), h("span", { class: "muted" }, ` · ${fmtStamp(detail.received_at)}`))],
        ["Tenant", detail.tenant],
        ["Mailbox", [detail.source, detail.mailbox].filter(Boolean).join(" · ")],
        ["Message-ID", h("code", { id: "message-id" }, detail.message_id || "")],
        ["Trace id", detail.trace_id ? h("span", {}, h("code", { id: "trace-id" }, detail.trace_id), " ", copyButton(detail.trace_id)) : h("span", { id: "trace-id", class: "muted" }, "none")],
        ["Took", detail.processing_ms != null ? `${fmtMs(detail.processing_ms)} received → classified` : null],
      ], { class: "facts head-facts" }));
    const main = h("div", { class: "detail-main" },
      section("timeline-card", "Timeline", timeline(detail)),
      state.bodyEl);
    const side = h("div", { class: "detail-side" },
      section("classification", "Classification", classification(detail),
        h("h3", {}, "Correct the label"), correction(detail, state, submitCorrection)),
      section("authentication", "Authentication", authentication(detail.authentication)),
      section("documents-card", "Documents", documents(detail)),
      transcripts(detail), replies(detail), deliveries(detail));
    clear(root).append(header, h("div", { class: "detail-grid" }, main, side));
    window.scrollTo(0, scrollY);
  }

  async function load() {
    try {
      const detail = await api(`/api/v1/mails/${encodeURIComponent(key)}`);
      if (alive) render(detail);
    } catch (err) {
      if (!alive) return;
      clear(root).append(h("a", { href: "#/mails", class: "back" }, "← Mails"),
        h("p", { class: "error" }, err instanceof ApiError && err.status === 404
          ? "No such mail (or not visible with this key)." : `Could not load the mail: ${err.message}`));
    }
  }
  const reloadSoon = debounce(load, 250);
  const off = live.on("event", (msg) => {
    if ((msg.data || {}).mail_key === key) reloadSoon();
  });
  const offResync = live.on("resync", () => reloadSoon());
  const onKey = (ev) => {
    const e = ev.detail;
    if (e.key === "Escape" || e.key === "Backspace") {
      e.preventDefault();
      navigate(listHref().slice(1));
    }
  };
  view.addEventListener("pagekey", onKey);
  load();
  return () => {
    alive = false;
    off();
    offResync();
    reloadSoon.cancel();
    view.removeEventListener("pagekey", onKey);
  };
}
