// The knowledge-base pages (docs/pages.md, "Knowledge bases"): the list with its create
// form (/knowledge/) and one base (/knowledge/{id}/): its documents and their progress,
// adding files and pasted text, search, and a passage (?chunk=N, where citations link).
// Everything goes through the REST API (docs/protocol.md); names, texts and reasons are
// set as text, never as markup.
import { api, csrfToken, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

const root = document.getElementById("knowledge");
const $ = (selector) => document.querySelector(selector);
// While a document is waiting for its file or being indexed the base is read back this
// often: personal bases have no room whose events would carry the progress.
const POLL_MS = 1000;
const UNSETTLED = new Set(["waiting", "indexing"]);

let noticeTimer = null;
function notify(text, kind = "info", keepMs = 6000) {
  const notice = $("#notice");
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (keepMs) noticeTimer = setTimeout(() => (notice.hidden = true), keepMs);
}

// A form's error slots ([data-error-for=name]) filled from the protocol's `fields`; what
// names no slot goes to the form's own.
function showErrors(form, answer) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  if (!answer) return;
  const fields = answer.body.fields || { form: [answer.body.detail || "That did not work."] };
  for (const [name, messages] of Object.entries(fields)) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`) || form.querySelector("[data-error-for='form']");
    const text = [].concat(messages).map((item) => (typeof item === "string" ? item : JSON.stringify(item)));
    slot.textContent = [slot.textContent, ...text].filter(Boolean).join(" ");
  }
}

function baseUrl(id) {
  return `/api/knowledge-bases/${encodeURIComponent(id)}`;
}

function ownerLabel(base) {
  if (base.channel) return `room ${base.channel}`;
  return !base.owner || base.owner === root.dataset.user ? "you" : base.owner;
}

// "3 ready · 1 indexing 40% · 1 failed"
function stateSummary(documents) {
  const counts = {};
  for (const doc of documents) counts[doc.status] = (counts[doc.status] || 0) + 1;
  const parts = [];
  for (const status of ["ready", "indexing", "waiting", "failed"]) {
    if (!counts[status]) continue;
    if (status === "indexing") {
      const busy = documents.filter((doc) => doc.status === "indexing");
      const mean = Math.round(busy.reduce((sum, doc) => sum + (Number(doc.progress) || 0), 0) / busy.length);
      parts.push(`${counts[status]} indexing ${mean}%`);
    } else parts.push(`${counts[status]} ${status}`);
  }
  return parts.join(" · ") || "empty";
}

// --- /knowledge/ ---------------------------------------------------------------------------

async function listPage() {
  const rows = $("#kb-rows");
  async function load() {
    const answer = await api("/api/knowledge-bases");
    $("#kb-loading").hidden = true;
    if (!answer.ok) return notify(problem(answer, "The knowledge bases could not be read."), "error", 0);
    const bases = Array.isArray(answer.body) ? answer.body : answer.body.knowledge_bases || answer.body.results || [];
    rows.replaceChildren(
      ...bases.map((base) => {
        const row = el("tr");
        row.dataset.base = base.id;
        const name = el("td", "kb-name");
        const anchor = el("a", null, base.name);
        anchor.href = `/knowledge/${encodeURIComponent(base.id)}/`;
        name.append(anchor);
        if (base.description) name.append(el("div", "help", base.description));
        const documents = base.documents || [];
        row.append(name, el("td", null, ownerLabel(base)), el("td", "num", documents.length), el("td", "kb-state", stateSummary(documents)));
        return row;
      }),
    );
    $("#kb-table").hidden = bases.length === 0;
    $("#kb-empty").hidden = bases.length !== 0;
  }

  const form = $("#kb-create");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(form, null);
    const body = { name: form.elements.name.value.trim(), description: form.elements.description.value.trim() };
    if (form.elements.channel && form.elements.channel.value) body.channel = form.elements.channel.value;
    const answer = await api("/api/knowledge-bases", { method: "POST", body });
    if (!answer.ok) return showErrors(form, answer);
    location.assign(`/knowledge/${encodeURIComponent(answer.body.id)}/`);
  });
  await load();
}

// --- /knowledge/{id}/ ---------------------------------------------------------------------

function statusCell(doc) {
  const cell = el("td", "doc-state");
  cell.dataset.status = doc.status;
  if (doc.status === "indexing") {
    const bar = el("progress");
    bar.max = 100;
    bar.value = Number(doc.progress) || 0;
    bar.setAttribute("aria-label", `${doc.name}: indexed ${bar.value}%`);
    cell.append(el("span", "label", `indexing ${bar.value}%`), bar);
  } else if (doc.status === "waiting") {
    cell.append(el("span", "label", "waiting for the file…"));
  } else if (doc.status === "failed") {
    cell.append(el("span", "label", `failed: ${doc.error || "unknown reason"}`));
  } else {
    cell.append(el("span", "label", doc.status));
  }
  return cell;
}

// Marks every occurrence of the query's words (3 letters or more) in `text`: text
// nodes and <mark> elements, never markup from the text.
function highlighted(node, text, query) {
  const words = [...new Set((query || "").toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) || [])];
  if (!words.length) {
    node.textContent = text;
    return node;
  }
  const pattern = new RegExp(`(${words.map((word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})`, "giu");
  for (const [index, piece] of text.split(pattern).entries()) {
    if (!piece) continue;
    node.append(index % 2 ? el("mark", null, piece) : document.createTextNode(piece));
  }
  return node;
}

function whereText(item) {
  const parts = [item.document?.name || "document"];
  if (item.page) parts.push(`page ${item.page}`);
  if (item.section) parts.push(item.section);
  return parts.join(" · ");
}

function passageHref(chunk) {
  return `?chunk=${encodeURIComponent(chunk)}`;
}

async function basePage() {
  const id = root.dataset.base;
  let base = null;
  let pollTimer = null;
  let lastQuery = "";
  const rows = new Map(); // document id -> <tr>
  const pending = new Set(); // files on their way in (uploading or being added)

  async function load() {
    const answer = await api(baseUrl(id));
    if (answer.status === 404 || answer.status === 401 || answer.status === 403) {
      // A citation's link may still show its passage to a reader of the reply.
      if (base === null && passageQuery().has("chunk") && (await showPassage({ alone: true }))) return;
      $("#kb-title").textContent = "No such knowledge base";
      $("#kb-body").hidden = true;
      notify("It does not exist, or it is not yours to read.", "error", 0);
      return;
    }
    if (!answer.ok) {
      notify(problem(answer, "The knowledge base could not be read."), "error");
      schedule(); // a passing failure (a restart): try again
      return;
    }
    base = answer.body;
    render();
    schedule();
  }

  function schedule() {
    clearTimeout(pollTimer);
    pollTimer = null;
    const busy = !base || pending.size > 0 || (base.documents || []).some((doc) => UNSETTLED.has(doc.status));
    if (busy && !document.hidden) pollTimer = setTimeout(load, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !pollTimer) load();
  });

  function render() {
    document.title = `${base.name} · Knowledge · Colloquy`;
    $("#kb-title").textContent = base.name;
    $("#kb-owner").textContent = base.channel ? `room ${base.channel}` : ownerLabel(base) === "you" ? "personal" : `${base.owner}'s`;
    $("#kb-description").textContent = base.description || "";
    const count = (base.documents || []).length;
    $("#kb-meta").textContent = `${count} document${count === 1 ? "" : "s"} · ${stateSummary(base.documents || [])} · searched with ${base.embedder || "?"}`;
    $("#kb-body").hidden = false;
    $("#kb-manage").hidden = !base.can_manage;
    const edit = $("#kb-edit");
    if (!edit.contains(document.activeElement)) {
      edit.elements.name.value = base.name;
      edit.elements.description.value = base.description || "";
    }
    renderDocuments();
  }

  function renderDocuments() {
    const body = $("#documents");
    const documents = base.documents || [];
    const seen = new Set();
    for (const doc of documents) {
      seen.add(doc.id);
      let row = rows.get(doc.id);
      if (!row) {
        row = el("tr", "document");
        row.dataset.document = doc.id;
        rows.set(doc.id, row);
      }
      // Only what changed is repainted: a focused Delete button stays focused while
      // the table is read back every second.
      const key = JSON.stringify([doc.name, doc.status, doc.progress, doc.error, doc.chunks, base.can_manage]);
      if (row.dataset.key !== key) {
        row.dataset.key = key;
        row.dataset.status = doc.status;
        const actions = el("td", "doc-actions");
        if (base.can_manage) {
          const remove = el("button", "danger doc-delete", "Delete");
          remove.type = "button";
          remove.setAttribute("aria-label", `Delete ${doc.name}`);
          remove.addEventListener("click", () => deleteDocument(doc));
          actions.append(remove);
        }
        row.replaceChildren(el("td", "doc-name", doc.name), statusCell(doc), el("td", "num", doc.chunks ?? 0), actions);
      }
      body.append(row); // in the server's order
    }
    for (const [docId, row] of rows) {
      if (!seen.has(docId)) {
        row.remove();
        rows.delete(docId);
      }
    }
    $("#documents-empty").hidden = documents.length !== 0;
  }

  async function deleteDocument(doc) {
    if (!confirm(`Delete "${doc.name}" from this knowledge base?`)) return;
    const answer = await api(`${baseUrl(id)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    if (!answer.ok && answer.status !== 404) return notify(problem(answer, "It could not be deleted."), "error");
    notify(`"${doc.name}" deleted.`);
    load();
  }

  // --- adding files: each goes to POST /api/uploads (its progress from the XHR), then
  // becomes a document; the worker reads it and indexes it while the page polls.
  function sendFile(file, onProgress) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/uploads");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(Math.round((100 * event.loaded) / event.total));
      });
      xhr.addEventListener("load", () => {
        let body = {};
        try {
          body = JSON.parse(xhr.responseText || "{}");
        } catch {
          body = {};
        }
        resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, body });
      });
      xhr.addEventListener("error", () => resolve({ ok: false, status: 0, body: { detail: "The server cannot be reached." } }));
      const form = new FormData();
      form.append("file", file, file.name || "file");
      xhr.send(form);
    });
  }

  function chipFor(file) {
    const chip = el("li", "upload-chip");
    const state = el("span", "state", "uploading…");
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.hidden = true;
    remove.setAttribute("aria-label", `Dismiss ${file.name}`);
    remove.addEventListener("click", () => {
      chip.remove();
      $("#kb-uploads").hidden = $("#kb-uploads").children.length === 0;
    });
    chip.append(el("span", "name", file.name || "file"), state, remove);
    chip.dataset.status = "uploading";
    $("#kb-uploads").append(chip);
    $("#kb-uploads").hidden = false;
    return {
      set(status, text) {
        chip.dataset.status = status;
        state.textContent = text;
        remove.hidden = status !== "failed";
      },
      done() {
        chip.remove();
        $("#kb-uploads").hidden = $("#kb-uploads").children.length === 0;
      },
    };
  }

  async function addFile(file) {
    const chip = chipFor(file);
    pending.add(chip);
    schedule();
    try {
      const sent = await sendFile(file, (percent) => chip.set("uploading", `uploading ${percent}%`));
      if (!sent.ok) return chip.set("failed", `failed: ${problem(sent, "the file was refused")}`);
      chip.set("processing", "adding…");
      const added = await api(`${baseUrl(id)}/documents`, { method: "POST", body: { uploads: [String(sent.body.id)] } });
      if (!added.ok) {
        // The upload is no use without its document.
        api(`/api/uploads/${encodeURIComponent(sent.body.id)}`, { method: "DELETE" });
        return chip.set("failed", `failed: ${problem(added, "it could not be added")}`);
      }
      chip.done();
    } finally {
      pending.delete(chip);
      load();
    }
  }

  function addFiles(files) {
    if (!base || !base.can_manage) return;
    for (const file of files) addFile(file);
  }

  $("#kb-files").addEventListener("change", (event) => {
    addFiles([...event.target.files]);
    event.target.value = "";
  });
  for (const kind of ["dragenter", "dragover"]) {
    root.addEventListener(kind, (event) => {
      if (!base?.can_manage || ![...(event.dataTransfer?.types || [])].includes("Files")) return;
      event.preventDefault();
      root.classList.add("dropping");
    });
  }
  root.addEventListener("dragleave", (event) => {
    if (!root.contains(event.relatedTarget)) root.classList.remove("dropping");
  });
  root.addEventListener("drop", (event) => {
    root.classList.remove("dropping");
    if (!base?.can_manage || !event.dataTransfer?.files?.length) return;
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });

  const textForm = $("#kb-text");
  textForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(textForm, null);
    const body = { name: textForm.elements.name.value.trim(), text: textForm.elements.text.value };
    const submit = $("#kb-text-submit");
    submit.disabled = true;
    const answer = await api(`${baseUrl(id)}/documents`, { method: "POST", body });
    submit.disabled = false;
    if (!answer.ok) return showErrors(textForm, answer);
    // Cleared unless something else was typed while it was on its way.
    if (textForm.elements.name.value.trim() === body.name && textForm.elements.text.value === body.text) textForm.reset();
    notify(`"${body.name || "The text"}" added.`);
    load();
  });

  const editForm = $("#kb-edit");
  editForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(editForm, null);
    const body = { name: editForm.elements.name.value.trim(), description: editForm.elements.description.value.trim() };
    const answer = await api(baseUrl(id), { method: "PATCH", body });
    if (!answer.ok) return showErrors(editForm, answer);
    document.activeElement?.blur();
    notify("Saved.");
    load();
  });
  $("#kb-delete").addEventListener("click", async () => {
    const count = (base?.documents || []).length;
    if (!confirm(`Delete the knowledge base "${base.name}" and its ${count} document${count === 1 ? "" : "s"}? This cannot be undone.`)) return;
    const answer = await api(baseUrl(id), { method: "DELETE" });
    if (!answer.ok && answer.status !== 404) return notify(problem(answer, "It could not be deleted."), "error");
    location.assign("/knowledge/");
  });

  // --- search --------------------------------------------------------------------------------
  const searchForm = $("#kb-search");
  searchForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = $("#kb-query").value.trim();
    const status = $("#search-status");
    const list = $("#search-results");
    if (!query) return;
    status.hidden = false;
    status.textContent = "Searching…";
    const answer = await api(`${baseUrl(id)}/search`, { method: "POST", body: { query } });
    if (!answer.ok) {
      status.textContent = problem(answer, "The search failed.");
      return;
    }
    lastQuery = query;
    const results = answer.body.results || [];
    status.textContent = results.length ? `${results.length} passage${results.length === 1 ? "" : "s"}, best first.` : "Nothing in this base matches well enough.";
    // The query's embedding failed: the base was searched by its words only.
    const failed = Object.values(answer.body.failed || {});
    if (failed.length) status.textContent += ` Searched by keywords only: ${failed.join("; ")}`;
    list.replaceChildren(...results.map((result) => resultItem(result, query)));
  });

  function resultItem(result, query) {
    const item = el("li", "result");
    item.dataset.chunk = String(result.chunk);
    const head = el("div", "result-head");
    const score = el("span", "score", Number(result.score).toFixed(2));
    score.title = "Score: 0 to 1";
    const open = el("a", "result-where", whereText(result));
    open.href = passageHref(result.chunk);
    open.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      history.pushState(null, "", open.href);
      showPassage();
    });
    head.append(score, open);
    item.append(head, highlighted(el("p", "result-text"), String(result.text || ""), query));
    return item;
  }

  // --- the passage a citation links to (?chunk=N) ---------------------------------------------
  // A reply's citation links with its turn (and a private room's watch key), so that the
  // API shows the passage to whoever may read the reply, even without the base.
  function passageQuery() {
    return new URLSearchParams(location.search);
  }

  // Shows the passage of ?chunk=N; `alone`: the base itself is not readable (then the
  // page is the passage only, or nothing). Whether a passage was shown.
  async function showPassage({ alone = false } = {}) {
    const box = $("#passage");
    const query = passageQuery();
    const chunk = query.get("chunk");
    for (const row of document.querySelectorAll("tr.document.cited")) row.classList.remove("cited");
    if (!chunk) {
      box.hidden = true;
      return false;
    }
    const ask = new URLSearchParams();
    for (const name of ["turn", "key"]) if (query.get(name)) ask.set(name, query.get(name));
    const suffix = ask.toString() ? `?${ask}` : "";
    const answer = await api(`${baseUrl(id)}/chunks/${encodeURIComponent(chunk)}${suffix}`);
    if (alone) {
      if (!answer.ok) return false;
      $("#kb-title").textContent = answer.body.knowledge_base?.name || "Knowledge base";
      document.title = `${$("#kb-title").textContent} · Knowledge · Colloquy`;
      $("#passage-close").hidden = true;
    }
    box.hidden = false;
    const text = box.querySelector(".passage-text");
    if (!answer.ok) {
      box.querySelector(".passage-where").textContent = answer.status === 404 ? "This passage is not there any more (its document was deleted or re-indexed)." : problem(answer, "The passage could not be read.");
      text.replaceChildren();
      text.hidden = true;
    } else {
      const passage = answer.body;
      box.querySelector(".passage-where").textContent = whereText(passage);
      text.hidden = false;
      text.replaceChildren(highlighted(el("span"), String(passage.text || ""), lastQuery));
      const docId = passage.document?.id;
      if (docId && rows.get(docId)) rows.get(docId).classList.add("cited");
    }
    box.scrollIntoView({ block: "start" });
    box.focus({ preventScroll: true });
    return answer.ok;
  }
  $("#passage-close").addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState(null, "", location.pathname);
    showPassage();
  });
  window.addEventListener("popstate", () => showPassage());

  await load();
  if (base) showPassage();
}

if (root?.dataset.page === "list") listPage();
else if (root?.dataset.page === "base") basePage();
