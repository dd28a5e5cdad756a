// Create Deployment: the seed's three steps. Each "Next" asks the API to
// validate the whole body (POST /v1/deployments?dry_run=true); an error about
// this step's fields (or an earlier one's) is shown next to the field it
// names, errors about later steps wait for those steps. Step 3 shows the
// estimated cost the API computes, updated as scale and resources change.

import { ApiError, declared, features, get, post } from "./api.js";
import { clearErrors, field, h, money, replace, showError, toast } from "./dom.js";
import {
  configMountsEditor,
  envEditor,
  portsEditor,
  probeEditor,
  scaleEditor,
  showProblems,
  splitImageRef,
  volumesEditor,
} from "./forms.js";
import { createAtDigest, digestProblem } from "./pin.js";

const NAME_HINT = "Lowercase letters, digits and '-';";
const STEP_TITLES = ["Image and region", "Ports, environment, files and probes", "Scale and resources"];

// Which step holds a field (by its first path segment).
const STEP_OF = {
  name: 1,
  registry: 1,
  image: 1,
  tag: 1,
  digest: 1,
  region: 1,
  registry_auth: 1,
  ports: 2,
  env: 2,
  config_mounts: 2,
  volumes: 2,
  startup_probe: 2,
  liveness_probe: 2,
  deploy_on_push: 3,
  deploy_on_create: 3,
  scale: 3,
  resources: 3,
};

export function stepOf(fieldPath) {
  return STEP_OF[(fieldPath || "").split(".")[0]] || 1;
}

export function renderCreate(main) {
  let step = 1;
  let alive = true;
  let secretNames = [];

  const nameInput = h("input", { type: "text", autocomplete: "off", spellcheck: "false", required: true, dataset: { field: "name" } });
  const registryInput = h("input", { type: "text", value: "docker.io", list: "registries", dataset: { field: "registry" } });
  const imageInput = h("input", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "library/nginx", dataset: { field: "image" } });
  const tagInput = h("input", { type: "text", value: "latest", autocomplete: "off", dataset: { field: "tag" } });
  const digestInput = h("input", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "sha256:… (optional)", dataset: { field: "digest" } });
  const regionSelect = h("select", { dataset: { field: "region" } }, h("option", { value: "", text: "This node (default)" }));

  const ports = portsEditor({ 80: "http" });
  let env = envEditor({}, secretNames);
  const envSlot = h("div", {}, env.el);
  const configs = configMountsEditor();
  const volumes = volumesEditor();
  const startup = probeEditor("startup_probe", "Startup probe", null);
  const liveness = probeEditor("liveness_probe", "Liveness probe", null);

  const deployOnPush = h("input", { type: "checkbox", id: "f-deploy-on-push", checked: true, dataset: { field: "deploy_on_push" } });
  const deployOnCreate = h("input", { type: "checkbox", id: "f-deploy-on-create", checked: true, dataset: { field: "deploy_on_create" } });
  const costOut = h("output", { id: "estimated-cost", "aria-live": "polite", text: "…" });
  const capacityOut = h("p", { class: "warning", id: "capacity-warning", hidden: true });
  const scale = scaleEditor(null, () => scheduleEstimate());
  // The name's length as the daemon declares it (patrd/model/spec_shapes.py: NAME).
  const nameField = field("Name", nameInput, NAME_HINT);
  declared("CreateDeployment", "name").then((schema) => {
    if (!schema || schema.minLength === undefined || schema.maxLength === undefined) return;
    nameInput.minLength = schema.minLength;
    nameInput.maxLength = schema.maxLength;
    const hint = nameField.querySelector(".hint");
    hint.textContent = `${NAME_HINT} ${schema.minLength} to ${schema.maxLength} characters.`;
  });

  const steps = [
    h(
      "fieldset",
      { class: "step", dataset: { step: "1" } },
      h("legend", { text: `Step 1 of 3: ${STEP_TITLES[0]}` }),
      nameField,
      field(
        "Registry",
        registryInput,
        "docker.io for Docker Hub, local for this node's registry (deploys on push), or a registry host.",
      ),
      h("datalist", { id: "registries" }, h("option", { value: "docker.io" }), h("option", { value: "local" })),
      field("Image repository", imageInput, "The repository only, e.g. library/nginx or me/app."),
      field("Tag", tagInput, "The tag cannot be changed after the deployment is created."),
      field(
        "Digest",
        digestInput,
        "Optional: run exactly this image. It must be what the tag points at now; it is checked, then pinned.",
      ),
      field("Region", regionSelect),
    ),
    h(
      "fieldset",
      { class: "step", dataset: { step: "2" }, hidden: true },
      h("legend", { text: `Step 2 of 3: ${STEP_TITLES[1]}` }),
      ports.el,
      envSlot,
      configs.el,
      volumes.el,
      startup.el,
      liveness.el,
    ),
    h(
      "fieldset",
      { class: "step", dataset: { step: "3" }, hidden: true },
      h("legend", { text: `Step 3 of 3: ${STEP_TITLES[2]}` }),
      h(
        "fieldset",
        { class: "editor" },
        h("legend", { text: "Deploy" }),
        h("div", { class: "check" }, deployOnPush, h("label", { for: deployOnPush.id, text: "Deploy on push" })),
        h("p", { class: "hint", text: "A push of this image and tag to the node registry (or a polled registry) rolls it out." }),
        h("div", { class: "check" }, deployOnCreate, h("label", { for: deployOnCreate.id, text: "Deploy on create" })),
        h("p", { class: "hint", text: "Start it right away; otherwise start it later from its page." }),
      ),
      scale.el,
      h("div", { class: "cost", id: "cost-box" }, h("h3", { text: "Estimated cost" }), costOut, capacityOut),
    ),
  ];

  const back = h("button", { type: "button", class: "secondary", text: "Back", hidden: true });
  const next = h("button", { type: "submit", class: "primary", id: "step-next", text: "Next" });
  const indicator = h(
    "ol",
    { class: "stepper", "aria-label": "Progress" },
    STEP_TITLES.map((title, i) => h("li", { dataset: { step: String(i + 1) } }, h("span", { class: "num", text: String(i + 1) }), title)),
  );
  const form = h("form", { class: "create", novalidate: true, id: "create-form" }, steps, h("div", { class: "form-actions" }, back, next));
  const heading = h("h1", { tabindex: "-1", text: "Create Deployment" });
  replace(main, h("div", { class: "page-head" }, h("div", {}, h("a", { href: "#/", class: "back", text: "← Deployments" }), heading)), indicator, form);
  heading.focus();

  // "repo:tag", "repo@digest" or "repo:tag@digest" typed in the image field:
  // split into image, tag and digest (docker's way). A digest is checked
  // against what the tag points at when the deployment is created (pin.js),
  // and such a deployment does not follow pushes of its tag unless asked.
  function splitImage() {
    const { image, tag, digest } = splitImageRef(imageInput.value);
    if (tag === null && digest === null) return; // nothing to split (maybe split on "change" already)
    imageInput.value = image;
    if (tag !== null) tagInput.value = tag;
    if (digest !== null) {
      digestInput.value = digest;
      deployOnPush.checked = false;
    }
  }
  imageInput.addEventListener("change", splitImage);

  function body({ forStep }) {
    const portsValue = ports.value();
    const b = {
      name: nameInput.value.trim(),
      registry: registryInput.value.trim() || "docker.io",
      image: imageInput.value.trim(),
      tag: tagInput.value.trim(),
      // Step 1 is checked before any port is chosen: a placeholder keeps
      // "ports" from hiding an error in the region.
      ports: forStep === 1 && Object.keys(portsValue).length === 0 ? { 80: "http" } : portsValue,
      deploy_on_push: deployOnPush.checked,
      deploy_on_create: deployOnCreate.checked,
      ...scale.value(),
    };
    if (regionSelect.value) b.region = regionSelect.value;
    if (forStep >= 2) {
      b.env = env.value();
      b.config_mounts = configs.value();
      const vols = volumes.value();
      if (Object.keys(vols).length) b.volumes = vols;
      const sp = startup.value();
      const lp = liveness.value();
      if (sp) b.startup_probe = sp;
      if (lp) b.liveness_probe = lp;
    }
    return b;
  }

  function show(n) {
    step = n;
    steps.forEach((el, i) => {
      el.hidden = i + 1 !== n;
    });
    for (const li of indicator.children) {
      const s = Number(li.dataset.step);
      li.classList.toggle("done", s < n);
      if (s === n) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    }
    back.hidden = n === 1;
    next.textContent = n === 3 ? "Create" : "Next";
    document.title = `Create deployment (step ${n} of 3) · patrd`;
    if (n === 3) scheduleEstimate(0);
  }

  function fail(err) {
    if (!(err instanceof ApiError)) {
      showError(form, null, String(err));
      return;
    }
    let fieldPath = err.field;
    if (err.status === 409 && !fieldPath) fieldPath = "name"; // the name is taken
    const target = fieldPath ? stepOf(fieldPath) : step;
    if (target !== step) show(target);
    showError(form, fieldPath, err.message);
  }

  async function validate() {
    // Errors about this step or an earlier one block; later steps' wait.
    try {
      return await post("/v1/deployments?dry_run=true", body({ forStep: step }));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 422 || err.status === 409 || err.status === 400)) {
        const fieldPath = err.field || (err.status === 409 ? "name" : null);
        if (fieldPath && stepOf(fieldPath) > step) return null;
      }
      throw err;
    }
  }

  let estimateTimer = null;
  let estimateSeq = 0;
  function scheduleEstimate(delay = 250) {
    clearTimeout(estimateTimer);
    estimateTimer = setTimeout(estimate, delay);
  }
  async function estimate() {
    if (!alive || step !== 3) return;
    const seq = ++estimateSeq;
    try {
      const preview = await post("/v1/deployments?dry_run=true", body({ forStep: 3 }));
      if (seq !== estimateSeq) return;
      costOut.textContent = preview.estimated_cost ? money(preview.estimated_cost) : "not available";
      const warning = preview.capacity && preview.capacity.warning;
      capacityOut.hidden = !warning;
      capacityOut.textContent = warning || "";
      for (const el of form.querySelectorAll('.field-error[data-for^="scale"], .field-error[data-for^="resources"]')) el.remove();
    } catch (err) {
      if (seq !== estimateSeq) return;
      costOut.textContent = "–";
      if (err instanceof ApiError && err.field && stepOf(err.field) === 3) {
        clearErrors(form);
        showError(form, err.field, err.message);
      }
    }
  }

  back.addEventListener("click", () => {
    clearErrors(form);
    show(step - 1);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    next.disabled = true;
    try {
      if (step < 3) {
        if (step === 1) splitImage();
        const problems = [];
        if (step === 1 && !nameInput.value.trim()) problems.push({ input: nameInput, message: "Give the deployment a name." });
        if (step === 1 && !imageInput.value.trim()) problems.push({ input: imageInput, message: "Type the image repository, e.g. library/nginx." });
        const badDigest = step === 1 ? digestProblem(digestInput.value.trim()) : null;
        if (badDigest) problems.push({ input: digestInput, message: badDigest });
        if (step === 2) problems.push(...ports.check(), ...env.check(), ...configs.check(), ...volumes.check());
        if (showProblems(problems)) return;
        await validate();
        show(step + 1);
        const first = steps[step - 1].querySelector("input, select, textarea");
        if (first) first.focus();
        return;
      }
      const problems = [...ports.check(), ...env.check(), ...configs.check(), ...volumes.check()];
      if (problems.length) {
        show(2);
        showProblems(problems);
        return;
      }
      const digest = digestInput.value.trim();
      if (digest) toast("Checking the digest against the registry…");
      const created = digest
        ? await createAtDigest(body({ forStep: 3 }), digest, () => alive)
        : await post("/v1/deployments", body({ forStep: 3 }));
      createdOk = true;
      toast(`Created ${created.name}`, "success");
      location.hash = `#/d/${encodeURIComponent(created.name)}`;
    } catch (err) {
      fail(err);
    } finally {
      next.disabled = false;
    }
  });

  // Secrets for env references and regions seen on this node, in the background.
  features().then(async (paths) => {
    if (!alive) return;
    if (paths.has("/v1/secrets")) {
      try {
        secretNames = (await get("/v1/secrets")).secrets.map((s) => s.name);
        const fresh = envEditor(env.value(), secretNames);
        envSlot.replaceChildren(fresh.el);
        env = fresh;
      } catch {
        /* env values still work */
      }
    }
  });
  get("/v1/deployments")
    .then((data) => {
      const regions = new Set(data.deployments.map((d) => d.spec.region).filter(Boolean));
      for (const region of regions) regionSelect.appendChild(h("option", { value: region, text: region }));
    })
    .catch(() => {});

  // Typed anything? Then leaving (another screen, reload, closing the tab) asks first.
  let createdOk = false;
  let touched = false;
  form.addEventListener("input", () => {
    touched = true;
  });
  const dirty = () => touched && !createdOk;
  const beforeUnload = (event) => {
    if (dirty()) event.preventDefault();
  };
  window.addEventListener("beforeunload", beforeUnload);

  show(1);
  nameInput.focus();
  return {
    dirty,
    cleanup() {
      alive = false;
      clearTimeout(estimateTimer);
      window.removeEventListener("beforeunload", beforeUnload);
    },
  };
}
