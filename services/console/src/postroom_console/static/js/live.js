// The live feed: one WebSocket for the whole page (/api/v1/ws), reconnected with exponential
// backoff and resumed from the last sequence seen, so a dropped connection loses nothing.
// Pages subscribe to "event" (an email_event message), "resync" (too much was missed: reload)
// and "state" (connecting / open / closed, for the indicator).

import { ticket } from "./api.js";

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export class LiveFeed extends EventTarget {
  constructor() {
    super();
    this.key = null;
    this.socket = null;
    this.lastSequence = null; // highest stream sequence seen; null: nothing yet (live only)
    this.attempt = 0;
    this.timer = null;
    this.state = "closed";
    this.stopped = true;
    this.resyncPending = false;
  }

  start(key) {
    this.stop();
    this.key = key;
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, "signed out");
      this.socket = null;
    }
    this.setState("closed");
  }

  /** Pages tell the feed what they loaded, so a first connect resumes from there. */
  noteSequence(seq) {
    const n = Number(seq);
    if (Number.isFinite(n) && n > 0 && (this.lastSequence === null || n > this.lastSequence)) {
      this.lastSequence = n;
    }
  }

  /** The feed's URL with a fresh ticket (the key itself never goes into a URL). */
  async url() {
    const url = new URL("/api/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("ticket", await ticket(this.key));
    if (this.lastSequence !== null) url.searchParams.set("since", String(this.lastSequence));
    return url.toString();
  }

  async connect() {
    if (this.stopped) return;
    this.setState("connecting");
    const key = this.key;
    let socket;
    try {
      const url = await this.url();
      if (this.stopped || key !== this.key) return; // signed out (or in again) meanwhile
      socket = new WebSocket(url);
    } catch (err) {
      if (err && err.status === 401) {
        // The key is not valid (revoked?): retrying would not help.
        this.stop();
        this.dispatchEvent(new CustomEvent("unauthorized"));
        return;
      }
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.setState("open");
      if (this.resyncPending) {
        // The server asked for a resync and closed the feed (an overflow, a rebuild of the
        // projection): what the pages reloaded then may have been read mid-rebuild, and
        // what was applied while disconnected was sent to nobody. Reload once more now that
        // the feed is back; from here on every applied event arrives on this connection.
        this.resyncPending = false;
        this.dispatchEvent(new CustomEvent("resync", { detail: { reconnected: true } }));
      }
    };
    socket.onmessage = (msg) => {
      const type = this.handle(msg.data);
      // A resync followed by more messages on the same connection (a long backlog): the
      // reload already done is enough.
      if (type && type !== "resync") this.resyncPending = false;
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = null;
      this.setState("closed");
      this.scheduleReconnect();
    };
    socket.onerror = () => { /* onclose follows and reconnects */ };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2); // jitter: many tabs don't reconnect in step
    this.attempt += 1;
    this.setState("waiting", delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  handle(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return null;
    }
    this.attempt = 0; // a message arrived: the connection works, next drop starts fast again
    if (msg.type === "email_event") {
      this.noteSequence(msg.sequence);
      this.dispatchEvent(new CustomEvent("event", { detail: msg }));
    } else if (msg.type === "resync") {
      if (msg.sequence || msg.position) this.noteSequence(msg.sequence || msg.position);
      this.resyncPending = true; // cleared if the connection stays open (see onclose)
      this.dispatchEvent(new CustomEvent("resync", { detail: msg }));
    } else if (msg.type === "hello") {
      this.noteSequence(msg.position ?? msg.sequence);
    } else if (msg.type === "error" && msg.status === 401) {
      // The key is not valid (revoked?): retrying would not help.
      this.stop();
      this.dispatchEvent(new CustomEvent("unauthorized"));
    } else if (msg.type === "stats") {
      this.dispatchEvent(new CustomEvent("stats", { detail: msg }));
    }
    return msg.type || null;
  }

  setState(state, delay) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, delay } }));
  }

  /** Subscribe; returns the function that unsubscribes (pages call it when they unmount). */
  on(type, fn) {
    const wrapped = (e) => fn(e.detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }
}

export const live = new LiveFeed();
