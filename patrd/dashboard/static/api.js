// The public /v1 API, as the dashboard calls it: the session cookie goes with
// every request (same origin), the CSRF token with every write.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || `http_${status}`;
    this.field = (body && body.field) || null;
  }
}

const CSRF_COOKIE = "__Host-patrd_csrf";

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

function toLogin() {
  // The session ended: log in again and come back to this screen (see login.js).
  if (!location.pathname.endsWith("/login")) location.assign(`/ui/login${location.hash}`);
}

// request("POST", "/v1/deployments", {json: body}) → parsed JSON (or text).
// {raw: true} → the Response itself (for streams); {text: "..."} → raw body.
export async function request(method, path, options = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  let body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.text !== undefined) {
    headers["Content-Type"] = "application/octet-stream";
    body = options.text;
  }
  const init = { method, headers, body, signal: options.signal, credentials: "same-origin", cache: "no-store" };
  let resp;
  for (let attempt = 0; ; attempt += 1) {
    try {
      resp = await fetch(path, init);
      break;
    } catch (err) {
      // A dropped connection (a restarting daemon; Chromium's ERR_NETWORK_CHANGED
      // when Docker adds an interface): reads are retried, writes are not.
      if (method !== "GET" || attempt >= 2 || err.name === "AbortError") throw err;
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
  }
  if (resp.status === 401) {
    toLogin();
    throw new ApiError(401, { error: "unauthorized", message: "please log in again" });
  }
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = { message: `HTTP ${resp.status}` };
    }
    throw new ApiError(resp.status, data);
  }
  if (options.raw) return resp;
  const type = resp.headers.get("Content-Type") || "";
  if (type.includes("json")) return resp.json();
  return resp.text();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, json, options = {}) => request("POST", path, { ...options, json });
export const patch = (path, json) => request("PATCH", path, { json });
export const put = (path, json) => request("PUT", path, { json });
export const del = (path) => request("DELETE", path);

export const enc = encodeURIComponent;

// The daemon's OpenAPI document, fetched once ({} when it cannot be read).
let documentPromise = null;
function openapi() {
  if (documentPromise === null) documentPromise = get("/v1/openapi.json").catch(() => ({}));
  return documentPromise;
}

// Which routes this daemon serves (from its OpenAPI document), so screens for
// features that are not there are left out instead of failing.
export function features() {
  return openapi().then((doc) => new Set(Object.keys(doc.paths || {})));
}

// One field's schema in a request shape of the document, e.g. ("CreateDeployment",
// "scale.min"); "*" steps into a map's values ("volumes.*.size_gb"). The daemon
// generates these from its declared shapes (patrd/model/spec_shapes.py), so a
// form takes its bounds and defaults from there instead of stating its own.
// null when the document or the field is missing.
export async function declared(schema, path) {
  const doc = await openapi();
  let node = ((doc.components || {}).schemas || {})[schema];
  for (const key of path.split(".")) {
    if (!node) break;
    node = key === "*" ? node.additionalProperties : (node.properties || {})[key];
  }
  return node || null;
}

export async function logout() {
  await fetch("/ui/logout", {
    method: "POST",
    headers: { "X-CSRF-Token": csrfToken() },
    credentials: "same-origin",
  });
  location.assign("/ui/login?logged_out");
}
