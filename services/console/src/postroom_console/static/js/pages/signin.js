// Sign-in: an API key, checked with GET /api/v1/session before it is kept (sessionStorage).

import { ApiError, api } from "../api.js";
import { h } from "../dom.js";

export function mount(view, { query, signedIn }) {
  const input = h("input", {
    id: "signin-key", name: "key", type: "password", autocomplete: "current-password",
    required: true, spellcheck: "false", placeholder: "pr_…", "aria-describedby": "signin-hint",
  });
  const error = h("p", { id: "signin-error", class: "error", role: "alert", hidden: true });
  const button = h("button", { id: "signin-submit", type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { id: "signin-form", class: "signin card", novalidate: true },
    h("h1", {}, "Postroom console"),
    h("label", { for: "signin-key" }, "API key"),
    input,
    h("p", { id: "signin-hint", class: "hint" },
      "An admin key sees every tenant; a tenant key sees its own mail. ",
      "The key is kept in this tab only. ",
      "scripts/stack prints an admin key when it starts."),
    error,
    button,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    error.hidden = true;
    if (!key) {
      error.textContent = "Enter an API key.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    try {
      const session = await api("/api/v1/session", { key });
      signedIn(key, session, query.get("next"));
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "This key is not valid (or has been revoked)."
        : `Could not sign in: ${err.message}`;
      error.hidden = false;
      button.disabled = false;
      button.textContent = "Sign in";
      input.select();
    }
  });
  view.append(h("div", { class: "signin-wrap" }, form));
  input.focus();
}
