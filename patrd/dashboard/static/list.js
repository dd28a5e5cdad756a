// The Deployments list: status and ready/desired instances, refreshed every
// 2 s. Rows are keyed by name and updated in place, so a refresh neither
// flickers nor moves keyboard focus.

import { get } from "./api.js";
import { badge, failureReason, h, replace, timeAgo, toast } from "./dom.js";

const REFRESH_MS = 2000;

export function counts(d) {
  const ready = (d.instances || []).filter((i) => i.ready).length;
  const desired = d.intent === "run" ? d.replicas : 0;
  return { ready, desired };
}

function rowCells(d) {
  const { ready, desired } = counts(d);
  const url = (d.urls || [])[0];
  return [
    h("td", {}, h("a", { href: `#/d/${encodeURIComponent(d.name)}`, class: "name", text: d.name })),
    h("td", { class: "status-cell" }, badge(d.status, d.status_reason), failureReason(d.status, d.status_reason)),
    h("td", { class: "num instances", title: `${ready} ready of ${desired} desired`, dataset: { label: "Instances" }, text: `${ready}/${desired}` }),
    h("td", { class: "mono", dataset: { label: "Image" } }, `${d.spec.image}:${d.spec.tag}`),
    h("td", { dataset: { label: "URL" } }, url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: url.replace(/^https?:\/\//, "") }) : "–"),
    h("td", { title: d.updated_at, dataset: { label: "Updated" }, text: timeAgo(d.updated_at) }),
    h("td", {}, h("a", { class: "button small secondary", href: `#/d/${encodeURIComponent(d.name)}`, "aria-label": `Manage ${d.name}`, text: "Manage" })),
  ];
}

// A signature of what a row shows; unchanged rows are not touched.
function signature(d) {
  const { ready, desired } = counts(d);
  return [d.status, d.status_reason, ready, desired, d.spec.tag, (d.urls || [])[0], d.updated_at].join("|");
}

export function renderList(main) {
  let alive = true;
  let timer = null;
  let first = true;
  const tbody = h("tbody", { id: "deployment-rows" });
  const empty = h("p", { class: "empty", hidden: true }, "No deployments yet. ", h("a", { href: "#/create", text: "Create one" }), ".");
  const summary = h("p", { class: "summary", id: "list-summary", "aria-live": "polite" });
  const heading = h("h1", { tabindex: "-1", text: "Deployments" });
  replace(
    main,
    h("div", { class: "page-head" }, heading, h("a", { class: "button primary", href: "#/create", id: "create-button", text: "Create Deployment" })),
    summary,
    h(
      "table",
      { class: "deployments" },
      h("caption", { class: "sr-only", text: "Deployments, their status and instances (ready/desired)" }),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Name", "Status", "Instances", "Image", "URL", "Updated"].map((t) => h("th", { scope: "col", text: t })),
          h("th", { scope: "col" }, h("span", { class: "sr-only", text: "Actions" })),
        ),
      ),
      tbody,
    ),
    empty,
  );
  document.title = "Deployments · patrd";

  const rows = new Map(); // name → {tr, sig}
  function render(deployments) {
    const seen = new Set();
    let previous = null;
    for (const d of deployments) {
      seen.add(d.name);
      const sig = signature(d);
      let row = rows.get(d.name);
      if (!row) {
        row = { tr: h("tr", { dataset: { name: d.name } }, rowCells(d)), sig };
        rows.set(d.name, row);
      } else if (row.sig !== sig) {
        // Update only the cells that change; the name link keeps focus.
        const cells = rowCells(d);
        for (let i = 1; i < cells.length - 1; i += 1) row.tr.replaceChild(cells[i], row.tr.children[i]);
        row.sig = sig;
      }
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    empty.hidden = deployments.length > 0;
    const running = deployments.filter((d) => d.status === "running").length;
    summary.textContent = `${deployments.length} deployments, ${running} running`;
  }

  async function refresh() {
    try {
      const data = await get("/v1/deployments");
      if (!alive) return;
      render(data.deployments);
      if (first) {
        first = false;
        performance.mark("patrd:list-rendered");
        document.body.dataset.listRendered = "1";
      }
    } catch (err) {
      if (alive && err.status !== 401) toast(`Could not load deployments: ${err.message}`, "error");
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
