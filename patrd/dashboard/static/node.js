// The Node page: the host's CPU, load, memory, swap, network, watched disks
// (GET /v1/node, every 5 s), its newest events, and the notification targets
// with their delivery counts (GET /v1/notifications, when the daemon has it).

import { features, get, post, enc } from "./api.js";
import { bytes, eventText, h, replace, timeAgo, toast } from "./dom.js";

const REFRESH_MS = 5000;

function pct(n) {
  return `${Number(n).toFixed(1)}%`;
}

function meter(value, { low, high, label }) {
  // <meter> needs no style attribute (the CSP forbids them) and tells screen readers the value.
  return h("meter", { min: 0, max: 100, low, high, optimum: 0, value: Math.max(0, Math.min(100, value)), "aria-label": label });
}

function card(id, title, value, detail, gauge) {
  return h("section", { class: "node-card", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title`, text: title }),
    h("p", { class: "node-value", text: value }),
    gauge || null,
    h("p", { class: "hint", text: detail }),
  );
}

function rate(now, before, key, dt) {
  if (!before || dt <= 0) return "–";
  return `${bytes(Math.max(0, (now.network[key] - before.network[key]) / dt))}/s`;
}

function cards(node, before) {
  const dt = before ? node.at - before.at : 0;
  const mem = node.memory;
  const used = 100 - (mem.available / mem.total) * 100;
  const swapPct = node.swap.total ? (node.swap.used / node.swap.total) * 100 : 0;
  return h("div", { class: "node-cards" },
    card("node-cpu", "CPU", pct(node.cpu.percent), `${node.cpu.count} cores · load ${node.load["1m"].toFixed(2)} / ${node.load["5m"].toFixed(2)} / ${node.load["15m"].toFixed(2)}`,
      meter(node.cpu.percent, { low: 70, high: 90, label: "CPU busy" })),
    card("node-memory", "Memory", `${bytes(mem.available)} available`, `${bytes(mem.total - mem.available)} of ${bytes(mem.total)} in use`,
      meter(used, { low: 100 - node.thresholds.memory_low_percent - 10, high: 100 - node.thresholds.memory_low_percent, label: "memory in use" })),
    card("node-swap", "Swap", node.swap.total ? pct(swapPct) : "none", `${bytes(node.swap.used)} of ${bytes(node.swap.total)}`,
      node.swap.total ? meter(swapPct, { low: 50, high: 80, label: "swap in use" }) : null),
    card("node-network", "Network", `↓ ${rate(node, before, "bytes_recv", dt)} ↑ ${rate(node, before, "bytes_sent", dt)}`,
      `${bytes(node.network.bytes_recv)} in, ${bytes(node.network.bytes_sent)} out since boot · up ${(node.uptime_s / 86400).toFixed(1)} d`),
  );
}

function disks(node) {
  const low = node.thresholds.disk_low_percent;
  return h("table", { class: "node-disks", id: "node-disks" },
    h("caption", { class: "sr-only", text: "Watched disks" }),
    h("thead", {}, h("tr", {}, ["Disk", "Path", "Mount", "Size", "Free", "Used"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, node.disks.map((d) => h("tr", { dataset: { label: d.label }, class: d.free_percent < low ? "low" : null },
      h("td", { class: "name", text: d.label }),
      h("td", { class: "mono", text: d.path }),
      h("td", { class: "mono", text: d.mount }),
      h("td", { class: "num", text: bytes(d.total) }),
      h("td", { class: "num", text: `${bytes(d.free)} (${pct(d.free_percent)})` }),
      h("td", {}, meter(d.used_percent, { low: 100 - low - 10, high: 100 - low, label: `${d.label} used` })),
    ))),
  );
}

function events(node) {
  if (!node.events.length) return h("p", { class: "empty", text: "No node events yet." });
  return h("ol", { class: "events", id: "node-events" },
    [...node.events].reverse().map((e) => h("li", {},
      h("time", { datetime: e.at, title: e.at, text: timeAgo(e.at) }), " ",
      h("span", { class: "kind", text: e.kind }), " ", eventText(e.kind, e.message))));
}

function targets(data, onTest) {
  if (!data.notifications.length) {
    return h("p", { class: "empty" }, "No notification targets. Add [[notify]] to the config or run ", h("code", { text: "patrctl notify add" }), ".");
  }
  return h("table", { class: "node-notify", id: "notify-targets" },
    h("caption", { class: "sr-only", text: "Notification targets" }),
    h("thead", {}, h("tr", {}, ["Name", "Type", "Events", "Source", "Sent", "Failed", "Retries", ""].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, data.notifications.map((t) => h("tr", { dataset: { name: t.name } },
      h("td", { class: "name", text: t.name }),
      h("td", { text: t.type }),
      h("td", { class: "mono", text: t.events.join(", ") }),
      h("td", { text: t.source }),
      h("td", { class: "num", text: String(t.sent) }),
      h("td", { class: "num", text: String(t.failed) }),
      h("td", { class: "num", text: String(t.retries) }),
      h("td", {}, h("button", { type: "button", class: "small secondary", "aria-label": `Send a test to ${t.name}`, text: "Test", onclick: () => onTest(t.name) })),
    ))),
  );
}

export function renderNode(main) {
  let alive = true;
  let timer = null;
  let before = null;
  const heading = h("h1", { tabindex: "-1", text: "Node" });
  const alerts = h("p", { class: "warning", id: "node-alerts", role: "status", hidden: true });
  const overview = h("div", { id: "node-overview" }, h("p", { class: "loading", text: "Loading…" }));
  const disksBox = h("div", { id: "node-disks-box" });
  const eventsBox = h("div", { id: "node-events-box" });
  const notifyBox = h("div", { id: "notify-box" });
  const notifySection = h("section", { hidden: true, id: "notify-section" }, h("h2", { text: "Notifications" }), notifyBox);
  replace(main,
    h("div", { class: "page-head" }, heading),
    alerts, overview,
    h("h2", { text: "Disks" }), disksBox,
    h("h2", { text: "Events" }), eventsBox,
    notifySection);
  document.title = "Node · patrd";
  heading.focus();

  async function test(name) {
    try {
      await post(`/v1/notifications/${enc(name)}/test`, {});
      toast(`Test notification queued for ${name}`);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function refresh() {
    try {
      const node = await get("/v1/node?events=20");
      if (!alive) return;
      replace(overview, cards(node, before));
      replace(disksBox, disks(node));
      replace(eventsBox, events(node));
      alerts.hidden = node.alerts.length === 0;
      alerts.textContent = node.alerts.length ? `Below threshold: ${node.alerts.join(", ")}` : "";
      before = node;
      if ((await features()).has("/v1/notifications")) {
        const data = await get("/v1/notifications");
        if (!alive) return;
        notifySection.hidden = false;
        replace(notifyBox, targets(data, test));
      }
    } catch (err) {
      if (alive) toast(err.message, "error");
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
