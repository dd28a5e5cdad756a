// The manage screen's first tab: what a user looks for first. The URL(s) with
// an Open link, status with its reason, ready instances, the release running
// now (digest, when, how), the last deploy's result, CPU and memory over the
// last hour (sparklines, refreshed every 15 s), then Instances and Events.

import { get } from "./api.js";
import { badge, bytes, eventText, h, replace, timeAgo } from "./dom.js";
import { counts } from "./list.js";
import { usageLine } from "./sparkline.js";

const USAGE_REFRESH_MS = 15000;

const HOW = {
  create: "created",
  push: "registry push",
  redeploy: "Redeploy",
  revert: "revert",
  poll: "registry poll",
  settings: "settings change",
};

function shortDigest(entry) {
  const ref = entry.digest || entry.image_id || "";
  return ref ? ref.replace("sha256:", "").slice(0, 12) : "–";
}

// The release running now and the newest revision's result, from the history API.
export function releaseFacts(history) {
  const live = history.find((e) => e.state === "deployed") || null;
  const last = history.length ? history.reduce((a, b) => (b.revision > a.revision ? b : a)) : null;
  return { live, last };
}

export function overviewTab({ name, base, panel, onUpdate }) {
  const urls = h("ul", { class: "links", id: "overview-urls" });
  const facts = h("dl", { class: "summary", id: "overview-facts" });
  const instances = h("tbody");
  const events = h("ol", { class: "events", id: "overview-events" });
  const usage = h("dd", { id: "overview-usage" }, "…");
  replace(
    panel,
    h(
      "section",
      { class: "overview-card", "aria-labelledby": "overview-title" },
      h("h2", { id: "overview-title", text: "Overview" }),
      urls,
      facts,
    ),
    h("h3", { text: "Instances" }),
    h(
      "table",
      { class: "instances-table" },
      h("thead", {}, h("tr", {}, ["Instance", "State", "Ready", "Address", "Revision", "Restarts", "Probe"].map((t) => h("th", { scope: "col", text: t })))),
      instances,
    ),
    h("h3", { text: "Recent events" }),
    events,
  );
  let alive = true;
  let lastEvent = 0;
  let history = [];
  let deployment = null;

  function paintFacts() {
    const d = deployment;
    if (!d) return;
    const { ready, desired } = counts(d);
    const { live, last } = releaseFacts(history);
    const item = (label, id, ...value) => [h("dt", { text: label }), h("dd", { id }, ...value)];
    const release = live
      ? [
          h("span", { class: "mono", title: live.digest || live.image_id || "", text: shortDigest(live) }),
          ` · revision ${live.revision}`,
          live.deployed_at ? h("span", { title: live.deployed_at, text: ` · ${timeAgo(live.deployed_at)}` }) : "",
          ` · ${HOW[live.how] || live.how || "deployed"}`,
        ]
      : ["none running yet"];
    replace(
      facts,
      item("Status", "overview-status", badge(d.status, d.status_reason), d.status_reason ? ` ${d.status_reason}` : ""),
      item("Ready instances", "overview-ready", `${ready} of ${desired}`),
      item("Image", "overview-image", h("span", { class: "mono", text: `${d.spec.image}:${d.spec.tag}` })),
      item("Current release", "overview-release", ...release),
      last
        ? item(
            "Last deploy",
            "overview-last",
            `revision ${last.revision} `,
            badge(last.state, last.reason),
            last.reason ? ` ${last.reason}` : "",
          )
        : null,
      h("dt", { text: "CPU and memory" }),
      usage,
    );
  }

  let usageTimer = null;
  async function loadUsage() {
    try {
      const m = await get(`${base}/metrics?range=hour`);
      if (alive) replace(usage, ...usageLine(m, bytes));
    } catch (err) {
      if (alive) replace(usage, h("span", { class: "empty", text: `Metrics unavailable: ${err.message}` }));
    }
    if (alive) usageTimer = setTimeout(loadUsage, USAGE_REFRESH_MS);
  }
  loadUsage();

  function paintUrls(d) {
    const list = d.urls || [];
    replace(
      urls,
      list.length
        ? list.map((u) =>
            h(
              "li",
              {},
              h("span", { class: "mono overview-url", text: u }),
              " ",
              h("a", { href: u, target: "_blank", rel: "noopener noreferrer", class: "button small secondary", "aria-label": `Open ${u}`, text: "Open" }),
            ),
          )
        : [h("li", { class: "empty", text: "No URL: the deployment publishes no HTTP port." })],
    );
  }

  async function loadHistory() {
    try {
      history = (await get(`${base}/history`)).history;
    } catch {
      history = [];
    }
    if (alive) paintFacts();
  }

  let fetching = false;
  async function paintEvents() {
    if (fetching) return; // one request at a time, or the same events arrive twice
    fetching = true;
    try {
      const data = await get(`${base}/events?after=${lastEvent}&limit=100`);
      for (const e of data.events) {
        lastEvent = Math.max(lastEvent, e.id);
        events.prepend(h("li", {}, h("time", { datetime: e.at, title: e.at, text: new Date(e.at).toLocaleTimeString() }), " ", h("span", { class: "kind", text: e.kind }), " ", eventText(e.kind, e.message)));
      }
      while (events.children.length > 50) events.lastChild.remove();
    } catch {
      /* next refresh */
    } finally {
      fetching = false;
    }
  }

  onUpdate((d) => {
    deployment = d;
    paintUrls(d);
    paintFacts();
    loadHistory();
    replace(
      instances,
      (d.instances || []).map((i) =>
        h(
          "tr",
          {},
          h("td", { class: "mono", text: i.name }),
          h("td", { text: i.state }),
          h("td", { text: i.ready ? "yes" : "no" }),
          h("td", { class: "mono", text: i.address || "–" }),
          h("td", { text: String(i.revision) }),
          h("td", { text: String(i.restarts) }),
          h("td", { text: i.probe ? `${i.probe.phase || ""} ${i.probe.last || ""}`.trim() || "–" : "–" }),
        ),
      ),
    );
    if (!(d.instances || []).length) instances.appendChild(h("tr", {}, h("td", { colspan: 7, class: "empty", text: "No instances." })));
    paintEvents();
  });
  return {
    cleanup() {
      alive = false;
      clearTimeout(usageTimer);
    },
  };
}
