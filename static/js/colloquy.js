// The live client of the channel and watch pages (docs/protocol.md, "WebSocket").
// It fetches state (`history`), applies events in `seq` order, heals a gap with
// `get_history` + `since`, and reconnects with backoff. Turns are painted by turns.js;
// the chat page adds its composer (composer.js) and sidebar (sidebar.js).
import { Transcript } from "/static/js/turns.js";
import { EarlierTurns } from "/static/js/earlier.js";
import { setUpComposer } from "/static/js/composer.js";
import { setUpSidebar, sessionLabel } from "/static/js/sidebar.js";
import { setUpSettings } from "/static/js/settings.js";

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

const me = root.dataset.user || "";
const canManage = root.dataset.canManage === "1";
const state = {
  seq: null, // last applied seq
  healingSince: null, // the `since` of a get_history in flight
  session: null,
  running: null, // the turn id of the reply being written, or null
};

const transcript = new Transcript($("#transcript"), {
  me,
  key: config.key,
  readOnly: config.mode === "watch",
  canManage,
  turnUrl,
  requestDetail(view) {
    const asked = connection.send({ type: "get_turn", id: view.data.id });
    if (!asked) notify("Not connected; unfold it again once reconnected.", "error");
    return asked;
  },
  onEdit: (view) => composer?.startEdit(view),
  onRegenerate: () => composer?.regenerate(),
  onDecide(callId, approve) {
    const sent = connection.send({ type: approve ? "approve_tool" : "deny_tool", call_id: callId });
    if (!sent) notify("Not connected; decide again once reconnected.", "error");
    return sent;
  },
  onPaint: stickToBottom,
});
const earlier = new EarlierTurns(transcript, notify);

function turnUrl(id) {
  return `/api/turns/${encodeURIComponent(id)}${config.key ? `?key=${encodeURIComponent(config.key)}` : ""}`;
}

// Follow the newest text while the reader is at the bottom; stop once they scroll up.
let following = true;
let stuckAt = 0; // scrollY after the last stickToBottom
window.addEventListener("scroll", () => {
  following = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
});
function stickToBottom() {
  // Scrolled up since, though its scroll event has not come yet: a repaint must not
  // pull the reader back down.
  if (window.scrollY < stuckAt - 2) following = false;
  if (following && !archive.open) window.scrollTo(0, document.body.scrollHeight);
  stuckAt = window.scrollY;
}

function setRunning(turnId) {
  state.running = turnId;
  composer?.setRunning(turnId !== null);
}

function applyHistory(event) {
  const sessionChanged = event.session !== state.session;
  state.seq = event.seq;
  state.healingSince = null;
  state.session = event.session;
  transcript.clear();
  for (const turn of event.turns) transcript.set(turn);
  for (const checkpoint of event.checkpoints || []) transcript.setCheckpoint(checkpoint);
  composer?.sawHistory(event.turns);
  earlier.reset(event.session, event.has_more);
  setRunning(null);
  if (event.generating) {
    const { turn_id, text, reasoning, sources, steps } = event.generating;
    const writing = { id: turn_id, role: "bot", author: null, finish_reason: null, text: text || "", reasoning: reasoning || "" };
    if (Array.isArray(sources)) writing.sources = sources;
    if (Array.isArray(steps)) writing.steps = steps;
    transcript.set(writing);
    setRunning(turn_id);
  }
  if (event.watchers !== undefined) showPresence({ watchers: event.watchers });
  settings.fill(event);
  composer?.offerChoices(event.member_params, event.instruction);
  composer?.offerAgents(event);
  sessionShown(sessionChanged);
  stickToBottom();
}

// The live session is empty (suggestions are offered) or changed (the sidebar lists it).
function sessionShown(changed) {
  composer?.offerSuggestions(transcript.turns.size === 0 && !earlier.marker);
  if (changed) sidebar?.liveSessionChanged();
}

const handlers = {
  history: applyHistory,
  turn(event) {
    if (event.session !== state.session) {
      // A reply that began in a session which has since left (it stops itself within a
      // second): what it streamed here goes, and nothing of it stays.
      transcript.remove(event.id);
      if (state.running === event.id) setRunning(null);
      return;
    }
    transcript.set(event);
    composer?.sawTurn(event);
    composer?.offerSuggestions(false);
  },
  attachment_updated(event) {
    composer?.attachmentUpdated(event);
  },
  thinking(event) {
    transcript.set({ id: event.turn_id, role: "bot", author: null, finish_reason: null, label: event.label, text: "" });
    setRunning(event.turn_id);
  },
  sources(event) {
    // After `thinking`, before the first token: the citations show as the reply starts.
    transcript.set({ id: event.turn_id, role: "bot", sources: event.sources });
  },
  token(event) {
    transcript.append(event.turn_id, "text", event.data);
  },
  reasoning(event) {
    transcript.append(event.turn_id, "reasoning", event.data);
  },
  // A reply's tool calls (turns.js, steps.js): history may already hold one that then
  // arrives as an event too, so each is applied by call_id.
  tool_call(event) {
    if (typeof event.arguments_delta === "string") transcript.appendArguments(event.turn_id, event);
    else transcript.setStep(event.turn_id, event);
  },
  tool_result(event) {
    transcript.setStep(event.turn_id, event);
  },
  tool_approval(event) {
    transcript.setStep(event.turn_id, { call_id: event.call_id, name: event.name, arguments: event.arguments, status: "awaiting_approval" });
  },
  status(event) {
    transcript.setActivity(event.turn_id, event.text);
  },
  done(event) {
    transcript.finish(event.turn_id, { finish_reason: event.finish_reason, usage: event.usage, timings: event.timings });
    if (state.running === event.turn_id) setRunning(null);
    sidebar?.refreshChannels();
  },
  interrupted() {},
  turn_removed(event) {
    transcript.remove(event.id);
    transcript.dropCheckpoints(event.id);
  },
  reset(event) {
    state.session = event.session;
    transcript.clear();
    earlier.reset(event.session, false);
    setRunning(null);
    // The session may be an archived one reopened, with turns of its own: its history
    // brings them (a fresh one's is short).
    connection.send({ type: "get_history" });
    notify("A new session started.");
    if (archive.open) archive.close();
    sessionShown(true);
  },
  channel_updated(event) {
    document.body.classList.toggle("locked", Boolean(event.locked));
    settings.fill(event);
    composer?.offerChoices(event.member_params, event.instruction);
    composer?.offerAgents(event);
  },
  session_updated(event) {
    sidebar?.sessionUpdated(event);
  },
  compacted(event) {
    if (event.session === state.session) transcript.setCheckpoint(event.checkpoint);
  },
};

function applyEvent(event) {
  if (event.type === "presence") return showPresence(event);
  if (event.type === "pong") return;
  if (event.type === "error") return showError(event);
  if (event.type === "turn_detail") return transcript.applyDetail(event);
  if (event.type === "history") return applyHistory(event);
  if (typeof event.seq !== "number") return;
  if (state.seq !== null && event.seq <= state.seq) return; // already applied
  if (state.seq !== null && event.seq > state.seq + 1) {
    // A gap: ask for exactly what is missing (or a full history), once per gap.
    if (state.healingSince !== state.seq) {
      state.healingSince = state.seq;
      connection.send({ type: "get_history", since: state.seq });
    }
    return;
  }
  // A broadcast event this page does not know still takes its number.
  state.seq = event.seq;
  handlers[event.type]?.(event);
  stickToBottom();
}

// --- an archived session, read-only ---------------------------------------------------------

const archive = {
  open: null, // the session shown
  list: $("#archive-transcript"),
  banner: $("#archive-banner"),
  transcript: null,
  earlier: null,
  show(session) {
    if (!session) return this.close();
    this.open = session;
    this.earlier?.reset(null, false);
    this.transcript = new Transcript(this.list, { me, readOnly: true, key: config.key, turnUrl, requestDetail: () => false });
    this.transcript.clear();
    this.earlier = new EarlierTurns(this.transcript, notify);
    this.banner.querySelector(".archive-title").textContent = sessionLabel(session);
    this.toggle(true);
    // Starts with an empty list whose top is in view: the first page loads at once.
    this.earlier.reset(session.id, true);
  },
  close() {
    this.open = null;
    this.earlier?.reset(null, false);
    this.toggle(false);
    sidebar?.showLive();
    following = true;
    stickToBottom();
  },
  toggle(on) {
    this.list.hidden = !on;
    this.banner.hidden = !on;
    $("#transcript").hidden = on;
    composer?.show(!on);
    document.body.classList.toggle("reading-archive", on);
  },
};

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
  // What is wrong with a file is said in fields.attachments (naming the upload by id).
  const about = event.fields && Array.isArray(event.fields.attachments) ? ` ${event.fields.attachments.join(" ")}` : "";
  const said = `${event.text || event.code}${about}`;
  const text = composer ? composer.refused(said) : said;
  notify(`${text}${retry}`, "error");
}

// --- chat controls (channel page only) -----------------------------------------------

const composer = setUpComposer({
  channel: config.channel,
  canManage,
  send: (message) => connection.send(message),
  interrupt: () => connection.send({ type: "interrupt" }),
  notify,
  session: () => state.session,
  visibleAfter: (turnId) => transcript.ordered().filter((view) => view.data.id >= turnId).length,
});
setRunning(null);

// The owner's and moderators' editor of the channel's settings.
const settings = setUpSettings({ channel: config.channel, notify });

const sidebar = setUpSidebar({
  channel: config.channel,
  canManage,
  notify,
  liveSession: () => state.session,
  openSession: (session) => archive.show(session),
});
$("#back-to-live")?.addEventListener("click", () => archive.close());

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

// --- start --------------------------------------------------------------------------

const connection = new Connection(applyEvent, showState);
window.addEventListener("online", () => {
  if (document.body.dataset.connection === "offline") showState("reconnecting");
});
window.addEventListener("offline", () => showState("offline"));
setUpCopyLink();
setUpLargeType();
connection.open();
