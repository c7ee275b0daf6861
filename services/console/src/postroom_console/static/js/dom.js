// Small DOM helpers. Everything is built with createElement/textContent: no innerHTML with
// data, so mail subjects and addresses can never become markup, and no style attributes, so
// the page works under the console's strict Content-Security-Policy (style-src 'self').

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "text") {
      el.textContent = value;
    } else if (name === "style") {
      throw new Error("no style attributes: the page CSP forbids them; use a class");
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("td", {class: "x"}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  return apply(document.createElement(tag), attrs, children);
}

/** An SVG element (charts). */
export function s(tag, attrs = {}, ...children) {
  return apply(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** "14:03:07" today, "Nov 30 14:03" otherwise (local time); full ISO goes in the title. */
export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  const month = d.toLocaleString("en", { month: "short" });
  const year = d.getFullYear() === now.getFullYear() ? "" : ` ${d.getFullYear()}`;
  return `${month} ${d.getDate()}${year} ${hms.slice(0, 5)}`;
}

/** Date and time with milliseconds, local, for the timeline. */
export function fmtStamp(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function timeCell(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, fmtTime(iso));
}

/** 850 ms, 1.24 s, 3 min 5 s, 2 h 4 min. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "–";
  const v = Number(ms);
  if (v < 0) return `−${fmtMs(-v)}`; // clocks of two hosts a little apart
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  if (v < 3_600_000) return `${Math.floor(v / 60_000)} min ${Math.round((v % 60_000) / 1000)} s`;
  return `${Math.floor(v / 3_600_000)} h ${Math.round((v % 3_600_000) / 60_000)} min`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function fmtPct(x) {
  if (x === null || x === undefined) return "";
  return `${Math.round(Number(x) * 100)}%`;
}

export function fmtInt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

export const LABELS = ["meeting", "promotion", "intro", "voicemail", "order", "support", "spam",
  "unknown"];
export const STATUSES = ["received", "parsed", "classified", "failed"];

/** The label badge: the corrected label wins; the model's label stays visible in the title. */
export function labelBadge(mail) {
  const label = mail.corrected_label || mail.label;
  if (!label) return h("span", { class: "label-badge label-none", title: "not classified yet" }, "—");
  const corrected = Boolean(mail.corrected_label);
  const title = corrected
    ? `corrected to ${mail.corrected_label}${mail.label ? ` (model said ${mail.label})` : ""}`
    : `${label}${mail.confidence != null ? `, confidence ${fmtPct(mail.confidence)}` : ""}`;
  return h("span", { class: ["label-badge", `label-${label}`, corrected && "corrected"],
    "data-label": label, title }, label, corrected ? h("span", { class: "mark", "aria-label": "corrected" }, " ✎") : null);
}

export function confidenceCell(mail) {
  if (mail.corrected_label || mail.confidence === null || mail.confidence === undefined) return "";
  const pct = Math.round(Number(mail.confidence) * 100);
  const level = pct >= 80 ? "high" : pct >= 50 ? "mid" : "low";
  return h("span", { class: ["confidence", `conf-${level}`], title: `confidence ${pct}%` }, `${pct}%`);
}

export function statusBadge(status) {
  return h("span", { class: ["status", `status-${status || "unknown"}`] }, status || "?");
}

/** A short-lived message in the corner (errors, confirmations). */
export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  const el = h("div", { class: ["toast", `toast-${kind}`] }, message);
  box.append(el);
  setTimeout(() => el.remove(), ms);
}

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** Lines of the form "key: value" in a definition list; skips empty values. */
export function facts(pairs, attrs = {}) {
  const dl = h("dl", { class: "facts", ...attrs });
  for (const [key, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(h("dt", {}, key), h("dd", {}, value));
  }
  return dl;
}

export function emptyRow(colspan, text) {
  return h("tr", { class: "empty" }, h("td", { colspan }, text));
}
