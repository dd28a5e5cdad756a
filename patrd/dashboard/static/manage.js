// Manage Deployment: a header (status, instances, start/stop, delete) and
// tabs. A tab whose route this daemon does not serve is left out.

import { ApiError, del, enc, features, get, patch, post, put, request } from "./api.js";
import { lineChart } from "./charts.js";
import { badge, bytes, clearErrors, failureReason, field, h, money, replace, showError, timeAgo, toast, uid } from "./dom.js";
import { envEditor, portsEditor, probeEditor, scaleEditor, showProblems } from "./forms.js";
import { counts } from "./list.js";
import { overviewTab } from "./overview.js";

const TABS = [
  { id: "overview", label: "Overview", needs: null },
  { id: "details", label: "Settings", needs: null },
  { id: "urls", label: "URLs", needs: "/v1/urls" },
  { id: "logs", label: "Logs", needs: "/v1/deployments/{name}/logs" },
  { id: "metrics", label: "Metrics", needs: "/v1/deployments/{name}/metrics" },
  { id: "history", label: "Image history", needs: "/v1/deployments/{name}/history" },
  { id: "config", label: "Config mounts", needs: "/v1/deployments/{name}/config/{file}" },
  { id: "secrets", label: "Secrets", needs: "/v1/secrets" },
];
const REFRESH_MS = 2000;

export function renderManage(main, name, initialTab) {
  const base = `/v1/deployments/${enc(name)}`;
  let alive = true;
  let deployment = null;
  let timer = null;
  let tabId = null;
  let tab = null; // {cleanup(), update(deployment)}
  const listeners = new Set();

  const heading = h("h1", { tabindex: "-1", text: name });
  const statusSlot = h("span", { id: "deployment-status" });
  const countSlot = h("span", { class: "instances", id: "deployment-instances" });
  const startStop = h("button", { type: "button", class: "secondary", id: "start-stop", text: "…" });
  const deleteButton = h("button", { type: "button", class: "danger", id: "delete-button", text: "Delete" });
  const redeployButton = h("button", {
    type: "button",
    class: "secondary",
    id: "redeploy-button",
    title: "Pull the tag again; a new digest rolls out as a new release",
    text: "Redeploy",
  });
  const tablist = h("div", { role: "tablist", "aria-label": "Deployment sections", class: "tabs" });
  const panel = h("section", { role: "tabpanel", id: "tab-panel", tabindex: "0", class: "panel" });
  const dialog = deleteDialog();
  replace(
    main,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("a", { href: "#/", class: "back", text: "← Deployments" }), h("div", { class: "title-line" }, heading, statusSlot, countSlot)),
      h("div", { class: "actions" }, redeployButton, startStop, deleteButton),
    ),
    tablist,
    panel,
    dialog.el,
  );
  document.title = `${name} · patrd`;

  // --- header -----------------------------------------------------------------

  function paintHeader(d) {
    replace(statusSlot, badge(d.status, d.status_reason), failureReason(d.status, d.status_reason, "deployment-reason"));
    const { ready, desired } = counts(d);
    countSlot.textContent = `${ready}/${desired} instances ready`;
    startStop.textContent = d.intent === "run" ? "Stop" : "Start";
    startStop.disabled = d.intent === "delete";
    deleteButton.disabled = d.intent === "delete";
    redeployButton.disabled = d.intent === "delete";
  }

  async function refresh() {
    try {
      deployment = await get(base);
      if (!alive) return;
      paintHeader(deployment);
      for (const fn of listeners) fn(deployment);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        toast(`${name} no longer exists`, "info");
        location.hash = "#/";
        return;
      }
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }

  startStop.addEventListener("click", async () => {
    const action = startStop.textContent === "Stop" ? "stop" : "start";
    if (action === "stop" && !window.confirm(`Stop ${name}? Its instances shut down and its URLs stop answering until you start it again.`)) return;
    startStop.disabled = true;
    try {
      const d = await post(`${base}/${action}`);
      paintHeader(d);
      toast(action === "stop" ? `Stopping ${name}` : `Starting ${name}`, "success");
    } catch (err) {
      toast(err.message, "error");
    } finally {
      startStop.disabled = false;
    }
  });
  deleteButton.addEventListener("click", () => dialog.open());
  redeployButton.addEventListener("click", async () => {
    if (!window.confirm(`Redeploy ${name}? patrd pulls ${deployment ? `${deployment.spec.image}:${deployment.spec.tag}` : "the tag"} again; a new image rolls out as a new release.`)) return;
    redeployButton.disabled = true;
    try {
      const d = await post(`${base}/redeploy`);
      paintHeader(d);
      const note = d.redeploy.warning ? " (the registry could not be reached: this node's copy of the tag was used)" : "";
      toast(`${name}: ${d.redeploy.message}${note}`, d.redeploy.changed ? "success" : "info");
      for (const fn of listeners) fn(d);
    } catch (err) {
      toast(err.message, "error");
    } finally {
      redeployButton.disabled = false;
    }
  });

  function deleteDialog() {
    const input = h("input", { type: "text", autocomplete: "off", spellcheck: "false", id: "delete-confirm-input" });
    const volumes = h("input", { type: "checkbox", id: uid("delvol") });
    const volumesRow = h("div", { class: "check", hidden: true }, volumes, h("label", { for: volumes.id, text: "Also delete its volumes (data is lost)" }));
    const confirm = h("button", { type: "submit", class: "danger", id: "delete-confirm", disabled: true, text: "Delete" });
    const cancel = h("button", { type: "button", class: "secondary", text: "Cancel" });
    const titleId = uid("dlg");
    const form = h(
      "form",
      { method: "dialog", novalidate: true },
      h("h2", { id: titleId, text: `Delete ${name}?` }),
      h("p", {}, "This removes its instances and network. It cannot be undone. Type ", h("strong", { class: "mono", text: name }), " to confirm."),
      field("Deployment name", input),
      volumesRow,
      h("div", { class: "form-actions" }, cancel, confirm),
    );
    const el = h("dialog", { "aria-labelledby": titleId, id: "delete-dialog" }, form);
    input.addEventListener("input", () => {
      confirm.disabled = input.value !== name;
    });
    cancel.addEventListener("click", () => el.close());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const query = `confirm=${enc(input.value)}${volumes.checked ? "&delete_volumes=true" : ""}`;
      try {
        await del(`${base}?${query}`);
        el.close();
        toast(`Deleting ${name}`, "success");
        location.hash = "#/";
      } catch (err) {
        showError(form, err.field === "confirm" ? null : err.field, err.message);
      }
    });
    return {
      el,
      open() {
        input.value = "";
        confirm.disabled = true;
        volumesRow.hidden = !(deployment && Object.keys(deployment.spec.volumes || {}).length);
        clearErrors(form);
        el.showModal();
        input.focus();
      },
    };
  }

  // --- tabs -------------------------------------------------------------------

  const tabButtons = new Map();
  function paintTabs(available) {
    replace(tablist);
    for (const t of TABS) {
      if (t.needs && !available.has(t.needs)) continue;
      const button = h("button", {
        type: "button",
        role: "tab",
        id: `tab-${t.id}`,
        "aria-controls": "tab-panel",
        "aria-selected": "false",
        tabindex: "-1",
        text: t.label,
        onclick: () => {
          location.hash = `#/d/${enc(name)}/${t.id}`;
        },
      });
      tabButtons.set(t.id, button);
      tablist.appendChild(button);
    }
  }
  tablist.addEventListener("keydown", (event) => {
    const buttons = [...tabButtons.values()];
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (event.key === "ArrowRight") next = buttons[(index + 1) % buttons.length];
    else if (event.key === "ArrowLeft") next = buttons[(index - 1 + buttons.length) % buttons.length];
    else if (event.key === "Home") next = buttons[0];
    else if (event.key === "End") next = buttons[buttons.length - 1];
    if (next) {
      event.preventDefault();
      next.focus();
      next.click();
    }
  });

  function selectTab(id) {
    const alias = id === "settings" ? "details" : id;
    const wanted = tabButtons.has(alias) ? alias : "overview";
    if (wanted === tabId) return;
    if (tab) tab.cleanup();
    listeners.clear();
    tabId = wanted;
    for (const [tid, button] of tabButtons) {
      button.setAttribute("aria-selected", String(tid === wanted));
      button.tabIndex = tid === wanted ? 0 : -1;
    }
    panel.setAttribute("aria-labelledby", `tab-${wanted}`);
    replace(panel);
    const ctx = { name, base, panel, current: () => deployment, onUpdate: (fn) => listeners.add(fn) };
    tab = TAB_RENDERERS[wanted](ctx);
    if (deployment) for (const fn of listeners) fn(deployment);
  }

  features().then((available) => {
    if (!alive) return;
    paintTabs(available);
    selectTab(initialTab || "overview");
  });
  refresh();
  heading.focus();

  return {
    cleanup() {
      alive = false;
      clearTimeout(timer);
      if (tab) tab.cleanup();
    },
    route(tabName) {
      if (tabButtons.size) selectTab(tabName || "overview");
    },
  };
}

// --- details ----------------------------------------------------------------------

// Key order aside, is every edited part of the settings what the spec holds?
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  }
  return value === undefined ? null : value;
}

function sameSettings(changes, spec) {
  return Object.entries(changes).every(([key, value]) => {
    const before = spec[key];
    if (value && typeof value === "object" && before && typeof before === "object" && !Array.isArray(value)) {
      // Compare only the keys the form edits (a probe may hold more than the form shows).
      const picked = Object.fromEntries(Object.keys(before).filter((k) => key === "env" || key === "ports" || k in value).map((k) => [k, before[k]]));
      return JSON.stringify(canonical(value)) === JSON.stringify(canonical(picked));
    }
    return JSON.stringify(canonical(value)) === JSON.stringify(canonical(before ?? null));
  });
}

function detailsTab({ name, base, panel, onUpdate, current }) {
  const summary = h("dl", { class: "summary" });
  const formSlot = h("div");
  replace(
    panel,
    h("h2", { text: "Settings" }),
    summary,
    formSlot,
  );
  let built = false;

  function paintSummary(d) {
    const s = d.spec;
    const item = (label, ...value) => [h("dt", { text: label }), h("dd", {}, ...value)];
    replace(
      summary,
      item("Registry", h("span", { class: "mono", text: s.registry })),
      item("Image", h("span", { class: "mono", text: s.image })),
      item("Tag", h("span", { class: "mono", id: "immutable-tag", text: s.tag }), " ", h("span", { class: "tag-lock", text: "immutable" })),
      item("Region", s.region),
      item("Revision", `${d.revision}${d.stable_revision && d.stable_revision !== d.revision ? ` (serving ${d.stable_revision})` : ""}`),
      item("Created", h("span", { title: d.created_at, text: timeAgo(d.created_at) })),
      item("Estimated cost", d.estimated_cost ? money(d.estimated_cost) : "–"),
      d.status_reason ? item("Status reason", d.status_reason) : null,
    );
  }

  async function buildForm(d) {
    built = true;
    let secretNames = [];
    try {
      if ((await features()).has("/v1/secrets")) secretNames = (await get("/v1/secrets")).secrets.map((x) => x.name);
    } catch {
      /* plain values still editable */
    }
    const s = d.spec;
    const ports = portsEditor(s.ports);
    const env = envEditor(s.env, secretNames);
    const startup = probeEditor("startup_probe", "Startup probe", s.startup_probe);
    const liveness = probeEditor("liveness_probe", "Liveness probe", s.liveness_probe);
    const scale = scaleEditor(s);
    const pushId = uid("push");
    const push = h("input", { type: "checkbox", id: pushId, checked: s.deploy_on_push, dataset: { field: "deploy_on_push" } });
    const save = h("button", { type: "submit", class: "primary", id: "details-save", text: "Save changes" });
    const form = h(
      "form",
      { id: "details-form", novalidate: true, class: "details-form" },
      h("p", { class: "hint", text: "Changes make a new revision; image, env and resource changes roll out with zero downtime." }),
      ports.el,
      env.el,
      startup.el,
      liveness.el,
      scale.el,
      h("div", { class: "check" }, push, h("label", { for: pushId, text: "Deploy on push" })),
      h("div", { class: "form-actions" }, save),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      if (showProblems([...ports.check(), ...env.check()])) return;
      const changes = {
        ports: ports.value(),
        env: env.value(),
        startup_probe: startup.value(),
        liveness_probe: liveness.value(),
        deploy_on_push: push.checked,
        ...scale.value(),
      };
      const now = current() || d;
      if (sameSettings(changes, now.spec)) {
        toast("No change: nothing to save", "info");
        return;
      }
      save.disabled = true;
      try {
        const updated = await patch(base, changes);
        toast(updated.revision === now.revision ? "No change: nothing to save" : `Saved: revision ${updated.revision}`, "success");
        paintSummary(updated);
      } catch (err) {
        showError(form, err.field, err.message);
      } finally {
        save.disabled = false;
      }
    });
    replace(formSlot, h("h3", { text: "Change settings" }), form);
  }

  onUpdate((d) => {
    paintSummary(d);
    if (!built) buildForm(d);
  });
  if (current()) buildForm(current());
  return { cleanup() {} };
}

// --- URLs -------------------------------------------------------------------------

function urlsTab({ name, panel, onUpdate }) {
  const defaults = h("ul", { class: "links", id: "default-urls" });
  const rows = h("tbody", { id: "managed-urls" });
  const domain = h("input", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "app.example.com", dataset: { field: "domain" } });
  const path = h("input", { type: "text", value: "/", class: "mono", dataset: { field: "path" } });
  const port = h("select", { dataset: { field: "target.port" } });
  const redirectId = uid("redir");
  const redirect = h("input", { type: "checkbox", id: redirectId, checked: true, dataset: { field: "http_redirect" } });
  const add = h("button", { type: "submit", class: "primary", text: "Add URL" });
  const form = h(
    "form",
    { novalidate: true, id: "url-form", class: "inline-form" },
    field("Domain", domain),
    field("Path prefix", path),
    field("Port", port),
    h("div", { class: "check" }, redirect, h("label", { for: redirectId, text: "Redirect HTTP to HTTPS" })),
    add,
  );
  replace(
    panel,
    h("h2", { text: "URLs" }),
    h("h3", { text: "Default URLs" }),
    defaults,
    h("h3", { text: "Managed URLs" }),
    h("p", { class: "hint", text: "Your own domains: point their DNS at this server; patrd gets the certificate." }),
    h("table", {}, h("thead", {}, h("tr", {}, ["URL", "Port", "HTTPS certificate", "HTTP → HTTPS", ""].map((t) => h("th", { scope: "col", text: t })))), rows),
    h("h3", { text: "Add a managed URL" }),
    form,
  );

  let shown = null;
  async function load() {
    try {
      const data = await get("/v1/urls");
      const mine = data.urls.filter((u) => u.target && u.target.deployment === name);
      const sig = JSON.stringify(mine);
      if (sig === shown) return; // unchanged: keep the rows (and keyboard focus)
      shown = sig;
      replace(
        rows,
        mine.map((u) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: u.url, target: "_blank", rel: "noopener noreferrer", text: u.url })),
            h("td", { text: String(u.target.port) }),
            h("td", {}, badge(u.tls.status, u.tls.error), u.tls.expires_at ? ` until ${new Date(u.tls.expires_at).toLocaleDateString()}` : ""),
            h("td", { text: u.http_redirect ? "yes" : "no" }),
            h("td", {}, h("button", {
              type: "button",
              class: "small danger-text",
              "aria-label": `Remove ${u.domain}${u.path}`,
              text: "Remove",
              onclick: async () => {
                try {
                  await del(`/v1/urls/${enc(u.id)}`);
                  toast(`Removed ${u.domain}${u.path}`, "success");
                  load();
                } catch (err) {
                  toast(err.message, "error");
                }
              },
            })),
          ),
        ),
      );
      if (!mine.length) rows.appendChild(h("tr", {}, h("td", { colspan: 5, class: "empty", text: "No managed URLs." })));
    } catch (err) {
      toast(err.message, "error");
    }
  }

  let portsSeen = "";
  onUpdate((d) => {
    replace(defaults, (d.urls || []).map((u) => h("li", {}, h("a", { href: u, target: "_blank", rel: "noopener noreferrer", class: "default-url", text: u }))));
    const ports = Object.keys(d.spec.ports);
    if (ports.join() !== portsSeen) {
      portsSeen = ports.join();
      replace(port, ports.map((p) => h("option", { value: p, text: p })));
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      await post("/v1/urls", {
        domain: domain.value.trim(),
        path: path.value.trim() || "/",
        target: { deployment: name, port: Number(port.value) },
        http_redirect: redirect.checked,
      });
      toast(`Added ${domain.value.trim()}`, "success");
      domain.value = "";
      load();
    } catch (err) {
      showError(form, err.field, err.message);
    }
  });
  load();
  const timer = setInterval(load, 5000);
  return { cleanup: () => clearInterval(timer) };
}

// --- logs -------------------------------------------------------------------------

const MAX_LOG_LINES = 2000;

function logsTab({ base, panel, onUpdate }) {
  const instance = h("select", { id: "log-instance" }, h("option", { value: "", text: "All instances" }));
  const followId = uid("follow");
  const follow = h("input", { type: "checkbox", id: followId, checked: true });
  const clearButton = h("button", { type: "button", class: "secondary small", text: "Clear" });
  const output = h("div", { id: "log-output", class: "log", role: "log", tabindex: "0", "aria-label": "Log lines" });
  const state = h("p", { class: "hint", id: "log-state", "aria-live": "polite" });
  replace(
    panel,
    h("h2", { text: "Logs" }),
    h("div", { class: "toolbar" }, field("Instance", instance), h("div", { class: "check" }, follow, h("label", { for: followId, text: "Follow" })), clearButton),
    state,
    output,
  );
  let controller = null;

  function line(entry) {
    const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
    const t = entry.t ? entry.t.slice(11, 23) : "";
    output.appendChild(
      h(
        "div",
        { class: `logline ${entry.stream === "stderr" ? "stderr" : ""}`, dataset: { instance: entry.instance || "" } },
        h("span", { class: "t", text: t }),
        h("span", { class: "inst", text: entry.instance || "" }),
        h("span", { class: "text", text: entry.line }),
      ),
    );
    while (output.children.length > MAX_LOG_LINES) output.firstChild.remove();
    if (atBottom) output.scrollTop = output.scrollHeight;
  }

  async function stream() {
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    replace(output);
    const params = new URLSearchParams({ tail: "200" });
    if (follow.checked) params.set("follow", "true");
    if (instance.value) params.set("instance", instance.value);
    state.textContent = follow.checked ? "Following new lines…" : "Showing the last 200 lines.";
    try {
      const resp = await request("GET", `${base}/logs?${params}`, { raw: true, signal: mine.signal });
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut = buffer.indexOf("\n");
        while (cut >= 0) {
          const text = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 1);
          if (text.trim()) {
            try {
              line(JSON.parse(text));
            } catch {
              line({ line: text });
            }
          }
          cut = buffer.indexOf("\n");
        }
      }
      if (mine === controller && follow.checked) state.textContent = "The log stream ended.";
    } catch (err) {
      if (err.name === "AbortError" || mine !== controller) return;
      state.textContent = `Log stream interrupted (${err.message}); reconnecting…`;
      reconnect = setTimeout(() => {
        if (mine === controller) stream();
      }, 2000);
    }
  }
  let reconnect = null;

  // Nothing to show and no instance to show it: say why (as patrctl logs does).
  let explained = false;
  function explainEmpty(d) {
    const none = !(d.instances || []).length && !output.children.length;
    if (none) {
      const why = d.status_reason ? `${d.status}: ${d.status_reason}` : d.status;
      state.textContent = `No log lines: ${d.name} has no instances (${why}).`;
    } else if (explained) {
      state.textContent = follow.checked ? "Following new lines…" : "Showing the last 200 lines.";
    }
    explained = none;
  }

  let seen = "";
  onUpdate((d) => {
    explainEmpty(d);
    const names = (d.instances || []).map((i) => i.name).sort();
    if (names.join() === seen) return;
    seen = names.join();
    const chosen = instance.value;
    replace(instance, h("option", { value: "", text: "All instances" }), names.map((n) => h("option", { value: n, text: n, selected: n === chosen })));
    if (chosen && !names.includes(chosen)) {
      instance.appendChild(h("option", { value: chosen, text: `${chosen} (gone)`, selected: true }));
    }
  });
  instance.addEventListener("change", stream);
  follow.addEventListener("change", stream);
  clearButton.addEventListener("click", () => replace(output));
  stream();
  return {
    cleanup() {
      clearTimeout(reconnect);
      if (controller) controller.abort();
      controller = null;
    },
  };
}

// --- metrics ----------------------------------------------------------------------

function metricsTab({ base, panel }) {
  const range = h("select", { id: "metrics-range" }, ["hour", "day", "week"].map((r) => h("option", { value: r, text: `Last ${r}` })));
  const charts = h("div", { class: "charts", id: "metrics-charts" });
  const current = h("tbody");
  replace(
    panel,
    h("h2", { text: "Metrics" }),
    h("div", { class: "toolbar" }, field("Range", range)),
    charts,
    h("h3", { text: "Now, per instance" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["Instance", "CPU", "Memory", "Network in", "Network out"].map((t) => h("th", { scope: "col", text: t })))), current),
  );
  const memoryScale = { scale: 0 }; // kept across the 10 s reloads
  async function load() {
    try {
      const m = await get(`${base}/metrics?range=${range.value}`);
      const times = m.points.map((p) => Date.parse(p.t));
      const pick = (key) => m.points.map((p) => (p[key] === null || p[key] === undefined ? null : p[key]));
      if (!m.points.length) {
        replace(charts, h("p", { class: "empty", text: "No samples yet: patrd samples running instances every few seconds." }));
      } else {
        replace(
          charts,
          lineChart({
            title: "CPU (cores)",
            times,
            series: [
              { name: "used", values: pick("cpu_cores"), className: "s1" },
              { name: "allocated", values: pick("cpu_allocation_cores"), className: "s2" },
            ],
            format: (v) => v.toFixed(2),
          }),
          lineChart({
            title: "Memory",
            times,
            series: [
              { name: "used", values: pick("memory_bytes"), className: "s1" },
              { name: "limit", values: pick("memory_limit_bytes"), className: "s2" },
            ],
            format: bytes,
            binary: true,
            state: memoryScale,
            scales: [
              { label: "Zoom to usage", by: ["used"] },
              { label: "Up to the limit", by: ["used", "limit"] },
            ],
          }),
          lineChart({
            title: "Network (per second)",
            times,
            series: [
              { name: "in", values: pick("rx_bytes_per_s"), className: "s1" },
              { name: "out", values: pick("tx_bytes_per_s"), className: "s3" },
            ],
            format: (v) => `${bytes(v)}/s`,
            binary: true,
          }),
        );
      }
      replace(
        current,
        m.current.map((c) =>
          h(
            "tr",
            {},
            h("td", { class: "mono", text: c.instance }),
            h("td", { text: `${c.cpu_cores.toFixed(2)} of ${c.cpu_allocation_cores}` }),
            h("td", { text: `${bytes(c.memory_bytes)} of ${bytes(c.memory_limit_bytes)}` }),
            h("td", { text: `${bytes(c.rx_bytes_per_s)}/s` }),
            h("td", { text: `${bytes(c.tx_bytes_per_s)}/s` }),
          ),
        ),
      );
      if (!m.current.length) current.appendChild(h("tr", {}, h("td", { colspan: 5, class: "empty", text: "No running instances." })));
    } catch (err) {
      replace(charts, h("p", { class: "empty", text: `Metrics unavailable: ${err.message}` }));
    }
  }
  range.addEventListener("change", load);
  load();
  const timer = setInterval(load, 10000);
  return { cleanup: () => clearInterval(timer) };
}

// --- image history -----------------------------------------------------------------

function historyTab({ base, panel }) {
  const rows = h("tbody", { id: "history-rows" });
  replace(
    panel,
    h("h2", { text: "Image history" }),
    h("p", { class: "hint", text: "Every release's exact image: settings changes keep it, only a push, Redeploy or a revert brings another. Reverting runs that image again (pulled by digest if it left this node), with zero downtime, as a new revision." }),
    h(
      "table",
      { class: "history" },
      h("thead", {}, h("tr", {}, ["Release", "How", "What changed", "Digest", "State", "Deployed", ""].map((t) => h("th", { scope: "col", text: t })))),
      rows,
    ),
  );
  let signature = "";
  async function load() {
    try {
      const data = await get(`${base}/history`);
      const sig = JSON.stringify(data.history);
      if (sig === signature) return;
      signature = sig;
      const live = data.history.find((e) => e.state === "deployed");
      // Settings-only revisions fold under the release they changed (the next older one).
      const folded = new Map();
      let owner = null;
      for (const e of [...data.history].reverse()) {
        if (e.release === false && owner) folded.get(owner).push(e);
        else {
          owner = e;
          folded.set(e, []);
        }
      }
      const changed = (e) => (e.changes && e.changes.length ? e.changes.join("; ") : e.how === "create" ? "first release" : "–");
      replace(
        rows,
        [...folded.keys()].reverse().flatMap((e) => {
          const settings = folded.get(e);
          const sub = settings.length
            ? h(
                "tr",
                { class: "folded", dataset: { release: String(e.revision) } },
                h(
                  "td",
                  { colspan: 7 },
                  h(
                    "details",
                    {},
                    h("summary", { text: `${settings.length} settings change${settings.length > 1 ? "s" : ""} on this release` }),
                    h(
                      "ul",
                      {},
                      [...settings].reverse().map((x) =>
                        h("li", { dataset: { revision: String(x.revision) } }, `revision ${x.revision}: ${changed(x)} `, badge(x.state, x.reason), x.deployed_at ? ` ${timeAgo(x.deployed_at)}` : ""),
                      ),
                    ),
                  ),
                ),
              )
            : null;
          return [releaseRow(e), sub].filter(Boolean);
        }),
      );
      return;
      function releaseRow(e) {
          const short = e.digest ? e.digest.replace("sha256:", "").slice(0, 12) : "–";
          const shortId = e.image_id ? e.image_id.replace("sha256:", "").slice(0, 12) : "–";
          const sameImage = live && e.image_id && e.image_id === live.image_id;
          const action = !e.image_id
            ? ""
            : e.release === false && e !== live
              ? h("span", { class: "hint", text: "settings change" })
            : e === live
              ? h("span", { class: "current", text: "running now" })
              : sameImage
                ? h("span", { class: "hint", text: "the image running now" })
                : h("button", {
                  type: "button",
                  class: "small secondary revert",
                  dataset: { imageId: e.image_id, digest: e.digest || "" },
                  "aria-label": `Revert to this version (${e.digest ? short : shortId})`,
                  text: "Revert to this version",
                  onclick: async (event) => {
                    if (!window.confirm(`Revert to revision ${e.revision}'s image (${e.digest ? short : shortId})? It runs again as a new revision, with zero downtime.`)) return;
                    event.target.disabled = true;
                    try {
                      const d = await post(`${base}/revert`, { ref: String(e.revision) });
                      toast(`Reverting to ${e.digest ? short : shortId}: revision ${d.revision}`, "success");
                      load();
                    } catch (err) {
                      toast(err.message, "error");
                      event.target.disabled = false;
                    }
                  },
                });
          return h(
            "tr",
            { dataset: { revision: String(e.revision) } },
            h("td", { text: String(e.revision) }),
            h("td", { text: e.release === false ? "settings" : e.how || "–" }),
            h("td", { class: "changes", text: changed(e) }),
            h("td", { class: "mono", title: `${e.digest_ref || ""} image ${e.image_id || ""}`, text: short === "–" ? shortId : short }),
            h("td", {}, badge(e.state, e.reason)),
            h("td", { title: e.deployed_at || "", text: e.deployed_at ? timeAgo(e.deployed_at) : "–" }),
            h("td", {}, action),
          );
      }
    } catch (err) {
      toast(err.message, "error");
    }
  }
  load();
  const timer = setInterval(load, 2000);
  return { cleanup: () => clearInterval(timer) };
}

// --- config mounts -------------------------------------------------------------------

function configTab({ base, panel, onUpdate }) {
  const files = h("ul", { class: "files", id: "config-files" });
  const editorSlot = h("div", { class: "config-editor" });
  const newName = h("input", { type: "text", placeholder: "app.conf", autocomplete: "off", class: "mono", dataset: { field: "file" } });
  const newForm = h("form", { novalidate: true, class: "inline-form", id: "config-new" }, field("New file name", newName), h("button", { type: "submit", class: "secondary", text: "Write new file" }));
  replace(
    panel,
    h("h2", { text: "Config mounts" }),
    h("p", { class: "hint", text: "Files in /etc/config, read-only in the containers. Saving updates them in running instances, without a restart." }),
    h("div", { class: "config-layout" }, h("nav", { "aria-label": "Config files" }, files, newForm), editorSlot),
  );
  let names = [];
  let open = null;

  async function edit(fileName, isNew = false) {
    open = fileName;
    paintFiles();
    let text = "";
    if (!isNew) {
      try {
        const resp = await request("GET", `${base}/config/${enc(fileName)}`, { raw: true });
        const buf = await resp.arrayBuffer();
        try {
          text = new TextDecoder("utf-8", { fatal: true }).decode(buf);
        } catch {
          replace(editorSlot, h("p", { class: "empty", text: `${fileName} is not UTF-8 text; replace it with patrctl config put.` }));
          return;
        }
      } catch (err) {
        toast(err.message, "error");
        return;
      }
    }
    const area = h("textarea", { id: "config-editor", class: "mono", rows: 14, spellcheck: "false", value: text, dataset: { field: "file" } });
    const save = h("button", { type: "submit", class: "primary", id: "config-save", text: "Save" });
    const remove = h("button", { type: "button", class: "danger-text", text: "Delete file", hidden: isNew });
    const form = h("form", { novalidate: true }, field(`Contents of ${fileName}`, area), h("div", { class: "form-actions" }, remove, save));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      save.disabled = true;
      try {
        await request("PUT", `${base}/config/${enc(fileName)}`, { text: area.value });
        toast(`Saved ${fileName}: live in /etc/config/${fileName}`, "success");
        remove.hidden = false;
        if (!names.includes(fileName)) names = [...names, fileName].sort();
        paintFiles();
      } catch (err) {
        showError(form, err.field === "file" ? "file" : err.field, err.message);
      } finally {
        save.disabled = false;
      }
    });
    remove.addEventListener("click", async () => {
      try {
        await request("DELETE", `${base}/config/${enc(fileName)}`);
        toast(`Deleted ${fileName}`, "success");
        names = names.filter((n) => n !== fileName);
        open = null;
        paintFiles();
        replace(editorSlot);
      } catch (err) {
        toast(err.message, "error");
      }
    });
    replace(editorSlot, form);
    area.focus();
  }

  function paintFiles() {
    replace(
      files,
      names.map((n) =>
        h("li", {}, h("button", { type: "button", class: "file", "aria-pressed": String(n === open), text: n, onclick: () => edit(n) })),
      ),
    );
    if (!names.length) files.appendChild(h("li", { class: "empty", text: "No files yet." }));
  }

  newForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(newForm);
    const fileName = newName.value.trim();
    if (!fileName) {
      showError(newForm, "file", "give the file a name");
      return;
    }
    newName.value = "";
    edit(fileName, !names.includes(fileName));
  });

  let seen = null;
  onUpdate((d) => {
    const now = Object.keys(d.spec.config_mounts || {}).sort();
    if (now.join("\n") === seen) return;
    seen = now.join("\n");
    names = now;
    paintFiles();
  });
  return { cleanup() {} };
}

// --- secrets ----------------------------------------------------------------------------

function secretsTab({ name, panel, onUpdate }) {
  const rows = h("tbody", { id: "secret-rows" });
  const newName = h("input", { type: "text", autocomplete: "off", spellcheck: "false", dataset: { field: "name" } });
  const newValue = h("input", { type: "password", autocomplete: "new-password", dataset: { field: "value" } });
  const newForm = h(
    "form",
    { novalidate: true, class: "inline-form", id: "secret-new" },
    field("Name", newName),
    field("Value", newValue),
    h("button", { type: "submit", class: "primary", text: "Create secret" }),
  );
  replace(
    panel,
    h("h2", { text: "Secrets" }),
    h("p", { class: "hint" }, "The secrets this deployment uses (and those made here, until an env variable uses them). Values are write-only: patrd never shows them again. Setting a new value rolls out the deployments that use it. ", h("a", { href: "#/secrets", text: "All secrets on this node" })),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Version", "Updated", "Used by", ""].map((t) => h("th", { scope: "col", text: t })))), rows),
    h("h3", { text: "New secret" }),
    newForm,
  );
  let used = new Set();
  const createdHere = new Set();

  async function load() {
    try {
      const all = await get("/v1/secrets");
      const data = { secrets: all.secrets.filter((s) => used.has(s.name) || (s.used_by || []).includes(name) || createdHere.has(s.name)) };
      replace(
        rows,
        data.secrets.map((s) => {
          const value = h("input", { type: "password", autocomplete: "new-password" });
          const set = h("form", { novalidate: true, class: "set-secret", hidden: true }, field(`New value of ${s.name}`, value), h("button", { type: "submit", class: "primary small", text: "Save value" }));
          const toggle = h("button", { type: "button", class: "secondary small", "aria-expanded": "false", text: "Set value" });
          toggle.addEventListener("click", () => {
            set.hidden = !set.hidden;
            toggle.setAttribute("aria-expanded", String(!set.hidden));
            if (!set.hidden) value.focus();
          });
          set.addEventListener("submit", async (event) => {
            event.preventDefault();
            clearErrors(set);
            try {
              await put(`/v1/secrets/${enc(s.name)}`, { value: value.value });
              value.value = "";
              set.hidden = true;
              toast(`New value of ${s.name} saved`, "success");
              load();
            } catch (err) {
              value.value = "";
              showError(set, null, err.message);
            }
          });
          return h(
            "tr",
            { class: used.has(s.name) ? "used" : "" },
            h("td", { class: "mono", text: s.name }),
            h("td", { text: s.version === undefined ? "–" : String(s.version) }), // read scope: names only
            h("td", { title: s.updated_at, text: timeAgo(s.updated_at) }),
            h("td", { text: (s.used_by || []).join(", ") || "–" }),
            h("td", {}, toggle, set),
          );
        }),
      );
      if (!data.secrets.length) rows.appendChild(h("tr", {}, h("td", { colspan: 5, class: "empty", text: "This deployment uses no secrets." })));
    } catch (err) {
      toast(err.message, "error");
    }
  }
  newForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(newForm);
    try {
      await post("/v1/secrets", { name: newName.value.trim(), value: newValue.value });
      createdHere.add(newName.value.trim());
      toast(`Created secret ${newName.value.trim()}`, "success");
      newName.value = "";
      newValue.value = "";
      load();
    } catch (err) {
      newValue.value = "";
      showError(newForm, err.field, err.message);
    }
  });
  onUpdate((d) => {
    const refs = new Set(Object.values(d.spec.env || {}).filter((v) => v && typeof v === "object").map((v) => v.secret));
    if ([...refs].join() !== [...used].join()) {
      used = refs;
      load();
    }
  });
  load();
  return { cleanup() {} };
}

const TAB_RENDERERS = {
  overview: overviewTab,
  details: detailsTab,
  urls: urlsTab,
  logs: logsTab,
  metrics: metricsTab,
  history: historyTab,
  config: configTab,
  secrets: secretsTab,
};
