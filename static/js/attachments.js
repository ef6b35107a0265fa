// Files on the page (docs/protocol.md, "Uploads"): what a user turn shows of the files
// sent with it, and the composer's tray of chips, one per file being uploaded. Names
// and reasons are set as text, never as markup; only raster images are shown as <img>
// (SVG can carry script, so it is always a download).
import { api, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

// What the server serves inline with ?inline=1 (chat/uploads/serving.py).
const RASTER = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const KINDS = ["document", "image", "audio", "video"];
// Status order: a late POST answer or a stale event must not take a chip backwards.
const RANK = { uploading: 0, uploaded: 1, processing: 2, ready: 3, failed: 3 };
// Read locally as a data: URL for the chip's preview (the CSP allows data: images, not
// blob:); larger images show their kind icon instead.
const PREVIEW_BYTES = 5 * 1024 * 1024;
const POLL_MS = 4000;

// A small text badge for a file: its extension (PDF, SVG, MP3…), else its kind. Text,
// not an emoji: not every system has an emoji font.
function badge(name, kind) {
  const match = /\.([a-z0-9]{1,4})$/i.exec(name || "");
  const label = match ? match[1].toUpperCase() : KINDS.includes(kind) ? kind.slice(0, 3).toUpperCase() : "FILE";
  const node = el("span", "kind-icon", label);
  node.dataset.kind = KINDS.includes(kind) ? kind : "document";
  node.setAttribute("aria-hidden", "true");
  return node;
}

export function formatSize(bytes) {
  const size = Number(bytes) || 0;
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(size < 10240 ? 1 : 0)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

// The upload's URL with query parameters added (it may come with some of its own).
export function withQuery(url, params) {
  const target = new URL(url, location.origin);
  for (const [name, value] of Object.entries(params)) if (value) target.searchParams.set(name, value);
  return target.origin === location.origin ? target.pathname + target.search : target.href;
}

// A user turn's attachments: raster images as thumbnails linking to the download,
// everything else as a chip (name, size, kind); a deleted file as a chip without a link.
// `key` is the watch key of a private channel's watch page (the content URL asks for it).
export function attachmentList(attachments, key) {
  const list = el("ul", "attachments");
  for (const item of attachments) {
    const entry = el("li", "attachment");
    entry.dataset.uploadId = String(item.id || "");
    entry.dataset.status = String(item.status || "");
    if (item.status === "deleted" || !item.url) {
      entry.classList.add("file-chip", "deleted");
      entry.append(badge(item.name, item.kind), el("span", "name", item.name || "file"), el("span", "note", "file deleted"));
      entry.title = `${item.name || "This file"} was deleted`;
    } else if (RASTER.has(item.mime)) {
      entry.classList.add("thumb");
      const anchor = downloadLink(withQuery(item.url, { key }));
      const image = el("img");
      image.src = withQuery(item.url, { inline: "1", key });
      image.loading = "lazy";
      image.alt = item.name || "image";
      anchor.title = `${item.name} · ${formatSize(item.size)}`;
      anchor.append(image);
      entry.append(anchor);
    } else {
      entry.classList.add("file-chip");
      const anchor = downloadLink(withQuery(item.url, { key }));
      anchor.append(
        badge(item.name, item.kind),
        el("span", "name", item.name || "file"),
        el("span", "note", `${formatSize(item.size)} · ${item.kind || "file"}`),
      );
      entry.append(anchor);
    }
    list.append(entry);
  }
  return list;
}

function downloadLink(href) {
  const anchor = el("a");
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer";
  return anchor;
}

// The composer's chips. options: channel, notify(text, kind), onChange() (the send
// button follows `blocker()`).
export class Tray {
  constructor(list, options) {
    this.list = list;
    this.options = options;
    this.chips = []; // {key, id, file, name, status, progress, error, element, controller}
    this.early = new Map(); // upload id -> an event that came before its POST answer
    this.pollTimer = null;
    this.counter = 0;
  }

  // --- adding files -----------------------------------------------------------------------

  addFiles(files) {
    for (const file of files) this.upload(file);
  }

  async upload(file) {
    const chip = { key: ++this.counter, id: null, file, name: file.name || "file", status: "uploading", progress: 0, error: "" };
    chip.controller = new AbortController();
    this.chips.push(chip);
    this.render(chip);
    this.changed();
    const form = new FormData();
    form.append("file", file, chip.name);
    form.append("channel", this.options.channel);
    const answer = await api("/api/uploads", { method: "POST", form, signal: chip.controller.signal });
    chip.controller = null;
    if (!this.chips.includes(chip)) {
      // Cancelled while it was on its way: remove what the server kept.
      if (answer.ok && answer.body.id) api(`/api/uploads/${encodeURIComponent(answer.body.id)}`, { method: "DELETE" });
      return;
    }
    if (!answer.ok) {
      const reason = problem(answer, "The file was refused.");
      const retry = answer.body && answer.body.retry_after ? ` (try again in ${answer.body.retry_after} s)` : "";
      this.options.notify(`${chip.name}: ${reason}${retry}`, "error");
      return this.apply(chip, { status: "failed", error: reason });
    }
    chip.id = String(answer.body.id);
    chip.element.dataset.uploadId = chip.id;
    chip.kind = answer.body.kind;
    this.apply(chip, answer.body);
    const early = this.early.get(chip.id);
    if (early) this.apply(chip, early);
    this.early.delete(chip.id);
    this.poll();
  }

  // An `attachment_updated` event of the channel (anyone's: only ours have a chip).
  updated(event) {
    const chip = this.chips.find((each) => each.id === event.id);
    if (chip) this.apply(chip, event);
    else if (this.chips.some((each) => each.id === null)) this.early.set(String(event.id), event);
  }

  apply(chip, data) {
    const status = data.status || chip.status;
    if (chip.status === "sending") return;
    if ((RANK[status] ?? 0) < (RANK[chip.status] ?? 0)) return;
    if ((RANK[status] ?? 0) === (RANK[chip.status] ?? 0) && status === chip.status && (data.progress ?? 0) < chip.progress) return;
    chip.status = status;
    chip.progress = Number(data.progress ?? chip.progress) || 0;
    chip.error = data.error || (status === "failed" ? chip.error : "");
    if (status === "failed" && chip.id) this.options.notify(`${chip.name}: ${chip.error || "processing failed"}`, "error");
    this.render(chip);
    this.changed();
  }

  // A missed event (a reconnect drops what came meanwhile) must not leave a chip
  // waiting forever: the unsettled ones are read back now and then.
  poll() {
    if (this.pollTimer) return;
    this.pollTimer = setTimeout(async () => {
      this.pollTimer = null;
      const waiting = this.chips.filter((chip) => chip.id && (chip.status === "uploaded" || chip.status === "processing"));
      for (const chip of waiting) {
        const answer = await api(`/api/uploads/${encodeURIComponent(chip.id)}`);
        if (answer.ok) this.apply(chip, answer.body);
      }
      if (this.chips.some((chip) => chip.status === "uploading" || chip.status === "uploaded" || chip.status === "processing")) this.poll();
    }, POLL_MS);
  }

  // --- cancelling -------------------------------------------------------------------------------

  async cancel(chip) {
    this.drop(chip);
    if (chip.controller) return chip.controller.abort();
    if (!chip.id) return;
    const answer = await api(`/api/uploads/${encodeURIComponent(chip.id)}`, { method: "DELETE" });
    if (!answer.ok && answer.status !== 404) this.options.notify(`${chip.name}: ${problem(answer, "It could not be removed.")}`, "error");
  }

  drop(chip) {
    this.chips = this.chips.filter((each) => each !== chip);
    chip.element.remove();
    this.changed();
  }

  // --- sending ------------------------------------------------------------------------------------

  // Why the message cannot go yet, or "" when it can.
  blocker() {
    const failed = this.chips.filter((chip) => chip.status === "failed");
    if (failed.length) return `Remove the failed file${failed.length > 1 ? "s" : ""} first: ${failed.map((chip) => chip.name).join(", ")}`;
    const waiting = this.chips.filter((chip) => chip.status !== "ready" && chip.status !== "sending");
    if (waiting.length) return `Waiting for ${waiting.map((chip) => chip.name).join(", ")}…`;
    if (this.chips.some((chip) => chip.status === "sending")) return "Sending…";
    return "";
  }

  ids() {
    return this.chips.filter((chip) => chip.status === "ready").map((chip) => chip.id);
  }

  get size() {
    return this.chips.length;
  }

  // The message went with these ids: their chips wait for the turn that carries them
  // (cleared) or an error (back to ready, to send again).
  sending(ids) {
    for (const chip of this.chips) if (ids.includes(chip.id)) this.setStatus(chip, "sending");
  }

  // A turn (or a history) arrived: chips of the files it carries are done.
  sawTurn(turn) {
    const sent = new Set((turn.attachments || []).map((item) => String(item.id)));
    for (const chip of [...this.chips]) if (chip.id && sent.has(chip.id)) this.drop(chip);
  }

  // The server refused the message: the files are still there, ready to send again.
  refused() {
    let any = false;
    for (const chip of this.chips) {
      if (chip.status === "sending") {
        this.setStatus(chip, "ready");
        any = true;
      }
    }
    return any;
  }

  // An error names an upload by id: the reader knows the file by its name.
  explain(text) {
    let out = String(text || "");
    for (const chip of this.chips) if (chip.id && out.includes(chip.id)) out = out.split(chip.id).join(`"${chip.name}"`);
    return out;
  }

  setStatus(chip, status) {
    chip.status = status;
    this.render(chip);
    this.changed();
  }

  changed() {
    this.list.hidden = this.chips.length === 0;
    this.options.onChange?.();
  }

  // --- painting -------------------------------------------------------------------------------

  render(chip) {
    if (!chip.element) {
      chip.element = el("li", "upload-chip");
      chip.element.dataset.key = String(chip.key);
      const preview = el("span", "preview");
      const remove = el("button", "remove", "×");
      remove.type = "button";
      remove.title = `Remove ${chip.name}`;
      remove.setAttribute("aria-label", `Remove ${chip.name}`);
      remove.addEventListener("click", () => this.cancel(chip));
      chip.element.append(preview, el("span", "name", chip.name), el("span", "state"), remove);
      this.list.append(chip.element);
      this.preview(chip, preview);
    }
    chip.element.dataset.status = chip.status;
    chip.element.querySelector(".state").textContent = statusLabel(chip);
  }

  preview(chip, slot) {
    const file = chip.file;
    const kind = file.type.startsWith("image/") ? "image" : file.type.startsWith("audio/") ? "audio" : file.type.startsWith("video/") ? "video" : "document";
    slot.append(badge(chip.name, kind));
    if (!RASTER.has(file.type) || file.size > PREVIEW_BYTES) return;
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const image = el("img");
      image.alt = "";
      image.src = String(reader.result);
      slot.replaceChildren(image);
    });
    reader.readAsDataURL(file);
  }
}

function statusLabel(chip) {
  switch (chip.status) {
    case "uploading":
      return "uploading…";
    case "uploaded":
      return "uploaded";
    case "processing":
      return `processing ${chip.progress}%`;
    case "ready":
      return "ready";
    case "sending":
      return "sending…";
    case "failed":
      return `failed: ${chip.error || "unknown reason"}`;
    default:
      return chip.status;
  }
}
