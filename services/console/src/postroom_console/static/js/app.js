// The console's single page: hash routes, the signed-in session, the shell (navigation, live
// indicator) and the keyboard. Each page is a module with mount(view, ctx) -> cleanup.

import { api, auth, unauthorizedListeners } from "./api.js";
import { clear, h } from "./dom.js";
import { live } from "./live.js";
import * as deadLetters from "./pages/deadletters.js";
import * as detail from "./pages/detail.js";
import * as mailboxes from "./pages/mailboxes.js";
import * as mails from "./pages/mails.js";
import * as outbox from "./pages/outbox.js";
import * as replies from "./pages/replies.js";
import * as signin from "./pages/signin.js";
import * as stats from "./pages/stats.js";
import * as tenants from "./pages/tenants.js";

const view = document.getElementById("view");
const topbar = document.getElementById("topbar");
let cleanup = null;

/** "#/mails/abc?x=1" -> {parts: ["mails", "abc"], query: URLSearchParams}. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?", 2);
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(qs) };
}

export function navigate(path, { replace = false } = {}) {
  const target = `#${path.startsWith("/") ? path : `/${path}`}`;
  if (replace) {
    history.replaceState(null, "", target);
    route();
  } else if (location.hash === target) {
    route();
  } else {
    location.hash = target;
  }
}

function pageFor(parts) {
  const [first, second] = parts;
  if (first === "signin") return { page: signin, name: "signin" };
  if (first === "mails" && second) return { page: detail, name: "mails", params: { mailKey: second } };
  if (first === "stats") return { page: stats, name: "stats" };
  if (first === "dead-letters") return { page: deadLetters, name: "dead-letters" };
  if (first === "outbox") return { page: outbox, name: "outbox" };
  if (first === "replies") return { page: replies, name: "replies" };
  if (first === "mailboxes") return { page: mailboxes, name: "mailboxes" };
  if (first === "tenants") return { page: tenants, name: "tenants" };
  return { page: mails, name: "mails" };
}

async function ensureSession() {
  if (auth.session) return auth.session;
  if (!auth.key) return null;
  try {
    auth.session = await api("/api/v1/session");
    return auth.session;
  } catch {
    auth.clear();
    return null;
  }
}

function renderShell(session, name) {
  topbar.hidden = !session;
  document.body.classList.toggle("signed-in", Boolean(session));
  if (!session) return;
  for (const a of document.querySelectorAll("#nav a")) {
    a.hidden = a.hasAttribute("data-admin") && !session.admin;
    a.classList.toggle("active", a.dataset.route === name);
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const who = document.getElementById("who");
  const scope = session.admin ? "admin" : session.tenant || "tenant";
  clear(who).append(
    ...(session.name && session.name !== scope ? [h("span", { class: "who-name" }, session.name)] : []),
    h("span", { class: ["who-scope", session.admin ? "admin" : "tenant"], title: session.admin ? "admin key: every tenant" : `tenant key: ${scope} only` }, scope),
  );
}

export async function route() {
  const { parts, query } = parseHash();
  const session = await ensureSession();
  let target = pageFor(parts);
  if (!session && target.name !== "signin") {
    const back = location.hash && !location.hash.startsWith("#/signin") ? location.hash.slice(1) : "";
    history.replaceState(null, "", `#/signin${back ? `?next=${encodeURIComponent(back)}` : ""}`);
    target = { page: signin, name: "signin" };
  }
  if (session && live.stopped) live.start(auth.key);
  if (cleanup) {
    try { cleanup(); } catch (err) { console.error(err); }
    cleanup = null;
  }
  renderShell(session, target.name);
  clear(view);
  view.dataset.page = target.name;
  document.title = `Postroom console${target.name === "signin" ? "" : ` · ${target.name}`}`;
  const ctx = { params: target.params || {}, query, session, navigate, live, signedIn };
  const result = target.page.mount(view, ctx);
  cleanup = typeof result === "function" ? result : null;
}

/** Called by the sign-in page with the checked session. */
function signedIn(key, session, next) {
  auth.set(key);
  auth.session = session;
  live.lastSequence = null;
  live.start(key);
  navigate(next || "/mails", { replace: true });
}

function signOut() {
  live.stop();
  auth.clear();
  auth.session = null;
  navigate("/signin", { replace: true });
}

unauthorizedListeners.add(() => {
  if (auth.session) signOut();
});
live.on("unauthorized", () => {
  if (auth.session) signOut();
});

document.getElementById("signout").addEventListener("click", signOut);

// Live indicator in the top bar.
const liveStatus = document.getElementById("live-status");
live.on("state", ({ state }) => {
  liveStatus.dataset.state = state;
  liveStatus.querySelector(".text").textContent =
    { open: "live", connecting: "connecting…", waiting: "reconnecting…", closed: "offline" }[state] || state;
});

// Keyboard: single keys when no field has focus; "g" then a letter to go to a page.
const help = document.getElementById("help");
document.getElementById("help-button").addEventListener("click", () => help.showModal());
let pendingG = false;
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  const typing = t instanceof HTMLElement &&
    (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  if (typing) {
    if (e.key === "Escape") t.blur();
    return;
  }
  if (!auth.session) return;
  if (pendingG) {
    pendingG = false;
    const go = { m: "/mails", s: "/stats", d: "/dead-letters", o: "/outbox", t: "/tenants", r: "/replies", b: "/mailboxes" }[e.key];
    if (go) {
      e.preventDefault();
      navigate(go);
    }
    return;
  }
  if (e.key === "g") {
    pendingG = true;
    setTimeout(() => { pendingG = false; }, 1500);
  } else if (e.key === "?") {
    e.preventDefault();
    if (help.open) help.close(); else help.showModal();
  } else {
    // Page-level keys (j/k/Enter/Escape, "/") go to the page through a DOM event.
    view.dispatchEvent(new CustomEvent("pagekey", { detail: e }));
  }
});

window.addEventListener("hashchange", route);
route();
