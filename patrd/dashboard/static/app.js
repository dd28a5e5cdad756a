// The dashboard's router: #/ (deployments), #/create, #/d/<name>[/<tab>], #/node.
// Each screen returns a cleanup function (or {cleanup, route}) so polls and
// log streams stop when the user leaves it.

import { ADMIN_SCREENS, renderAdmin } from "./admin.js";
import { features, logout } from "./api.js";
import { renderCreate } from "./create.js";
import { renderList } from "./list.js";
import { renderManage } from "./manage.js";
import { renderNode } from "./node.js";

const main = document.getElementById("main");
let screen = null; // {key, cleanup, route}

function parse(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "create") return { key: "create" };
  if (parts[0] === "node") return { key: "node" };
  if (ADMIN_SCREENS.includes(parts[0])) return { key: parts[0] };
  if (parts[0] === "d" && parts[1]) return { key: `d:${parts[1]}`, name: parts[1], tab: parts[2] || "" };
  return { key: "list" };
}

let shownHash = location.hash;
let restoring = false;

function navigate() {
  if (restoring) {
    restoring = false;
    return;
  }
  const route = parse(location.hash);
  // A half-filled form (Create) asks before it is left; "stay" puts the address back.
  if (screen && screen.key !== route.key && screen.dirty && screen.dirty()) {
    if (!window.confirm("Leave this page? What you typed in the form is lost.")) {
      restoring = true;
      location.hash = shownHash;
      return;
    }
  }
  shownHash = location.hash;
  if (screen && screen.key === route.key && screen.route) {
    screen.route(route.tab);
    return;
  }
  if (screen) screen.cleanup();
  let result;
  if (route.key === "create") result = renderCreate(main);
  else if (route.key === "node") result = renderNode(main);
  else if (ADMIN_SCREENS.includes(route.key)) result = renderAdmin(main, route.key);
  else if (route.name) result = renderManage(main, route.name, route.tab);
  else result = renderList(main);
  screen = typeof result === "function" ? { key: route.key, cleanup: result } : { key: route.key, ...result };
  for (const link of document.querySelectorAll("header nav a")) {
    const href = link.getAttribute("href");
    const current = href === "#/" ? route.key === "list" || route.key === "create" || route.key.startsWith("d:") : href === `#/${route.key}`;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

document.getElementById("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", navigate);
// Start fetching the route list alongside the first screen's data; a daemon
// without /v1/node (older) gets no Node link.
features().then((routes) => {
  const needs = { "#/node": "/v1/node", "#/urls": "/v1/urls", "#/certs": "/v1/certificates", "#/secrets": "/v1/secrets", "#/audit": "/v1/audit" };
  for (const [href, route] of Object.entries(needs)) {
    const link = document.querySelector(`header nav a[href="${href}"]`);
    if (link && routes.size && !routes.has(route)) link.hidden = true;
  }
});
navigate();
