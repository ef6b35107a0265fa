// The chat page's sidebar: the channels you can see (an unread marker, a dot while the
// bot writes) and the open channel's sessions by title, with search, rename, archive
// and delete. Titles and names are set as text, never as markup.
import { api, offers, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

const SEEN_KEY = "colloquy.seen"; // {channel name: turn count when last seen}
const REFRESH_MS = 15000;

function readSeen() {
  try {
    return JSON.parse(localStorage.getItem(SEEN_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function formatDay(iso) {
  const when = new Date(iso || "");
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleDateString([], { month: "short", day: "numeric" });
}

export function sessionLabel(session) {
  return session.title || `Untitled · ${formatDay(session.created_at)}`;
}

// options: channel, canManage, notify(text, kind), openSession(session), liveSession()
export function setUpSidebar(options) {
  const sidebar = document.getElementById("sidebar");
  if (!sidebar) return null;
  const channelList = document.getElementById("channel-list");
  const sessionList = document.getElementById("session-list");
  const search = document.getElementById("session-search");
  const toggle = document.getElementById("sidebar-toggle");
  let canPatch = false; // PATCH /api/sessions/{id} is there (rename, archive, delete)
  let shown = null; // the session whose turns the page shows (null: the live one)
  let query = "";

  // --- channels -----------------------------------------------------------------------

  async function refreshChannels() {
    const answer = await api("/api/channels");
    if (!answer.ok) return;
    const seen = readSeen();
    const rows = [];
    for (const channel of answer.body.channels || []) {
      // The open channel is being read: whatever it holds now counts as seen.
      if (channel.name === options.channel) seen[channel.name] = channel.turns;
      rows.push(channelRow(channel, channel.turns > (seen[channel.name] ?? 0)));
    }
    localStorage.setItem(SEEN_KEY, JSON.stringify(seen));
    channelList.replaceChildren(...rows);
  }

  function channelRow(channel, unread) {
    const row = el("li", "channel-item");
    row.dataset.channel = channel.name;
    row.classList.toggle("current", channel.name === options.channel);
    row.classList.toggle("unread", unread);
    row.classList.toggle("writing", Boolean(channel.generating));
    const anchor = el("a", "channel-link", channel.title || channel.name);
    anchor.href = channel.chat_url || `/channel/${encodeURIComponent(channel.name)}`;
    if (channel.name === options.channel) anchor.setAttribute("aria-current", "page");
    const marks = el("span", "marks");
    if (channel.generating) marks.append(el("span", "dot writing-dot", "bot writing"));
    if (unread) marks.append(el("span", "dot unread-dot", "new"));
    row.append(anchor, marks);
    return row;
  }

  // --- sessions -----------------------------------------------------------------------

  async function refreshSessions() {
    const params = new URLSearchParams();
    if (query) params.set("q", query);
    const suffix = params.toString() ? `?${params}` : "";
    const answer = await api(`/api/channels/${encodeURIComponent(options.channel)}/sessions${suffix}`);
    if (!answer.ok) {
      sessionList.replaceChildren(el("li", "empty", problem(answer, "Sessions could not be loaded.")));
      return;
    }
    const sessions = (answer.body.sessions || []).filter((session) => session.status !== "deleted");
    const rows = sessions.map(sessionRow);
    sessionList.replaceChildren(...(rows.length ? rows : [el("li", "empty", query ? "No session matches." : "No sessions yet.")]));
  }

  function sessionRow(session) {
    const row = el("li", "session-item");
    row.dataset.session = session.id;
    row.dataset.status = session.status;
    const live = session.id === options.liveSession();
    row.classList.toggle("live", live);
    row.classList.toggle("shown", shown ? shown.id === session.id : live);
    const open = el("button", "session-open");
    open.type = "button";
    open.append(el("span", "session-title", sessionLabel(session)));
    if (session.status === "archived") open.append(el("span", "session-status", "archived"));
    open.addEventListener("click", () => {
      shown = live ? null : session;
      document.body.classList.remove("sidebar-open");
      options.openSession(live ? null : session);
      markShown();
    });
    row.append(open);
    if (canPatch && options.canManage) row.append(manageTools(session));
    return row;
  }

  function manageTools(session) {
    const tools = el("span", "session-tools");
    const button = (name, label) => {
      const node = el("button", `tool ${name}`, label);
      node.type = "button";
      tools.append(node);
      return node;
    };
    button("rename", "Rename").addEventListener("click", () => startRename(session));
    if (session.status === "archived") {
      button("restore", "Reopen").addEventListener("click", () => patch(session, { status: "active" }));
    } else {
      button("archive", "Archive").addEventListener("click", () => patch(session, { status: "archived" }));
    }
    button("delete", "Delete").addEventListener("click", () => {
      if (window.confirm(`Delete “${sessionLabel(session)}”? It can be purged for good later.`)) {
        patch(session, { status: "deleted" });
      }
    });
    return tools;
  }

  function startRename(session) {
    const row = sessionList.querySelector(`[data-session="${CSS.escape(session.id)}"]`);
    if (!row) return;
    const input = el("input", "rename-input");
    input.value = session.title || "";
    input.maxLength = 200;
    input.setAttribute("aria-label", "New title");
    row.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      if (save) patch(session, { title: input.value.trim() });
      else refreshSessions();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") {
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(false));
  }

  async function patch(session, changes) {
    const answer = await api(`/api/sessions/${encodeURIComponent(session.id)}`, { method: "PATCH", body: changes });
    if (!answer.ok) {
      if (answer.status === 404 || answer.status === 405) canPatch = false;
      options.notify(problem(answer, "The session could not be changed."), "error");
    } else if (changes.status && shown && shown.id === session.id) {
      // The archived session on screen became the live one again, or went away.
      shown = null;
      options.openSession(null);
    }
    refreshSessions();
  }

  function markShown() {
    for (const row of sessionList.querySelectorAll(".session-item")) {
      const live = row.dataset.session === options.liveSession();
      row.classList.toggle("shown", shown ? row.dataset.session === shown.id : live);
    }
  }

  // --- search, keyboard, small screens ---------------------------------------------------

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      query = search.value.trim().slice(0, 200);
      refreshSessions();
    }, 250);
  });

  function setOpen(open) {
    document.body.classList.toggle("sidebar-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  }
  toggle.addEventListener("click", () => setOpen(!document.body.classList.contains("sidebar-open")));

  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
      event.preventDefault();
      setOpen(true);
      search.focus();
      search.select();
    } else if (event.key === "Escape" && document.body.classList.contains("sidebar-open") && sidebar.contains(document.activeElement)) {
      setOpen(false);
      toggle.focus();
    }
  });

  // --- start and live updates ----------------------------------------------------------

  refreshChannels();
  setInterval(() => {
    if (!document.hidden) refreshChannels();
  }, REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshChannels();
  });

  return {
    refreshChannels,
    // A new live session (history, reset): list it, and probe once which changes the
    // server offers for sessions.
    async liveSessionChanged() {
      if (!shown) markShown();
      const id = options.liveSession();
      if (id && options.canManage && !canPatch) canPatch = await offers(`/api/sessions/${encodeURIComponent(id)}`, "PATCH");
      refreshSessions();
    },
    // session_updated: a new title or status, live.
    sessionUpdated(event) {
      const row = sessionList.querySelector(`[data-session="${CSS.escape(String(event.session))}"]`);
      if (row && event.status === row.dataset.status && row.querySelector(".session-title")) {
        row.querySelector(".session-title").textContent = sessionLabel({ title: event.title, created_at: null });
        if (!event.title) refreshSessions();
      } else {
        refreshSessions();
      }
    },
    showLive() {
      shown = null;
      markShown();
    },
  };
}
