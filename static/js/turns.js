// A transcript on the page: turns by id, painted from their data. The live transcript
// and a read-only archived session both use it. User and model text reach the page only
// as text nodes or through the Markdown sanitizer (markdown.js).
import { renderMarkdown, copyText } from "/static/js/markdown.js";
import { attachmentList, withQuery } from "/static/js/attachments.js";
import { StepCard, codePoints, mergeStep, splitAtSteps } from "/static/js/steps.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function formatTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function roleLabel(data) {
  if (data.role === "bot") return data.provider === "demo" ? "bot (demo)" : "bot";
  if (data.role === "agent") return data.author ? `agent · ${data.author}` : "agent";
  return data.author || "user";
}

function statusText(data, view) {
  if (data.role !== "bot") return "";
  if (!data.finish_reason) {
    if (view.text) return "writing…";
    const label = data.label || "thinking";
    return label.endsWith("…") ? label : `${label}…`; // the server's labels end with one
  }
  const notes = [];
  if (data.finish_reason !== "stop") notes.push(data.finish_reason);
  if (data.truncated) notes.push("cut");
  if (data.rep_hint) notes.push(data.rep_hint);
  return notes.join(" · ");
}

export function link(href, text) {
  const anchor = el("a", null, text);
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer";
  return anchor;
}

export class Transcript {
  // options: me (username), key (a watch page's key: file URLs carry it), readOnly,
  // canManage (the channel's owner or a moderator), turnUrl(id), requestDetail(view) -> bool,
  // onEdit(view), onRegenerate(view), onDecide(callId, approve) -> bool (sent), onPaint().
  constructor(list, options) {
    this.list = list;
    this.options = options;
    this.turns = new Map(); // turn id -> {element, data, text, reasoning, steps, activity, detail}
    this.checkpoints = new Map(); // checkpoint id -> its folded element
    this.paintTimer = null;
  }

  clear() {
    this.turns.clear();
    this.checkpoints.clear();
    this.list.replaceChildren();
  }

  // Turns in id order, each checkpoint right after the turn it summarises up to: the
  // element before which something placed at ``order`` goes (null: at the end).
  placeBefore(order) {
    const placed = this.list.querySelectorAll(".turn, .checkpoint");
    return [...placed].find((other) => Number(other.dataset.order) > order) || null;
  }

  // A checkpoint (the protocol's Checkpoint object), folded: "Earlier conversation
  // summarised (N turns)", its summary shown when unfolded. The summary is text.
  setCheckpoint(checkpoint) {
    this.checkpoints.get(checkpoint.id)?.remove();
    const element = el("li", "checkpoint");
    element.dataset.checkpointId = String(checkpoint.id);
    element.dataset.through = String(checkpoint.through_turn_id);
    element.dataset.order = String(checkpoint.through_turn_id + 0.5);
    const details = el("details");
    const count = checkpoint.turns === 1 ? "1 turn" : `${checkpoint.turns} turns`;
    details.append(el("summary", null, `Earlier conversation summarised (${count})`), el("div", "checkpoint-summary", checkpoint.summary));
    element.append(details);
    this.checkpoints.set(checkpoint.id, element);
    this.list.insertBefore(element, this.placeBefore(checkpoint.through_turn_id + 0.5));
  }

  // A turn left the transcript: the summaries that covered it go too (the server
  // dropped them: chat/agents/checkpoints.py drop_covering).
  dropCheckpoints(turnId) {
    for (const [id, element] of this.checkpoints) {
      if (Number(element.dataset.through) >= turnId) {
        element.remove();
        this.checkpoints.delete(id);
      }
    }
  }

  view(id) {
    let view = this.turns.get(id);
    if (!view) {
      const element = el("li", "turn");
      element.dataset.turnId = String(id);
      element.dataset.order = String(id);
      const head = el("div", "turn-head");
      head.append(el("span", "who"), el("time", "when"), el("span", "status"), this.tools());
      const reasoning = el("details", "reasoning");
      reasoning.hidden = true;
      reasoning.append(el("summary", null, "reasoning"), el("div", "reasoning-text"));
      const activity = el("p", "activity");
      activity.hidden = true;
      element.append(head, reasoning, el("div", "body"), activity);
      // steps: call id -> Step (in call order); cards: call id -> StepCard; activity:
      // the `status` line of the reply being written.
      view = { element, data: { id }, text: "", reasoning: "", steps: new Map(), cards: new Map(), activity: "", dirty: false };
      this.turns.set(id, view);
      // In id order: a turn a moderator brings back (or an older page) takes its place.
      this.list.insertBefore(element, this.placeBefore(id));
    }
    return view;
  }

  tools() {
    const tools = el("span", "tools");
    const button = (name, label, title) => {
      const node = el("button", `tool ${name}`, label);
      node.type = "button";
      node.title = title;
      tools.append(node);
      return node;
    };
    const copy = button("copy-message", "Copy", "Copy the message's text");
    copy.addEventListener("click", (event) => copyText(this.viewOf(event.target).text, copy));
    if (!this.options.readOnly) {
      const edit = button("edit", "Edit", "Edit and send again");
      edit.hidden = true;
      edit.addEventListener("click", (event) => this.options.onEdit(this.viewOf(event.target)));
      const again = button("regenerate", "Regenerate", "Write this reply again");
      again.hidden = true;
      again.addEventListener("click", (event) => this.options.onRegenerate(this.viewOf(event.target)));
    }
    return tools;
  }

  viewOf(node) {
    return this.turns.get(Number(node.closest(".turn").dataset.turnId));
  }

  set(data) {
    const view = this.view(data.id);
    view.data = { ...view.data, ...data };
    view.text = data.text ?? view.text;
    view.reasoning = data.reasoning ?? view.reasoning;
    for (const step of Array.isArray(data.steps) ? data.steps : []) this.mergeStep(view, step);
    this.paint(view);
    return view;
  }

  // A tool call of a reply, whole or in part (`tool_call`, `tool_result`,
  // `tool_approval`), applied by call_id.
  setStep(id, fields) {
    const view = this.view(id);
    this.mergeStep(view, fields);
    this.paint(view);
  }

  // A piece of a call's arguments as the model streams them.
  appendArguments(id, event) {
    const view = this.view(id);
    const step = this.mergeStep(view, { call_id: event.call_id, name: event.name });
    step.rawArguments += event.arguments_delta;
    this.schedulePaint(view);
  }

  // Text written while a call streams came before it: a call first seen by its pieces
  // sits at the end of the text so far, until its whole Step says where.
  mergeStep(view, fields) {
    const step = mergeStep(view.steps.get(fields.call_id), fields, codePoints(view.text));
    view.steps.set(fields.call_id, step);
    return step;
  }

  // What the reply is doing when it is not writing (a `status` event), until its next
  // token or its end.
  setActivity(id, text) {
    const view = this.view(id);
    view.activity = text || "";
    this.paint(view);
  }

  remove(id) {
    const view = this.turns.get(id);
    if (view) {
      view.element.remove();
      this.turns.delete(id);
      this.paintTools();
    }
  }

  append(id, field, data) {
    const view = this.view(id);
    view[field] += data;
    if (field === "text") view.activity = "";
    this.schedulePaint(view);
  }

  finish(id, fields) {
    const view = this.turns.get(id);
    if (!view) return;
    view.data = { ...view.data, ...fields };
    this.paint(view);
  }

  ordered() {
    return [...this.turns.values()].sort((a, b) => a.data.id - b.data.id);
  }

  oldestId() {
    const ids = [...this.turns.keys()];
    return ids.length ? Math.min(...ids) : null;
  }

  schedulePaint(view) {
    view.dirty = true;
    if (this.paintTimer) return;
    // Re-rendering Markdown on every token is wasteful; 20 paints a second look live.
    this.paintTimer = setTimeout(() => {
      this.paintTimer = null;
      for (const each of this.turns.values()) {
        if (each.dirty) {
          each.dirty = false;
          this.paint(each);
        }
      }
      this.options.onPaint?.();
    }, 50);
  }

  paint(view) {
    const { element, data } = view;
    element.className = `turn role-${data.role || "bot"}`;
    element.classList.toggle("generating", data.role === "bot" && !data.finish_reason);
    element.querySelector(".who").textContent = roleLabel(data);
    const time = element.querySelector(".when");
    time.textContent = formatTime(data.created_at);
    if (data.created_at) time.dateTime = data.created_at;
    element.querySelector(".status").textContent = statusText(data, view);
    this.paintBody(view);
    const activity = element.querySelector(".activity");
    activity.textContent = data.finish_reason ? "" : view.activity;
    activity.hidden = !activity.textContent;
    this.paintAttachments(view);
    this.paintSources(view);
    const reasoning = element.querySelector(".reasoning");
    reasoning.hidden = !view.reasoning;
    reasoning.querySelector(".reasoning-text").textContent = view.reasoning;
    if (data.role === "bot" && data.finish_reason) this.paintSubstrate(view);
    this.paintTools();
  }

  // The reply's text as Markdown, cut where its tool calls go: each call's card sits at
  // its text_offset (the card elements are kept, so an unfolded one stays unfolded).
  paintBody(view) {
    const body = view.element.querySelector(".body");
    if (!view.steps.size) {
      body.replaceChildren(view.text ? renderMarkdown(view.text) : "");
      return;
    }
    const ctx = {
      turnId: view.data.id,
      me: this.options.me || "",
      mayDecide: this.mayDecide(view),
      decide: (callId, approve) => this.options.onDecide?.(callId, approve) ?? false,
      repaint: () => this.paint(view),
    };
    const pieces = splitAtSteps(view.text, view.steps.values()).map((piece) => {
      if (typeof piece === "string") return renderMarkdown(piece);
      let card = view.cards.get(piece.call_id);
      if (!card) view.cards.set(piece.call_id, (card = new StepCard()));
      return card.paint(piece, ctx);
    });
    body.replaceChildren(...pieces);
  }

  // A call waiting for approval is decided by the author of the message the reply
  // answers (the turn before it that is not the bot's), or by the channel's owner or a
  // moderator; never from a watch page. The server checks again.
  mayDecide(view) {
    if (this.options.readOnly || !this.options.me) return false;
    if (this.options.canManage) return true;
    const answered = this.ordered().filter((other) => other.data.id < view.data.id && other.data.role !== "bot").pop();
    return Boolean(answered && answered.data.author === this.options.me);
  }

  // The files sent with a user turn, repainted only when they change (a thumbnail that
  // loaded must not load again on every paint of the turn).
  paintAttachments(view) {
    const attachments = view.data.attachments || [];
    const signature = JSON.stringify(attachments);
    if (view.attachmentsPainted === signature) return;
    view.attachmentsPainted = signature;
    view.element.querySelector(".attachments")?.remove();
    if (attachments.length) view.element.querySelector(".body").after(attachmentList(attachments, this.options.key || ""));
  }

  // A reply's numbered citations (its `sources`: from the `sources` event before the
  // first token, then from the turn), repainted only when they change.
  paintSources(view) {
    // An empty list (no retrieval, or nothing relevant: the prompt said so) shows nothing.
    const sources = view.data.role === "bot" && Array.isArray(view.data.sources) ? view.data.sources : [];
    const signature = JSON.stringify(sources);
    if (view.sourcesPainted === signature) return;
    view.sourcesPainted = signature;
    view.element.querySelector(".sources")?.remove();
    if (sources.length) view.element.querySelector(".body").after(sourceList(sources, view.data.id, this.options.key || ""));
  }

  // Edit on your own last message, Regenerate on the last reply, once it is finished.
  paintTools() {
    if (this.options.readOnly) return;
    const turns = this.ordered();
    const last = turns[turns.length - 1];
    const running = turns.some((view) => view.data.role === "bot" && !view.data.finish_reason);
    const lastUser = turns.filter((view) => view.data.role === "user").pop();
    for (const view of turns) {
      const mine = view === lastUser && view.data.author === this.options.me;
      view.element.querySelector(".tool.edit").hidden = !(mine && !running);
      const again = view === last && view.data.role === "bot" && !running;
      view.element.querySelector(".tool.regenerate").hidden = !again;
    }
  }

  // The substrate view: what the model really saw and said, for model tinkerers. Live
  // frames leave the prompt and the raw completion out; they are asked for when the
  // view unfolds (REST pages of turns carry them already: view.detail).
  paintSubstrate(view) {
    const { element, data } = view;
    let details = element.querySelector(".substrate");
    if (!details) {
      details = el("details", "substrate");
      details.addEventListener("toggle", () => {
        if (details.open && !view.detail) {
          view.detailAsked = this.options.requestDetail(view);
          this.paintSubstrate(view);
        }
      });
      element.append(details);
    }
    const usage = data.usage || {};
    const timings = data.timings || {};
    const retrieval = timings.retrieval_ms !== undefined ? `, retrieval ${timings.retrieval_ms} ms` : "";
    const facts = [
      ["provider", [data.provider, data.model].filter(Boolean).join(" / ")],
      ["instruction", data.instruction || "none"],
      ["params", samplingSummary(data.params || {})],
      ["finish reason", data.finish_reason],
      ["usage", `${usage.prompt_tokens ?? "?"} prompt + ${usage.completion_tokens ?? "?"} completion tokens${usage.estimated ? " (estimated)" : ""}`],
      ["timings", `first token ${timings.ttft_ms ?? "?"} ms, total ${timings.duration_ms ?? "?"} ms${retrieval}`],
    ];
    const list = el("dl");
    for (const [term, value] of facts) list.append(el("dt", null, term), el("dd", null, value ?? ""));
    const detail = view.detail;
    const waiting = view.detailAsked ? "loading…" : "";
    const prompt = detail ? detail.prompt : waiting;
    const parts = [el("summary", null, "substrate"), list, el("h4", null, "prompt")];
    if (detail && detail.prompt_truncated) {
      // Cut to fit one frame (its end is kept); the API has it whole.
      const note = el("p", "cut", "Only the end of the prompt is shown. ");
      note.append(link(this.options.turnUrl(data.id), "The whole prompt"));
      parts.push(note);
    }
    parts.push(
      el("pre", "prompt", typeof prompt === "string" ? prompt : JSON.stringify(prompt, null, 2)),
      el("h4", null, "raw completion"),
      el("pre", "raw", detail ? detail.raw_completion ?? "" : waiting),
    );
    details.replaceChildren(...parts);
  }

  applyDetail(event) {
    const view = this.turns.get(event.id);
    if (!view) return;
    view.detail = event;
    view.detailAsked = false;
    if (view.data.role === "bot" && view.data.finish_reason) this.paintSubstrate(view);
  }
}

// "[1] handbook.pdf, page 3": a passage's citation, as the prompt numbered it.
function citation(source) {
  const document = (source.document && source.document.name) || "document";
  return `[${source.n}] ${document}${source.page ? `, page ${source.page}` : ""}`;
}

// Where a citation leads: the passage on its base's page (docs/pages.md: shown to
// whoever may read the citing reply — `turn`, and a watch page's `key`), or, for a
// passage of a file sent with the message, that file.
function sourceHref(source, turnId, key) {
  if (source.kb && source.kb.id && source.chunk !== null && source.chunk !== undefined) {
    return withQuery(`/knowledge/${encodeURIComponent(source.kb.id)}/`, { chunk: String(source.chunk), turn: String(turnId), key });
  }
  if (source.document && source.document.id) return withQuery(`/api/uploads/${encodeURIComponent(source.document.id)}/content`, { key });
  return null;
}

// The citations under a reply. Names, snippets and base names are user text: text
// nodes only.
export function sourceList(sources, turnId, key) {
  const box = el("div", "sources");
  const list = el("ol", "source-list");
  for (const source of sources) {
    const item = el("li", "source");
    item.dataset.n = String(source.n);
    const href = sourceHref(source, turnId, key);
    item.append(href ? link(href, citation(source)) : el("span", "cite", citation(source)));
    if (source.kb && source.kb.name) item.append(el("span", "source-kb", ` — ${source.kb.name}`));
    if (source.snippet) item.append(el("blockquote", "snippet", source.snippet));
    list.append(item);
  }
  box.append(el("h4", null, "Sources"), list);
  return box;
}

// What a reply was written with, in one line (thinking included: it may have been a
// per-message choice).
function samplingSummary(params) {
  const keys = ["temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "thinking"];
  return keys.filter((key) => key in params).map((key) => `${key} ${params[key]}`).join(", ");
}
