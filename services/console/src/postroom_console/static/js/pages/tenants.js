// Tenants from the registry: domains, mailboxes and what each does, PBXs.

import { api } from "../api.js";
import { clear, emptyRow, h } from "../dom.js";
import { tenantsOf } from "./mails.js";

export function mount(view) {
  const tbody = h("tbody", {});
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Tenants")),
    h("div", { class: "table-wrap" }, h("table", { id: "tenants-table", class: "grid" },
      h("thead", {}, h("tr", {}, ["Slug", "Name", "Domains", "Mailboxes", "PBXs", "Enabled", ""].map((t) => h("th", { scope: "col" }, t)))),
      tbody)));
  let alive = true;
  api("/api/v1/tenants").then((body) => {
    if (!alive) return;
    const tenants = tenantsOf(body);
    clear(tbody);
    if (!tenants.length) tbody.append(emptyRow(7, "No tenants."));
    for (const t of tenants) {
      const mailboxes = Object.entries(t.mailboxes || {}).map(([name, m]) =>
        h("div", { class: "small", title: m.description || "" }, h("strong", {}, name), ` ${(m.actions || []).join(", ")}`));
      tbody.append(h("tr", { "data-tenant": t.slug },
        h("td", { class: "mono" }, t.slug),
        h("td", {}, t.name || ""),
        h("td", {}, (t.domains || []).join(", ")),
        h("td", {}, mailboxes),
        h("td", {}, (t.pbxs || []).map((p) => p.name).join(", ")),
        h("td", {}, t.enabled === false ? h("span", { class: "status status-failed" }, "disabled") : h("span", { class: "status status-classified" }, "enabled")),
        h("td", {}, h("a", { href: `#/mails?tenant=${encodeURIComponent(t.slug)}` }, "Mails →"))));
    }
  }).catch((err) => {
    if (alive) clear(tbody).append(emptyRow(7, `Could not load tenants: ${err.message}`));
  });
  return () => { alive = false; };
}
