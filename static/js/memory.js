// The account page's Memory section (docs/pages.md, "Account"): the facts the bot
// remembers about the user — list, add, edit, delete — and the two memory switches,
// all through the REST API (GET/POST /api/me/memories, PATCH/DELETE
// /api/me/memories/{id}, PATCH /api/me). Memory texts are set as text, never as markup.
import { api, problem } from "/static/js/api.js";

const $ = (selector) => document.querySelector(selector);
const ORIGINS = { user: "written by you", tool: "saved by the bot", extracted: "taken from a conversation" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

let noticeTimer = null;
function notify(text, kind = "info", keepMs = 6000) {
  const notice = $("#memory-notice");
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (keepMs) noticeTimer = setTimeout(() => (notice.hidden = true), keepMs);
}

function memoryUrl(id) {
  return `/api/me/memories/${encodeURIComponent(id)}`;
}

// A datetime-local field's value (the browser's time zone) as ISO 8601, or null.
function isoOrNull(value) {
  if (!value) return null;
  const when = new Date(value);
  return Number.isNaN(when.getTime()) ? null : when.toISOString();
}

// An ISO moment as a datetime-local field's value, in the browser's time zone.
function localValue(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}T${pad(when.getHours())}:${pad(when.getMinutes())}`;
}

function describe(memory) {
  const parts = [ORIGINS[memory.origin] || memory.origin, new Date(memory.created_at).toLocaleDateString()];
  if (memory.expires_at) parts.push(`forgotten on ${new Date(memory.expires_at).toLocaleString()}`);
  return parts.join(" · ");
}

function row(memory) {
  const item = el("li", "memory-item");
  item.dataset.memory = memory.id;
  const text = el("p", "memory-text", memory.text);
  const meta = el("small", "help memory-meta", describe(memory));
  const edit = el("button", "memory-edit", "Edit");
  edit.type = "button";
  const remove = el("button", "danger memory-delete", "Delete");
  remove.type = "button";
  const actions = el("div", "memory-actions");
  actions.append(edit, remove);
  item.append(text, meta, actions);

  edit.addEventListener("click", () => {
    if (item.querySelector("form")) return;
    const form = el("form", "stack memory-edit-form");
    form.noValidate = true;
    const area = el("textarea");
    area.name = "text";
    area.rows = 2;
    area.maxLength = 1000;
    area.value = memory.text;
    area.setAttribute("aria-label", "Memory");
    const expires = el("input");
    expires.type = "datetime-local";
    expires.name = "expires_at";
    expires.value = localValue(memory.expires_at);
    expires.setAttribute("aria-label", "Forget it on");
    const error = el("div", "field-error errors");
    const save = el("button", "memory-save", "Save");
    save.type = "submit";
    const cancel = el("button", null, "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => form.remove());
    form.append(area, expires, error, save, cancel);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { text: area.value, expires_at: isoOrNull(expires.value) };
      const answer = await api(memoryUrl(memory.id), { method: "PATCH", body });
      if (!answer.ok) {
        error.textContent = problem(answer, "The memory could not be saved.");
        return;
      }
      item.replaceWith(row(answer.body));
    });
    item.append(form);
    area.focus();
  });

  remove.addEventListener("click", async () => {
    const answer = await api(memoryUrl(memory.id), { method: "DELETE" });
    if (!answer.ok && answer.status !== 404) return notify(problem(answer, "The memory could not be deleted."), "error");
    item.remove();
    showEmpty();
  });
  return item;
}

function showEmpty() {
  $("#memory-empty").hidden = $("#memory-list").children.length !== 0;
}

async function load() {
  const answer = await api("/api/me/memories");
  $("#memory-loading").hidden = true;
  if (!answer.ok) return notify(problem(answer, "Your memories could not be read."), "error", 0);
  $("#memory-list").replaceChildren(...(answer.body.memories || []).map(row));
  showEmpty();
}

function wireSwitch(selector, field) {
  const box = $(selector);
  box.addEventListener("change", async () => {
    box.disabled = true;
    const answer = await api("/api/me", { method: "PATCH", body: { [field]: box.checked } });
    box.disabled = false;
    if (!answer.ok) {
      box.checked = !box.checked;
      return notify(problem(answer, "The setting could not be saved."), "error");
    }
    box.checked = Boolean(answer.body.preferences && answer.body.preferences[field]);
    notify("Saved.");
  });
}

function wireNew() {
  const form = $("#memory-new");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#memory-new-error");
    error.textContent = "";
    const body = { text: form.elements.text.value };
    const expires = isoOrNull(form.elements.expires_at.value);
    if (expires) body.expires_at = expires;
    const answer = await api("/api/me/memories", { method: "POST", body });
    if (!answer.ok) {
      error.textContent = problem(answer, "The memory could not be added.");
      return;
    }
    $("#memory-list").append(row(answer.body));
    form.reset();
    showEmpty();
  });
}

if ($("#memory")) {
  wireSwitch("#memory-enabled", "memory_enabled");
  wireSwitch("#memory-shared", "memory_in_shared_rooms");
  wireNew();
  load();
}
