// Node-wide screens beyond deployments: every managed URL (also those that
// redirect or proxy elsewhere), certificates, secrets and the audit log.
// Each is one table polled from its /v1 route; a 403 says which scope is needed.

import { ApiError, get } from "./api.js";
import { badge, h, replace, timeAgo } from "./dom.js";

const REFRESH_MS = 5000;

function table(id, headings, rows, empty) {
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headings.length, class: "empty", text: empty }))),
  );
}

function when(iso) {
  return iso ? h("span", { title: iso, text: timeAgo(iso) }) : "–";
}

function date(iso) {
  return iso ? h("span", { title: iso, text: new Date(iso).toLocaleDateString() }) : "–";
}

function target(u) {
  const t = u.target || {};
  if (t.deployment) return h("a", { href: `#/d/${encodeURIComponent(t.deployment)}/urls`, text: `${t.deployment} port ${t.port}` });
  if (t.redirect) return `redirect to ${t.redirect}${t.permanent === false ? " (temporary)" : ""}`;
  if (t.proxy) return `proxy to ${t.proxy}`;
  return JSON.stringify(t);
}

const SCREENS = {
  urls: {
    title: "URLs",
    path: "/v1/urls",
    hint: "Every managed URL on this node: those serving a deployment, and those that redirect or proxy elsewhere (patrctl url add … --redirect / --proxy).",
    render: (data) =>
      table(
        "all-urls",
        ["URL", "Goes to", "HTTPS certificate", "HTTP → HTTPS"],
        data.urls.map((u) =>
          h(
            "tr",
            { class: u.target && u.target.deployment ? "" : "elsewhere" },
            h("td", {}, h("a", { href: u.url, target: "_blank", rel: "noopener noreferrer", text: u.url })),
            h("td", {}, target(u)),
            h("td", {}, badge(u.tls.status, u.tls.error), u.tls.expires_at ? ` until ${new Date(u.tls.expires_at).toLocaleDateString()}` : ""),
            h("td", { text: u.http_redirect ? "yes" : "no" }),
          ),
        ),
        "No managed URLs.",
      ),
  },
  certs: {
    title: "Certificates",
    path: "/v1/certificates",
    hint: "The certificates patrd holds for managed URLs, with when they renew.",
    render: (data) =>
      table(
        "all-certs",
        ["Domain", "Status", "Issuer", "Valid until", "Renews", "Problem"],
        data.certificates.map((c) =>
          h(
            "tr",
            {},
            h("td", { class: "mono", text: c.domain }),
            h("td", {}, badge(c.status, c.error)),
            h("td", { text: c.issuer || "–" }),
            h("td", {}, date(c.not_after)),
            h("td", {}, date(c.renew_at)),
            h("td", { text: c.error ? `${c.error}${c.failures ? ` (${c.failures} failures)` : ""}` : "–" }),
          ),
        ),
        "No certificates.",
      ),
  },
  secrets: {
    title: "Secrets",
    path: "/v1/secrets",
    hint: "Every secret on this node and the deployments using it. Values are write-only: set them from a deployment's Secrets tab or patrctl secret set.",
    render: (data) =>
      table(
        "all-secrets",
        ["Name", "Version", "Updated", "Used by"],
        data.secrets.map((s) =>
          h(
            "tr",
            {},
            h("td", { class: "mono", text: s.name }),
            h("td", { text: s.version === undefined ? "–" : String(s.version) }),
            h("td", {}, when(s.updated_at)),
            h(
              "td",
              {},
              (s.used_by || []).length
                ? s.used_by.flatMap((d, i) => [i ? ", " : "", h("a", { href: `#/d/${encodeURIComponent(d)}/secrets`, text: d })])
                : h("span", { class: "empty", text: "unused" }),
            ),
          ),
        ),
        "No secrets.",
      ),
  },
  audit: {
    title: "Audit log",
    path: "/v1/audit?limit=200",
    hint: "Who changed what: every request that changes something, and every refused one, newest first.",
    render: (data) =>
      table(
        "audit-rows",
        ["When", "Who", "Request", "Deployment", "Status", "Detail"],
        data.entries.map((e) =>
          h(
            "tr",
            {},
            h("td", {}, when(e.at)),
            h("td", { class: "mono", text: e.who }),
            h("td", { class: "mono", text: `${e.method} ${e.path}` }),
            h("td", {}, e.deployment ? h("a", { href: `#/d/${encodeURIComponent(e.deployment)}`, text: e.deployment }) : "–"),
            h("td", { text: String(e.status) }),
            h("td", { text: e.detail || "" }),
          ),
        ),
        "No entries.",
      ),
  },
};

export const ADMIN_SCREENS = Object.keys(SCREENS);

export function renderAdmin(main, key) {
  const screen = SCREENS[key];
  let alive = true;
  let timer = null;
  const heading = h("h1", { tabindex: "-1", text: screen.title });
  const body = h("div", { id: `${key}-body`, class: "admin-body" }, h("p", { class: "loading", text: "Loading…" }));
  replace(main, h("div", { class: "page-head" }, heading), h("p", { class: "hint", text: screen.hint }), body);
  document.title = `${screen.title} · patrd`;
  heading.focus();
  let shown = "";

  async function refresh() {
    try {
      const data = await get(screen.path);
      const sig = JSON.stringify(data);
      if (alive && sig !== shown) {
        shown = sig;
        replace(body, screen.render(data));
      }
    } catch (err) {
      if (!alive) return;
      if (err instanceof ApiError && err.status === 403) {
        replace(
          body,
          h(
            "p",
            { class: "warning", id: "needs-scope", role: "status" },
            `This needs the admin scope: your session acts with a lower one. Set dashboard.scope = "admin" in patrd's configuration, or read it with patrctl as root (patrctl audit).`,
          ),
        );
        return; // asking again would not change the answer
      }
      replace(body, h("p", { class: "warning", role: "status", text: err.message }));
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
