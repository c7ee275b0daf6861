// The console's REST API with the signed-in key. The key lives in sessionStorage: it goes
// when the tab closes, and is never put in a URL: where a browser cannot send a header (the
// WebSocket, the mail's HTML frame) the URL carries a ticket instead, valid for 60 s.

const STORAGE = "postroom.console.key";

export const auth = {
  get key() { return sessionStorage.getItem(STORAGE); },
  set(key) { sessionStorage.setItem(STORAGE, key); },
  clear() { sessionStorage.removeItem(STORAGE); },
  session: null, // {name, tenant, admin} once checked
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Listeners called with no argument when the server says the key is not (or no longer) valid. */
export const unauthorizedListeners = new Set();

function buildUrl(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    url.searchParams.set(k, String(v));
  }
  return url;
}

function headers(key, extra = {}) {
  const out = { Accept: "application/json", ...extra };
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return { title: res.statusText, status: res.status };
  }
}

/** GET/POST JSON. Throws ApiError; a 401 also tells the app to sign out. */
export async function api(path, { method = "GET", params, body, key = auth.key, signal } = {}) {
  const res = await fetch(buildUrl(path, params), {
    method,
    headers: headers(key, body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!res.ok) {
    const problem = await problemOf(res);
    if (res.status === 401 && key === auth.key) unauthorizedListeners.forEach((fn) => fn());
    throw new ApiError(res.status, problem);
  }
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

function filenameFrom(disposition) {
  if (!disposition) return null;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  if (star) return decodeURIComponent(star[1].trim());
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1].trim() : null;
}

/** Download a file that needs the auth header: fetch it, then save the blob. */
export async function download(path, fallbackName = "download") {
  const res = await fetch(buildUrl(path), { headers: headers(auth.key, { Accept: "*/*" }) });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  const blob = await res.blob();
  const name = filenameFrom(res.headers.get("Content-Disposition")) || fallbackName;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}

/** A short-lived ticket for a URL (?ticket=) that cannot carry the Authorization header. */
export async function ticket(key = auth.key) {
  const got = await api("/api/v1/tickets", { method: "POST", key });
  return got.ticket;
}

/** ``path`` with a fresh ticket in its query. */
export async function withTicket(path) {
  const url = new URL(path, location.origin);
  url.searchParams.set("ticket", await ticket());
  return url.pathname + url.search;
}
