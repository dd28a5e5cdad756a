// Editors for the parts of a deployment spec, shared by the create form and
// the details tab. Each returns {el, value()}; value() gives the API's JSON
// for that part and tags rows with data-field so a 422 lands next to them.

import { declared } from "./api.js";
import { field, h, uid } from "./dom.js";

// A number input's bounds from the create shape the daemon declares; with
// `fill`, its default too when the input is still empty (a new deployment).
// `then` runs once they are set.
function bounded(input, path, { fill = false, then = null } = {}) {
  declared("CreateDeployment", path).then((schema) => {
    if (schema) {
      if (schema.minimum !== undefined) input.min = schema.minimum;
      if (schema.maximum !== undefined) input.max = schema.maximum;
      if (fill && input.value === "" && schema.default !== undefined) input.value = schema.default;
    }
    if (then) then();
  });
  return input;
}

// --- checks before the API: every problem of a form at once, in words ---------

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// problems: [{input, message}]; each message goes under its input. The first
// input gets the focus. Returns the number shown.
export function showProblems(problems) {
  problems.forEach(({ input, message }, i) => {
    const id = uid("err");
    const note = h("p", { class: "field-error", id, role: i === 0 ? "alert" : null, text: message });
    (input.closest(".field") || input.parentElement).appendChild(note);
    input.setAttribute("aria-invalid", "true");
    const described = input.getAttribute("aria-describedby");
    input.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
  });
  if (problems.length) problems[0].input.focus();
  return problems.length;
}

// Rows whose name is empty while something else was typed, and names used twice.
function nameProblems(rows, { noun, filled }) {
  const problems = [];
  const seen = new Map();
  for (const row of rows) {
    const name = row.nameInput.value.trim();
    if (!name) {
      if (filled(row)) problems.push({ input: row.nameInput, message: `This ${noun} has no name: give it one, or remove the row.` });
      else problems.push({ input: row.nameInput, message: `Empty ${noun} row: fill it in or remove it.` });
      continue;
    }
    if (seen.has(name)) problems.push({ input: row.nameInput, message: `${name} is already used by another ${noun} above; each name once.` });
    else seen.set(name, row);
  }
  return problems;
}

// "repo:tag" or "repo@sha256:…" typed in the image field → {image, tag, digest}
// (tag and digest null when not typed; "repo:tag@digest" gives all three).
export function splitImageRef(text) {
  let value = text.trim();
  let digest = null;
  const at = value.indexOf("@");
  if (at > 0) {
    digest = value.slice(at + 1);
    value = value.slice(0, at);
  }
  const slash = value.lastIndexOf("/");
  const colon = value.lastIndexOf(":");
  if (colon > slash && colon > 0) return { image: value.slice(0, colon), tag: value.slice(colon + 1), digest };
  return { image: value, tag: null, digest };
}

function removeButton(label, onClick) {
  return h("button", { type: "button", class: "icon danger-text", "aria-label": label, onclick: onClick }, "Remove");
}

function rowsEditor({ legend, hint, fieldName, addLabel, makeRow, initial }) {
  const rows = h("div", { class: "rows" });
  const add = h("button", { type: "button", class: "secondary small add", text: addLabel });
  const box = h(
    "fieldset",
    { class: "editor", dataset: { field: fieldName } },
    h("legend", { text: legend }),
    hint ? h("p", { class: "hint", text: hint }) : null,
    rows,
    add,
  );
  const addRow = (...args) => {
    const row = makeRow(...args);
    row.el.classList.add("row");
    row.el.appendChild(
      removeButton(`Remove this ${legend.toLowerCase().replace(/s$/, "")}`, () => {
        row.el.remove();
        entries.splice(entries.indexOf(row), 1);
      }),
    );
    entries.push(row);
    rows.appendChild(row.el);
    return row;
  };
  const entries = [];
  add.addEventListener("click", () => {
    const row = addRow();
    const first = row.el.querySelector("input, select, textarea");
    if (first) first.focus();
  });
  for (const item of initial) addRow(...item);
  return { el: box, entries, addRow };
}

export function portsEditor(initial) {
  const editor = rowsEditor({
    legend: "Ports",
    hint: "Container ports for HTTP; each is served at http://<port>-<name>.<base domain>. At least one.",
    fieldName: "ports",
    addLabel: "Add port",
    initial: Object.entries(initial || { 80: "http" }),
    makeRow: (port = "", proto = "http") => {
      const input = h("input", { type: "number", min: 1, max: 65535, value: port, class: "port", required: true });
      const select = h("select", {}, h("option", { value: "http", text: "HTTP", selected: proto === "http" }));
      const el = h("div", {}, field("Port", input), field("Protocol", select));
      return { el, input, select };
    },
  });
  return {
    el: editor.el,
    value() {
      const ports = {};
      for (const row of editor.entries) {
        const key = row.input.value.trim();
        if (!key) continue;
        row.el.dataset.field = `ports.${key}`;
        ports[key] = row.select.value;
      }
      return ports;
    },
    numbers() {
      return editor.entries.map((r) => Number(r.input.value)).filter((n) => n > 0);
    },
    check() {
      const problems = [];
      const seen = new Set();
      for (const row of editor.entries) {
        const text = row.input.value.trim();
        const n = Number(text);
        // A number out of range is the API's to name; an empty or repeated one it never sees.
        if (!text) problems.push({ input: row.input, message: "Empty port: type a port number or remove the row." });
        else if (seen.has(n)) problems.push({ input: row.input, message: `Port ${n} is listed twice; keep one.` });
        else seen.add(n);
      }
      if (!editor.entries.length) problems.push({ input: editor.el.querySelector("button.add"), message: "Add at least one port." });
      return problems;
    },
  };
}

export function envEditor(initial, secretNames) {
  const names = secretNames || [];
  const editor = rowsEditor({
    legend: "Environment variables",
    hint: "A plain value is stored as it is; use a secret for passwords and keys (never shown again).",
    fieldName: "env",
    addLabel: "Add variable",
    initial: Object.entries(initial || {}),
    makeRow: (name = "", value = "") => {
      const isSecret = typeof value === "object" && value !== null;
      const nameInput = h("input", { type: "text", value: name, autocomplete: "off", spellcheck: "false", class: "mono env-name" });
      const kind = h(
        "select",
        { class: "env-kind" },
        h("option", { value: "value", text: "Value", selected: !isSecret }),
        h("option", { value: "secret", text: "Secret", selected: isSecret }),
      );
      const valueInput = h("input", { type: "text", value: isSecret ? "" : value, autocomplete: "off", class: "env-value" });
      const secretSelect = h(
        "select",
        { class: "env-secret" },
        names.length ? null : h("option", { value: "", text: "(no secrets yet)" }),
        names.map((n) => h("option", { value: n, text: n, selected: isSecret && value.secret === n })),
      );
      if (isSecret && !names.includes(value.secret)) {
        secretSelect.appendChild(h("option", { value: value.secret, text: value.secret, selected: true }));
      }
      const valueField = field("Value", valueInput);
      const secretField = field("Secret", secretSelect);
      const sync = () => {
        valueField.hidden = kind.value !== "value";
        secretField.hidden = kind.value !== "secret";
      };
      kind.addEventListener("change", sync);
      sync();
      const el = h("div", {}, field("Name", nameInput), field("Kind", kind), valueField, secretField);
      return { el, nameInput, kind, valueInput, secretSelect };
    },
  });
  return {
    el: editor.el,
    value() {
      const env = {};
      for (const row of editor.entries) {
        const name = row.nameInput.value.trim();
        if (!name) continue;
        row.el.dataset.field = `env.${name}`;
        row.secretSelect.dataset.field = `env.${name}.secret`;
        env[name] = row.kind.value === "secret" ? { secret: row.secretSelect.value } : row.valueInput.value;
      }
      return env;
    },
    check() {
      const problems = nameProblems(editor.entries, {
        noun: "variable",
        filled: (row) => row.valueInput.value !== "" || row.kind.value === "secret",
      });
      for (const row of editor.entries) {
        const name = row.nameInput.value.trim();
        if (name && !ENV_NAME.test(name)) {
          problems.push({ input: row.nameInput, message: `${name} is not a valid name: use letters, digits and underscores, not starting with a digit.` });
        }
        if (row.kind.value === "secret" && !row.secretSelect.value) {
          problems.push({ input: row.secretSelect, message: "Choose a secret (create one on the Secrets page first)." });
        }
      }
      return problems;
    },
  };
}

function utf8Base64(text) {
  const data = new TextEncoder().encode(text);
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function configMountsEditor() {
  const editor = rowsEditor({
    legend: "Config mounts",
    hint: "Files mounted read-only in /etc/config; edit them later and running instances see the change.",
    fieldName: "config_mounts",
    addLabel: "Write new file",
    initial: [],
    makeRow: () => {
      const nameInput = h("input", { type: "text", placeholder: "app.conf", autocomplete: "off", class: "mono config-name" });
      const content = h("textarea", { rows: 4, class: "mono config-content", spellcheck: "false" });
      const el = h("div", { class: "wide" }, field("File name", nameInput), field("Contents", content));
      return { el, nameInput, content };
    },
  });
  return {
    el: editor.el,
    value() {
      const files = {};
      for (const row of editor.entries) {
        const name = row.nameInput.value.trim();
        if (!name) continue;
        row.el.dataset.field = `config_mounts.${name}`;
        files[name] = utf8Base64(row.content.value);
      }
      return files;
    },
    check() {
      return nameProblems(editor.entries, { noun: "file", filled: (row) => row.content.value !== "" });
    },
  };
}

export function volumesEditor() {
  const editor = rowsEditor({
    legend: "Volumes",
    hint: "Each instance gets its own volume. With volumes, min and max scale must be equal.",
    fieldName: "volumes",
    addLabel: "Add volume",
    initial: [],
    makeRow: () => {
      const nameInput = h("input", { type: "text", placeholder: "data", autocomplete: "off" });
      const path = h("input", { type: "text", placeholder: "/var/lib/app", class: "mono" });
      const size = bounded(h("input", { type: "number", value: 1 }), "volumes.*.size_gb");
      const el = h("div", {}, field("Name", nameInput), field("Path", path), field("Size (GB)", size));
      return { el, nameInput, path, size };
    },
  });
  return {
    el: editor.el,
    value() {
      const volumes = {};
      for (const row of editor.entries) {
        const name = row.nameInput.value.trim();
        if (!name) continue;
        row.el.dataset.field = `volumes.${name}`;
        row.path.dataset.field = `volumes.${name}.path`;
        row.size.dataset.field = `volumes.${name}.size_gb`;
        volumes[name] = { path: row.path.value.trim(), size_gb: numberOr(row.size.value) };
      }
      return volumes;
    },
    check() {
      const problems = nameProblems(editor.entries, { noun: "volume", filled: (row) => row.path.value.trim() !== "" });
      for (const row of editor.entries) {
        if (row.nameInput.value.trim() && !row.path.value.trim().startsWith("/")) {
          problems.push({ input: row.path, message: "Type the absolute path to mount it at, e.g. /var/lib/app." });
        }
      }
      return problems;
    },
  };
}

export function probeEditor(key, label, initial) {
  const id = uid(key);
  const enabled = h("input", { type: "checkbox", id, checked: Boolean(initial) });
  const port = h("input", { type: "number", min: 1, max: 65535, value: initial ? initial.port : 80 });
  const path = h("input", { type: "text", value: initial ? initial.path : "/", class: "mono" });
  port.dataset.field = `${key}.port`;
  path.dataset.field = `${key}.path`;
  const details = h("div", { class: "inline" }, field("Port", port), field("Path", path));
  const sync = () => {
    details.hidden = !enabled.checked;
  };
  enabled.addEventListener("change", sync);
  sync();
  const hint =
    key === "startup_probe"
      ? "An instance gets traffic once GET port/path answers 200–399."
      : "Restarted after repeated failures of GET port/path.";
  const el = h(
    "fieldset",
    { class: "editor", dataset: { field: key } },
    h("legend", { text: label }),
    h("div", { class: "check" }, enabled, h("label", { for: id, text: `Use a ${label.toLowerCase()}` })),
    h("p", { class: "hint", text: hint }),
    details,
  );
  return {
    el,
    value() {
      if (!enabled.checked) return null;
      const body = { port: numberOr(port.value), path: path.value.trim() || "/" };
      // The fields this form does not edit stay as they are.
      for (const [k, v] of Object.entries(initial || {})) {
        if (!(k in body) && v !== undefined) body[k] = v;
      }
      return body;
    },
  };
}

// Scale and resources: {el, value()} → {scale, resources}; `onChange` fires on edits.
export function scaleEditor(spec, onChange) {
  // A new deployment starts from the declared defaults (max: min's, as the API does).
  const scale = (spec && spec.scale) || {};
  const resources = (spec && spec.resources) || {};
  const fill = !spec;
  const number = (path, value, extra = {}) =>
    h("input", { type: "number", value: value ?? "", dataset: { field: path }, ...extra });
  const min = number("scale.min", scale.min);
  const max = number("scale.max", scale.max);
  const target = number("scale.target_cpu", scale.target_cpu);
  const cpu = number("resources.cpu", resources.cpu, { step: 0.25 });
  const memory = number("resources.memory_mb", resources.memory_mb, { step: 64 });
  const changed = () => {
    if (onChange) onChange();
  };
  bounded(min, "scale.min", {
    fill,
    then: () => {
      if (max.value === "") max.value = min.value;
      changed();
    },
  });
  bounded(max, "scale.max");
  for (const [input, path] of [
    [target, "scale.target_cpu"],
    [cpu, "resources.cpu"],
    [memory, "resources.memory_mb"],
  ]) {
    bounded(input, path, { fill, then: changed });
  }
  const el = h(
    "div",
    { class: "scale" },
    h(
      "fieldset",
      { class: "editor" },
      h("legend", { text: "Horizontal scale" }),
      h("p", { class: "hint", text: "patrd keeps at least min instances and adds up to max when CPU use stays above the target." }),
      h("div", { class: "inline" }, field("Minimum instances", min), field("Maximum instances", max), field("Target CPU (%)", target)),
    ),
    h(
      "fieldset",
      { class: "editor" },
      h("legend", { text: "Resource allocation (per instance)" }),
      h("div", { class: "inline" }, field("CPU (cores)", cpu), field("Memory (MB)", memory)),
    ),
  );
  if (onChange) for (const input of [min, max, target, cpu, memory]) input.addEventListener("input", onChange);
  return {
    el,
    value() {
      return {
        scale: { min: numberOr(min.value), max: numberOr(max.value), target_cpu: numberOr(target.value) },
        resources: { cpu: numberOr(cpu.value), memory_mb: numberOr(memory.value) },
      };
    },
  };
}

// Numbers go to the API as numbers; anything else as typed, so the API's
// message names it ("must be an integer") instead of the form guessing.
export function numberOr(text) {
  const trimmed = String(text).trim();
  if (trimmed === "") return trimmed;
  const n = Number(trimmed);
  return Number.isFinite(n) ? n : trimmed;
}
