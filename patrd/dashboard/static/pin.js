// Create at a digest ("repo:tag@sha256:…" in the image field), as patrctl does
// (patrd/cli/pinning.py): the API's spec names a tag and every revision pins the
// digest its tag resolved to, so the digest is checked, not sent.
//
// 1. create with deploy_on_create false (nothing runs); the form unticks
//    "Deploy on push" when a digest is typed (it stays at the digest when the
//    tag moves), the user may tick it again;
// 2. redeploy: the daemon asks the registry what the tag points at now
//    (no pull); another digest → delete it again, say so next to the field;
// 3. start it (if "Deploy on create") and wait until the node has recorded
//    the digest of the image it runs; another one → delete it again.

import { ApiError, del, enc, get, post } from "./api.js";

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const RESOLVE_TIMEOUT_MS = 180000;

export function digestProblem(digest) {
  if (!digest || DIGEST_RE.test(digest)) return null;
  return "A digest is sha256: and 64 lowercase hex characters (docker images --digests shows it).";
}

function refused(message) {
  return new ApiError(409, { error: "conflict", message, field: "digest" });
}

async function discard(name) {
  try {
    await del(`/v1/deployments/${enc(name)}?confirm=${enc(name)}`);
  } catch {
    /* gone already, or the daemon will say so on the list */
  }
}

// The digest the node recorded for `revision` once it resolved its image, or
// {said} telling what happened instead.
async function recordedDigest(name, revision, isAlive) {
  const deadline = Date.now() + RESOLVE_TIMEOUT_MS;
  while (Date.now() < deadline && isAlive()) {
    const history = (await get(`/v1/deployments/${enc(name)}/history`)).history;
    const entry = history.find((e) => e.revision === revision);
    if (entry && entry.digest) return { digest: entry.digest, said: `ran ${entry.digest}` };
    if (entry && entry.image_id) return { digest: null, said: `ran its own copy, image ${entry.image_id.slice(0, 19)} (no digest)` };
    const d = await get(`/v1/deployments/${enc(name)}`);
    if (d.status === "errored") return { digest: null, said: `could not run it (${d.status_reason || "errored"})` };
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return { digest: null, said: "had not resolved the tag yet" };
}

// body: the create body (with its tag); → the deployment as the API shows it.
export async function createAtDigest(body, digest, isAlive = () => true) {
  const start = body.deploy_on_create !== false;
  const created = await post("/v1/deployments", { ...body, deploy_on_create: false });
  const name = created.name;
  let answer;
  try {
    answer = await post(`/v1/deployments/${enc(name)}/redeploy`, {});
  } catch (err) {
    await discard(name);
    throw refused(`Could not ask the registry what tag "${body.tag}" points at (${err.message}); nothing was started.`);
  }
  const resolved = answer.redeploy && answer.redeploy.digest;
  if (resolved !== digest) {
    await discard(name);
    const now = resolved ? `points at ${resolved}` : "has no registry digest on this node";
    throw refused(`Tag "${body.tag}" ${now}, not this digest; nothing was started. Type the tag that points at this digest, or clear the digest to follow the tag.`);
  }
  if (!start) return answer;
  const started = await post(`/v1/deployments/${enc(name)}/start`, {});
  const ran = await recordedDigest(name, started.revision, isAlive);
  if (ran.digest !== digest) {
    await discard(name);
    throw refused(`The registry's "${body.tag}" is this digest, but this node ${ran.said}; the deployment was removed again. Pull the tag on this node and create again.`);
  }
  return started;
}
