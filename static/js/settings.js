// The channel settings editor of the chat page (owner and moderators): framing,
// parameters, the channel's instruction, its member_params policy, the knowledge bases
// attached to it, and its agent and tools (agentsettings.js), saved with one PATCH
// /api/channels/{name}; the server's errors are shown next to the fields they name.
import { api } from "/static/js/api.js";
import { setUpAgentSettings } from "/static/js/agentsettings.js";
import { el } from "/static/js/turns.js";

const FRAMING_FIELDS = ["name", "preamble", "user_prefix", "bot_prefix", "agent_prefix", "turn_suffix", "stop", "quote_user"];
const PARAM_FIELDS = ["provider", "model", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"];
const NUMBER_PARAMS = new Set(["max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"]);
// member_params' ranges ({"min", "max"}) and bounds with a max only.
const POLICY_RANGES = ["temperature", "top_p", "top_k", "repeat_penalty"];
const POLICY_MAXIMA = ["max_tokens"];

// A number field's value as sent: a number where it reads as one, else the text as typed
// (the server names it: sending it is how the person learns what is wrong).
function numberOrText(value) {
  return Number.isNaN(Number(value)) ? value : Number(value);
}

// {"a": {"b": ["msg"]}} → [["a.b", ["msg"]]]: the protocol's nested field errors as paths.
function errorPaths(fields, prefix = "") {
  if (Array.isArray(fields) || typeof fields !== "object" || fields === null) return [[prefix, [].concat(fields)]];
  return Object.entries(fields).flatMap(([key, value]) => {
    const path = prefix ? `${prefix}.${key}` : key;
    // A list of messages ends the path; a list of objects (a list's items) goes on.
    return Array.isArray(value) && value.every((item) => typeof item !== "object") ? [[path, value]] : errorPaths(value, path);
  });
}

export function setUpSettings({ channel, notify }) {
  const form = document.getElementById("settings-form");
  if (!form) return { fill() {}, showErrors() {} };
  const modelsBox = document.getElementById("policy-models");
  let editing = false;
  let providers = null; // "provider/model" pairs from GET /api/providers
  const bases = knowledgeChecklist(channel);
  const agentSettings = setUpAgentSettings(form);

  function setValue(name, value) {
    const input = form.elements[name];
    if (!input) return;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value ?? "";
  }

  // One checkbox per enabled model, and per model the policy names that is not one of
  // them (a disabled provider's): saving must not drop what the page cannot list.
  function fillModels(chosen) {
    const pairs = [...new Set([...(providers || []), ...chosen])];
    modelsBox.replaceChildren(
      ...pairs.map((pair) => {
        const box = el("input");
        box.type = "checkbox";
        box.name = "member_params.models";
        box.value = pair;
        box.checked = chosen.includes(pair);
        const label = el("label", "policy-model");
        label.append(box, el("span", null, pair));
        return label;
      }),
    );
  }

  async function fill(event) {
    if (editing) return;
    if (event.knowledge_base_ids !== undefined) bases.check(event.knowledge_base_ids);
    agentSettings.fill(event);
    const { framing, params } = event;
    for (const name of FRAMING_FIELDS) {
      const value = framing?.[name];
      setValue(`framing.${name}`, name === "stop" ? (value || []).join("\n") : value);
    }
    for (const name of PARAM_FIELDS) setValue(`params.${name}`, params?.[name]);
    if (event.instruction !== undefined) setValue("instruction", event.instruction === null ? "" : String(event.instruction));
    if (event.member_params === undefined) return;
    const policy = event.member_params || {};
    for (const name of POLICY_RANGES) {
      setValue(`member_params.${name}.min`, policy[name]?.min);
      setValue(`member_params.${name}.max`, policy[name]?.max);
    }
    for (const name of POLICY_MAXIMA) setValue(`member_params.${name}.max`, policy[name]?.max);
    setValue("member_params.thinking", policy.thinking);
    if (providers === null) {
      const answer = await api("/api/providers");
      providers = (answer.body.providers || []).flatMap((provider) => (provider.models || []).map((model) => `${provider.name}/${model}`));
    }
    fillModels(policy.models || []);
  }

  function readPolicy() {
    const policy = {};
    const models = [...form.querySelectorAll('input[name="member_params.models"]:checked')].map((box) => box.value);
    if (models.length) policy.models = models;
    // A range with neither end filled in is not offered; with one, the server says
    // which end is missing.
    for (const name of [...POLICY_RANGES, ...POLICY_MAXIMA]) {
      const range = {};
      for (const end of ["min", "max"]) {
        const input = form.elements[`member_params.${name}.${end}`];
        if (input && input.value.trim() !== "") range[end] = numberOrText(input.value.trim());
      }
      if (Object.keys(range).length) policy[name] = range;
    }
    if (form.elements["member_params.thinking"].checked) policy.thinking = true;
    return policy;
  }

  function read() {
    const framing = {};
    for (const name of FRAMING_FIELDS) {
      const input = form.elements[`framing.${name}`];
      if (input.type === "checkbox") framing[name] = input.checked;
      else if (name === "stop") framing[name] = input.value.split("\n").filter((line) => line.length > 0);
      else framing[name] = input.value;
    }
    const params = {};
    for (const name of PARAM_FIELDS) {
      const value = form.elements[`params.${name}`].value.trim();
      if (value === "") continue;
      params[name] = NUMBER_PARAMS.has(name) ? numberOrText(value) : value;
    }
    const instruction = form.elements.instruction.value;
    const changes = { framing, params, instruction: instruction === "" ? null : Number(instruction), member_params: readPolicy() };
    // Only once the checklist is there: saving before it loaded must not detach them all.
    if (bases.loaded()) changes.knowledge_base_ids = bases.read();
    return { ...changes, ...agentSettings.read() };
  }

  // Each message goes to the slot of the longest part of its path that has one
  // ("member_params.temperature.min", else "member_params.temperature", …), else the form's.
  function showErrors(fields) {
    for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
    for (const [path, messages] of errorPaths(fields)) {
      let slot = null;
      for (let parts = path.split("."); parts.length && !slot; parts.pop()) {
        slot = form.querySelector(`[data-error-for="${CSS.escape(parts.join("."))}"]`);
      }
      slot = slot || form.querySelector("[data-error-for='form']");
      slot.textContent = [slot.textContent, ...messages].filter(Boolean).join(" ");
    }
  }

  form.addEventListener("focusin", () => (editing = true));
  // The checklist is asked for when the editor is first unfolded.
  form.closest("details")?.addEventListener("toggle", (event) => {
    if (!event.target.open) return;
    bases.load();
    agentSettings.load();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors({});
    const answer = await api(`/api/channels/${encodeURIComponent(channel)}`, { method: "PATCH", body: read() });
    if (answer.ok) {
      editing = false;
      notify("Settings saved.");
    } else {
      showErrors(answer.body.fields || { form: [answer.body.detail || "Could not save."] });
      notify(answer.body.detail || "Could not save the settings.", "error");
    }
  });
  return { fill, showErrors };
}

// The knowledge bases this room may use: a box per base the acting user may attach here
// (GET /api/knowledge-bases/available?channel=: their own, the room's own and those
// already attached), ticked for the attached ones (the channel's knowledge_base_ids).
// Hidden where the server offers no knowledge bases.
function knowledgeChecklist(channel) {
  const fieldset = document.getElementById("kb-attach");
  const list = document.getElementById("kb-checklist");
  let state = null; // null: not asked; "loading"; "loaded"
  let attached = null;

  function check(ids) {
    attached = (ids || []).map(String);
    for (const box of list.querySelectorAll("input[type=checkbox]")) box.checked = attached.includes(box.value);
  }

  async function load() {
    if (!fieldset || state) return;
    state = "loading";
    const name = encodeURIComponent(channel);
    const [available, current] = await Promise.all([
      api(`/api/knowledge-bases/available?channel=${name}`),
      attached === null ? api(`/api/channels/${name}`) : Promise.resolve(null),
    ]);
    if (!available.ok) {
      state = null;
      return;
    }
    if (current && current.ok && attached === null) attached = (current.body.knowledge_base_ids || []).map(String);
    const items = Array.isArray(available.body) ? available.body : available.body.knowledge_bases || available.body.results || [];
    list.replaceChildren(
      ...items.map((base) => {
        const box = el("input");
        box.type = "checkbox";
        box.name = "knowledge_base_ids";
        box.value = String(base.id);
        box.checked = (attached || []).includes(String(base.id));
        const label = el("label");
        const whose = base.channel ? `this room's` : base.owner ? `${base.owner}'s` : "";
        const count = (base.documents || []).length;
        label.append(box, el("span", "kb-choice-name", base.name), el("span", "help", `${whose}${whose ? " · " : ""}${count} document${count === 1 ? "" : "s"}`));
        const item = el("li");
        item.dataset.base = String(base.id);
        item.append(label);
        return item;
      }),
    );
    if (!items.length) list.append(el("li", "help", "No knowledge base to attach yet: make one on the knowledge page."));
    fieldset.hidden = false;
    state = "loaded";
  }

  return {
    load,
    check,
    loaded: () => state === "loaded",
    read: () => [...list.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value),
  };
}
