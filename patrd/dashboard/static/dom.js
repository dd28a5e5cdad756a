// DOM helpers. Text always goes in as text (textContent / text nodes), never
// as HTML, so nothing a deployment or its logs contain can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "hidden" || key === "selected") {
      el[key] = Boolean(value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// SVG elements (charts).
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let fieldIds = 0;
export function uid(prefix) {
  fieldIds += 1;
  return `${prefix}-${fieldIds}`;
}

// A labelled input: {label, input, hint}. The hint is tied to the input with
// aria-describedby, and an error shown later is added to the same list.
export function field(label, input, hint) {
  if (!input.id) input.id = uid("f");
  const parts = [h("label", { for: input.id, text: label }), input];
  if (hint) {
    const hintEl = h("p", { class: "hint", id: `${input.id}-hint`, text: hint });
    input.setAttribute("aria-describedby", hintEl.id);
    parts.push(hintEl);
  }
  return h("div", { class: "field" }, parts);
}

export function badge(status, reason) {
  return h("span", { class: `badge status-${status}`, title: reason || null, text: status });
}

// Why a deployment errored, as visible text next to its badge (a tooltip alone
// is not seen on a phone); null for every other status.
export function failureReason(status, reason, id) {
  if (status !== "errored" || !reason) return null;
  return h("span", { class: "status-reason", id: id || null, text: reason });
}

// An event's message without its kind said twice ("status status running" → "running"),
// as patrctl prints it.
export function eventText(kind, message) {
  const text = String(message || "");
  return text.startsWith(`${kind} `) ? text.slice(kind.length + 1) : text;
}

export function timeAgo(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(value);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function money(cost) {
  const f = (n) => Number(n).toFixed(2);
  const range = cost.min === cost.max ? f(cost.min) : `${f(cost.min)} – ${f(cost.max)}`;
  return `${cost.currency} ${range} per ${cost.period || "month"}`;
}

// --- messages -------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = h("p", { class: `toast toast-${kind}`, text: message });
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// --- field errors (the API's 422 {field, message}) ------------------------------

// The element of `root` that names `field` best: data-field equal to it, or
// the longest data-field that is a dotted prefix of it ("ports.99999" →
// "ports.99999" if a row carries it, else "ports").
export function fieldTarget(root, fieldPath) {
  let best = null;
  let bestLength = -1;
  for (const el of root.querySelectorAll("[data-field]")) {
    const name = el.dataset.field;
    const matches = name === fieldPath || fieldPath.startsWith(`${name}.`);
    if (matches && name.length > bestLength) {
      best = el;
      bestLength = name.length;
    }
  }
  return best;
}

export function clearErrors(root) {
  for (const el of root.querySelectorAll(".field-error")) el.remove();
  for (const el of root.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    const ids = (el.getAttribute("aria-describedby") || "")
      .split(" ")
      .filter((id) => id && !id.startsWith("err-"));
    if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
    else el.removeAttribute("aria-describedby");
  }
  const summary = root.querySelector(".form-error");
  if (summary) summary.remove();
}

// What the form calls the element tied to a field path: its <label>, or the
// legend of its fieldset (an editor of rows).
export function labelOf(el) {
  if (!el) return null;
  if (el.labels && el.labels.length) return el.labels[0].textContent.trim();
  const legend = el.matches("fieldset") ? el.querySelector("legend") : null;
  return legend ? legend.textContent.trim() : null;
}

// The API names fields by JSON path ("scale.max", "ports.99999"); the page says
// them with the form's labels: paths inside the message become labels, and an
// error on a group of rows names the group and the row ("Ports: 99999").
export function inFormWords(root, fieldPath, message, target) {
  let text = message;
  const known = [...root.querySelectorAll("[data-field]")]
    .map((el) => [el.dataset.field, labelOf(el)])
    .filter(([name, label]) => name.includes(".") && label)
    .sort((a, b) => b[0].length - a[0].length);
  for (const [name, label] of known) text = text.split(name).join(label);
  if (!fieldPath || !target || target.matches("input, select, textarea")) return text;
  const rest = fieldPath.slice(target.dataset.field.length + 1);
  const label = labelOf(target);
  if (!label) return text;
  return rest ? `${text} (${label}: ${rest})` : `${text} (${label})`;
}

// Show `message` next to the element for `fieldPath`; without one, at the top
// of `root`. Returns the element that got it.
export function showError(root, fieldPath, message) {
  const target = fieldPath ? fieldTarget(root, fieldPath) : null;
  const id = uid("err");
  const note = h("p", {
    class: "field-error",
    id,
    role: "alert",
    dataset: { for: fieldPath || "" },
    text: target ? inFormWords(root, fieldPath, message, target) : fieldPath ? `${message} (${fieldPath})` : message,
  });
  if (!target) {
    const box = h("div", { class: "form-error", role: "alert" }, note);
    root.prepend(box);
    return box;
  }
  const isInput = target.matches("input, select, textarea");
  const input = isInput ? target : target.querySelector("input, select, textarea");
  const anchor = isInput ? target.closest(".field") || target.parentElement : target;
  anchor.appendChild(note);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    const described = input.getAttribute("aria-describedby");
    input.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
    input.focus();
  }
  return anchor;
}
