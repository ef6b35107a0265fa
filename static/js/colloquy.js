// The live client of the channel and watch pages (PROTOCOL.md, "WebSocket").
// It fetches state (`history`), applies events in `seq` order, heals a gap with
// `get_history` + `since`, and reconnects with backoff. User and model text only ever
// reach the page as text nodes or through the Markdown sanitizer (markdown.js).
import { renderMarkdown } from "/static/js/markdown.js";

const root = document.getElementById("live");
const $ = (selector) => document.querySelector(selector);

const config = {
  channel: root.dataset.channel,
  mode: root.dataset.mode, // "chat" or "watch"
  key: root.dataset.key || "",
};

// --- the connection -------------------------------------------------------------------

// Close codes after which reconnecting cannot help.
const FINAL_CLOSES = {
  4001: "You are no longer logged in. Log in again to keep chatting.",
  4003: config.mode === "watch"
    ? "This watch link is no longer valid: the key is wrong or was rotated."
    : "You are not allowed in this channel any more.",
  4004: "This channel does not exist any more.",
};

class Connection {
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.attempt = 0;
    this.socket = null;
    this.pingTimer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams();
    if (config.mode === "watch") query.set("watch", "1");
    if (config.key) query.set("key", config.key);
    const search = query.toString();
    return `${scheme}//${location.host}/ws/${encodeURIComponent(config.channel)}${search ? "?" + search : ""}`;
  }

  open() {
    this.onState(this.attempt ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.onState("connected");
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), 25000);
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    });
    socket.addEventListener("close", (closed) => {
      clearInterval(this.pingTimer);
      if (this.socket !== socket) return;
      if (FINAL_CLOSES[closed.code]) {
        this.onState("closed", FINAL_CLOSES[closed.code]);
        return;
      }
      this.retry();
    });
  }

  retry() {
    // Exponential backoff with jitter, capped: 0.5 s, 1 s, 2 s … 10 s.
    const delay = Math.min(10000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.onState(navigator.onLine === false ? "offline" : "reconnecting");
    setTimeout(() => this.open(), delay);
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }
}

// --- the transcript ---------------------------------------------------------------------

const transcript = $("#transcript");
const state = {
  seq: null, // last applied seq
  healingSince: null, // the `since` of a get_history in flight
  session: null,
  turns: new Map(), // turn id -> {element, data, text, reasoning}
};

function el(tag, className, text) {
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

function turnView(id) {
  let view = state.turns.get(id);
  if (!view) {
    const element = el("li", "turn");
    element.dataset.turnId = String(id);
    const head = el("div", "turn-head");
    const who = el("span", "who");
    const time = el("time", "when");
    const status = el("span", "status");
    head.append(who, time, status);
    const reasoning = el("details", "reasoning");
    reasoning.hidden = true;
    reasoning.append(el("summary", null, "reasoning"), el("div", "reasoning-text"));
    const body = el("div", "body");
    element.append(head, reasoning, body);
    view = { element, data: { id }, text: "", reasoning: "", dirty: false };
    state.turns.set(id, view);
    // In id order: a turn a moderator brings back returns to its place.
    const later = [...transcript.querySelectorAll(".turn")].find((other) => Number(other.dataset.turnId) > id);
    transcript.insertBefore(element, later || null);
  }
  return view;
}

function paint(view) {
  const { element, data } = view;
  element.className = `turn role-${data.role || "bot"}`;
  element.classList.toggle("generating", data.role === "bot" && !data.finish_reason);
  element.querySelector(".who").textContent = roleLabel(data);
  const time = element.querySelector(".when");
  time.textContent = formatTime(data.created_at);
  if (data.created_at) time.dateTime = data.created_at;
  const status = element.querySelector(".status");
  status.textContent = statusText(data, view);
  const body = element.querySelector(".body");
  body.replaceChildren(view.text ? renderMarkdown(view.text) : "");
  const reasoning = element.querySelector(".reasoning");
  reasoning.hidden = !view.reasoning;
  reasoning.querySelector(".reasoning-text").textContent = view.reasoning;
  if (data.role === "bot" && data.finish_reason) paintSubstrate(view);
}

function statusText(data, view) {
  if (data.role !== "bot") return "";
  if (!data.finish_reason) return view.text ? "writing…" : `${data.label || "thinking"}…`;
  const notes = [];
  if (data.finish_reason !== "stop") notes.push(data.finish_reason);
  if (data.truncated) notes.push("cut");
  if (data.rep_hint) notes.push(data.rep_hint);
  return notes.join(" · ");
}

// The substrate view: what the model really saw and said, for model tinkerers. `history`
// and `turn` events leave the prompt and the raw completion out (a prompt holds the whole
// transcript before the reply); they are asked for with `get_turn` when the view unfolds.
function paintSubstrate(view) {
  const { element, data } = view;
  let details = element.querySelector(".substrate");
  if (!details) {
    details = el("details", "substrate");
    details.addEventListener("toggle", () => {
      if (details.open && !view.detail) requestDetail(view);
    });
    element.append(details);
  }
  const usage = data.usage || {};
  const timings = data.timings || {};
  const facts = [
    ["provider", [data.provider, data.model].filter(Boolean).join(" / ")],
    ["finish reason", data.finish_reason],
    ["usage", `${usage.prompt_tokens ?? "?"} prompt + ${usage.completion_tokens ?? "?"} completion tokens${usage.estimated ? " (estimated)" : ""}`],
    ["timings", `first token ${timings.ttft_ms ?? "?"} ms, total ${timings.duration_ms ?? "?"} ms`],
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
    note.append(link(turnUrl(data.id), "The whole prompt"));
    parts.push(note);
  }
  parts.push(
    el("pre", "prompt", typeof prompt === "string" ? prompt : JSON.stringify(prompt, null, 2)),
    el("h4", null, "raw completion"),
    el("pre", "raw", detail ? detail.raw_completion ?? "" : waiting),
  );
  details.replaceChildren(...parts);
}

function link(href, text) {
  const anchor = el("a", null, text);
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer";
  return anchor;
}

function turnUrl(id) {
  return `/api/turns/${encodeURIComponent(id)}${config.key ? `?key=${encodeURIComponent(config.key)}` : ""}`;
}

function requestDetail(view) {
  view.detailAsked = connection.send({ type: "get_turn", id: view.data.id });
  if (!view.detailAsked) notify("Not connected; unfold it again once reconnected.", "error");
  paintSubstrate(view);
}

// The answer to get_turn: for this socket only, no seq.
function applyDetail(event) {
  const view = state.turns.get(event.id);
  if (!view) return;
  view.detail = event;
  view.detailAsked = false;
  if (view.data.role === "bot" && view.data.finish_reason) paintSubstrate(view);
}

let paintTimer = null;
function schedulePaint(view) {
  view.dirty = true;
  if (paintTimer) return;
  // Re-rendering Markdown on every token is wasteful; 20 paints a second look live.
  paintTimer = setTimeout(() => {
    paintTimer = null;
    for (const each of state.turns.values()) {
      if (each.dirty) {
        each.dirty = false;
        paint(each);
      }
    }
    stickToBottom();
  }, 50);
}

let following = true;
window.addEventListener("scroll", () => {
  following = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
});
function stickToBottom() {
  if (following) window.scrollTo(0, document.body.scrollHeight);
}

function setTurn(data) {
  const view = turnView(data.id);
  view.data = { ...view.data, ...data };
  view.text = data.text ?? view.text;
  view.reasoning = data.reasoning ?? view.reasoning;
  paint(view);
}

function removeTurn(id) {
  const view = state.turns.get(id);
  if (view) {
    view.element.remove();
    state.turns.delete(id);
  }
}

function applyHistory(event) {
  state.seq = event.seq;
  state.healingSince = null;
  state.session = event.session;
  state.turns.clear();
  transcript.replaceChildren();
  for (const turn of event.turns) setTurn(turn);
  if (event.has_more) transcript.prepend(el("li", "more", "Earlier turns are in the session's history."));
  if (event.generating) {
    const { turn_id, text, reasoning } = event.generating;
    setTurn({ id: turn_id, role: "bot", author: null, finish_reason: null, text: text || "", reasoning: reasoning || "" });
  }
  if (event.watchers !== undefined) showPresence({ watchers: event.watchers });
  settings.fill(event.framing, event.params);
  stickToBottom();
}

const handlers = {
  history: applyHistory,
  turn(event) {
    setTurn(event);
  },
  thinking(event) {
    setTurn({ id: event.turn_id, role: "bot", author: null, finish_reason: null, label: event.label, text: "" });
  },
  token(event) {
    const view = turnView(event.turn_id);
    view.text += event.data;
    schedulePaint(view);
  },
  reasoning(event) {
    const view = turnView(event.turn_id);
    view.reasoning += event.data;
    schedulePaint(view);
  },
  done(event) {
    const view = state.turns.get(event.turn_id);
    if (!view) return;
    view.data = { ...view.data, finish_reason: event.finish_reason, usage: event.usage, timings: event.timings };
    paint(view);
  },
  interrupted() {},
  turn_removed(event) {
    removeTurn(event.id);
  },
  reset(event) {
    state.session = event.session;
    state.turns.clear();
    transcript.replaceChildren();
    notify("A new session started.");
  },
  channel_updated(event) {
    document.body.classList.toggle("locked", Boolean(event.locked));
    settings.fill(event.framing, event.params);
  },
};

function applyEvent(event) {
  if (event.type === "presence") return showPresence(event);
  if (event.type === "pong") return;
  if (event.type === "error") return showError(event);
  if (event.type === "turn_detail") return applyDetail(event);
  if (event.type === "history") return applyHistory(event);
  const handler = handlers[event.type];
  if (!handler || typeof event.seq !== "number") return;
  if (state.seq !== null && event.seq <= state.seq) return; // already applied
  if (state.seq !== null && event.seq > state.seq + 1) {
    // A gap: ask for exactly what is missing (or a full history), once per gap.
    if (state.healingSince !== state.seq) {
      state.healingSince = state.seq;
      connection.send({ type: "get_history", since: state.seq });
    }
    return;
  }
  state.seq = event.seq;
  handler(event);
  stickToBottom();
}

// --- status line --------------------------------------------------------------------

const LABELS = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", offline: "offline", closed: "disconnected" };

function showState(name, message) {
  const badge = $("#conn");
  badge.dataset.state = name;
  badge.textContent = LABELS[name] || name;
  document.body.dataset.connection = name;
  if (message) notify(message, "error", 0);
}

function showPresence(event) {
  const node = $("#watchers");
  if (node && typeof event.watchers === "number") {
    node.textContent = `${event.watchers} watching`;
    node.dataset.count = String(event.watchers);
  }
}

let noticeTimer = null;
function notify(text, kind = "info", keepMs = 6000) {
  const node = $("#notice");
  if (!node) return;
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(noticeTimer);
  if (keepMs) noticeTimer = setTimeout(() => (node.hidden = true), keepMs);
}

function showError(event) {
  if (event.code === "invalid" && event.fields) settings.showErrors(event.fields);
  const retry = event.retry_after ? ` (try again in ${event.retry_after} s)` : "";
  notify(`${event.text || event.code}${retry}`, "error");
}

// --- chat controls (channel page only) -----------------------------------------------

function setUpComposer() {
  const form = $("#composer");
  if (!form) return;
  const text = $("#text");
  const send = () => {
    const value = text.value;
    if (!value.trim()) return;
    if (connection.send({ type: "message", text: value })) text.value = "";
    else notify("Not connected; your message is still in the box.", "error");
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("#interrupt").addEventListener("click", () => connection.send({ type: "interrupt" }));
  $("#regenerate").addEventListener("click", () => connection.send({ type: "regenerate" }));
  $("#inject").addEventListener("click", () => {
    if (!text.value.trim()) return notify("Write the text to inject in the box first.");
    if (connection.send({ type: "inject", role: $("#inject-role").value, text: text.value })) text.value = "";
  });
  $("#reset").addEventListener("click", () => {
    if (window.confirm("Start a new session? The current one is archived, not deleted.")) connection.send({ type: "reset" });
  });
}

function setUpCopyLink() {
  const button = $("#copy-watch");
  if (!button) return;
  button.addEventListener("click", async () => {
    const url = button.dataset.url;
    try {
      await navigator.clipboard.writeText(url);
      notify("Watch link copied.");
    } catch {
      const field = $("#watch-url");
      field.hidden = false;
      field.select();
      notify("Copy the selected link.");
    }
  });
}

function setUpLargeType() {
  const toggle = $("#large-type");
  if (!toggle) return;
  const apply = (on) => {
    document.body.classList.toggle("large-type", on);
    toggle.setAttribute("aria-pressed", String(on));
  };
  apply(localStorage.getItem("colloquy.largeType") === "1");
  toggle.addEventListener("click", () => {
    const on = !document.body.classList.contains("large-type");
    localStorage.setItem("colloquy.largeType", on ? "1" : "0");
    apply(on);
  });
}

// The owner's editor of framing and parameters: saved through the REST API, errors
// shown next to the fields exactly as the protocol words them.
const FRAMING_FIELDS = ["name", "preamble", "user_prefix", "bot_prefix", "agent_prefix", "turn_suffix", "stop", "quote_user"];
const PARAM_FIELDS = ["provider", "model", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"];
const NUMBER_PARAMS = new Set(["max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"]);

const settings = {
  form: document.getElementById("settings-form"),
  editing: false,
  fill(framing, params) {
    if (!this.form || this.editing) return;
    for (const name of FRAMING_FIELDS) {
      const input = this.form.elements[`framing.${name}`];
      if (!input) continue;
      const value = framing?.[name];
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (name === "stop") input.value = (value || []).join("\n");
      else input.value = value ?? "";
    }
    for (const name of PARAM_FIELDS) {
      const input = this.form.elements[`params.${name}`];
      if (input) input.value = params?.[name] ?? "";
    }
  },
  read() {
    const framing = {};
    for (const name of FRAMING_FIELDS) {
      const input = this.form.elements[`framing.${name}`];
      if (input.type === "checkbox") framing[name] = input.checked;
      else if (name === "stop") framing[name] = input.value.split("\n").filter((line) => line.length > 0);
      else framing[name] = input.value;
    }
    const params = {};
    for (const name of PARAM_FIELDS) {
      const value = this.form.elements[`params.${name}`].value.trim();
      if (value === "") continue;
      params[name] = NUMBER_PARAMS.has(name) && !Number.isNaN(Number(value)) ? Number(value) : value;
    }
    return { framing, params };
  },
  showErrors(fields) {
    if (!this.form) return;
    for (const node of this.form.querySelectorAll(".field-error")) node.textContent = "";
    for (const [group, errors] of Object.entries(fields)) {
      const entries = errors && typeof errors === "object" && !Array.isArray(errors) ? Object.entries(errors) : [["", errors]];
      for (const [name, messages] of entries) {
        const slot = this.form.querySelector(`[data-error-for="${CSS.escape(name ? `${group}.${name}` : group)}"]`) || this.form.querySelector("[data-error-for='form']");
        slot.textContent = [].concat(messages).join(" ");
      }
    }
  },
  setUp() {
    if (!this.form) return;
    this.form.addEventListener("focusin", () => (this.editing = true));
    this.form.addEventListener("submit", async (event) => {
      event.preventDefault();
      this.showErrors({});
      const response = await fetch(`/api/channels/${encodeURIComponent(config.channel)}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json", "X-CSRFToken": this.form.elements.csrfmiddlewaretoken.value },
        credentials: "same-origin",
        body: JSON.stringify(this.read()),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        this.editing = false;
        notify("Settings saved.");
      } else {
        this.showErrors(body.fields || { form: [body.detail || "Could not save."] });
        notify(body.detail || "Could not save the settings.", "error");
      }
    });
  },
};

// --- start --------------------------------------------------------------------------

const connection = new Connection(applyEvent, showState);
window.addEventListener("online", () => {
  if (document.body.dataset.connection === "offline") showState("reconnecting");
});
window.addEventListener("offline", () => showState("offline"));
setUpComposer();
setUpCopyLink();
setUpLargeType();
settings.setUp();
connection.open();
