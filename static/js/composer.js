// The composer of the chat page: Enter sends, Shift+Enter starts a new line, Esc stops
// the reply; the stop button takes the send button's place while a reply runs; the
// unsent text is kept per channel across reloads; per-message model, parameters,
// thinking, instruction and agent within what the channel allows; prompt suggestions
// for an empty session; edit-and-resend of your last message; files (attach, drop,
// paste: a chip each, sent with the message once ready) and the microphone.
import { api, offers, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";
import { Tray } from "/static/js/attachments.js";
import { setUpMic } from "/static/js/mic.js";

// The server's ranges (docs/protocol.md, "Params"): an owner's bounds.
const OWNER_BOUNDS = {
  temperature: { min: 0, max: 2, step: 0.05 },
  top_p: { min: 0, max: 1, step: 0.01 },
  top_k: { min: 0, max: 1000, step: 1 },
  max_tokens: { min: 1, max: null, step: 1 },
  repeat_penalty: { min: 0.5, max: 2, step: 0.05 },
};

// options: channel, canManage, send(message) -> bool, interrupt(), notify(text, kind),
// session() -> the live session id, visibleAfter(turnId) -> turns from it to the end.
export function setUpComposer(options) {
  const form = document.getElementById("composer");
  if (!form) return null;
  const text = document.getElementById("text");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("interrupt");
  const draftKey = `colloquy.draft.${options.channel}`;
  let running = false;
  let editing = null; // the turn being edited: {id, text}

  // --- drafts ---------------------------------------------------------------------------

  text.value = localStorage.getItem(draftKey) || text.value;
  const saveDraft = () => {
    if (text.value) localStorage.setItem(draftKey, text.value);
    else localStorage.removeItem(draftKey);
  };
  text.addEventListener("input", saveDraft);
  const clearText = () => {
    text.value = "";
    saveDraft();
  };

  // --- sending --------------------------------------------------------------------------

  async function send() {
    const value = text.value;
    if (!value.trim() && !tray.size) return;
    const blocked = tray.blocker();
    if (blocked) return options.notify(blocked, "error");
    if (editing && !(await dropEditedTurns())) return;
    const attachments = tray.ids();
    const message = { type: "message", text: value, ...choices.read() };
    if (attachments.length) message.attachments = attachments;
    const bases = choices.bases();
    if (bases.length) message.knowledge_base_ids = bases;
    if (options.send(message)) {
      if (attachments.length) {
        tray.sending(attachments);
        unsent = value;
      }
      clearText();
      stopEditing();
      suggestions.hide();
    } else {
      options.notify("Not connected; your message is still in the box.", "error");
    }
  }

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
  stopButton.addEventListener("click", () => options.interrupt());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running && !event.defaultPrevented) options.interrupt();
  });

  // --- files ------------------------------------------------------------------------------------
  // Each file goes to POST /api/uploads at once and shows as a chip; the message can go
  // once every chip is ready. Its chips stay ("sending…") until the turn carrying them
  // arrives, or come back if the server refuses the message.

  let unsent = ""; // the text of a message with files, until its turn arrives
  const blockedNote = document.getElementById("send-blocked");
  const tray = new Tray(document.getElementById("uploads"), {
    channel: options.channel,
    notify: options.notify,
    onChange() {
      const reason = tray.blocker();
      sendButton.disabled = Boolean(reason);
      sendButton.title = reason;
      blockedNote.textContent = reason;
      blockedNote.hidden = !reason;
    },
  });
  const picker = document.getElementById("attach-input");
  picker.addEventListener("change", () => {
    tray.addFiles([...picker.files]);
    picker.value = "";
  });
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  const dropZone = document.getElementById("live");
  dropZone.addEventListener("dragover", (event) => {
    if (!hasFiles(event) || form.hidden) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropZone.classList.add("dropping");
  });
  dropZone.addEventListener("dragleave", (event) => {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
  });
  dropZone.addEventListener("drop", (event) => {
    dropZone.classList.remove("dropping");
    if (!hasFiles(event) || form.hidden) return;
    event.preventDefault();
    tray.addFiles([...event.dataTransfer.files]);
    text.focus();
  });
  // A file dropped beside the drop zone must not replace the page with itself.
  window.addEventListener("dragover", (event) => hasFiles(event) && event.preventDefault());
  window.addEventListener("drop", (event) => hasFiles(event) && event.preventDefault());
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (!files.length || form.hidden) return;
    event.preventDefault(); // the file, not its name as text
    tray.addFiles(files);
  });

  setUpMic({
    button: document.getElementById("mic"),
    notify: options.notify,
    insert(words) {
      const before = text.value.slice(0, text.selectionStart);
      const after = text.value.slice(text.selectionEnd);
      const gap = before && !/\s$/.test(before) ? " " : "";
      text.value = `${before}${gap}${words}${after}`;
      const caret = before.length + gap.length + words.length;
      text.setSelectionRange(caret, caret);
      saveDraft();
      text.focus();
    },
  });

  function setRunning(on) {
    running = on;
    sendButton.hidden = on;
    stopButton.hidden = !on;
    form.classList.toggle("running", on);
  }

  // --- edit and resend --------------------------------------------------------------------
  // Those who may manage the session (owner, moderators) truncate it to the turns before
  // the edited message, then send the new text: the old message and its reply go. Others
  // cannot truncate, so their edited text is sent as a new message after the old one.

  const banner = document.getElementById("editing");
  document.getElementById("cancel-edit").addEventListener("click", () => {
    stopEditing();
    clearText();
  });

  function startEdit(view) {
    editing = { id: view.data.id };
    text.value = view.text;
    saveDraft();
    banner.hidden = false;
    banner.querySelector(".mode").textContent = options.canManage
      ? "Editing your last message: sending replaces it and its reply."
      : "Editing your last message: it is sent again as a new message.";
    text.focus();
  }

  function stopEditing() {
    editing = null;
    banner.hidden = true;
  }

  async function dropEditedTurns() {
    if (!options.canManage) return true;
    const session = options.session();
    const about = await api(`/api/sessions/${encodeURIComponent(session)}`);
    if (!about.ok) {
      options.notify(problem(about, "The session could not be read."), "error");
      return false;
    }
    const keep = about.body.turns - options.visibleAfter(editing.id);
    const answer = await api(`/api/sessions/${encodeURIComponent(session)}/truncate`, {
      method: "POST",
      body: { keep: Math.max(0, keep), from: "start" },
    });
    if (!answer.ok) options.notify(problem(answer, "The old message could not be removed."), "error");
    return answer.ok;
  }

  // --- model, parameters and thinking ---------------------------------------------------------

  const choices = {
    box: document.getElementById("choices"),
    model: document.getElementById("choice-model"),
    fields: document.getElementById("choice-params"),
    thinking: document.getElementById("thinking"),
    thinkingToggle: document.getElementById("thinking-toggle"),
    // "Search the web" (for those who configure the channel, where the instance has a
    // search endpoint): web_search: true.
    webSearch: document.getElementById("web-search"),
    instruction: document.getElementById("choice-instruction"),
    agent: document.getElementById("choice-agent"),
    agents: null, // the enabled agents (GET /api/agents), asked once the picker is offered
    kbBox: document.getElementById("choice-kb"),
    kbList: null, // the user's own knowledge bases (GET /api/knowledge-bases/available)
    policy: null,
    providers: null,
    instructions: null, // the shared ones and the caller's own (GET /api/instructions)
    // member_params and the channel's instruction from history / channel_updated; owners
    // pick among every enabled model.
    async offer(policy, channelInstruction) {
      this.policy = policy || {};
      if (this.instructions === null) {
        const answer = await api("/api/instructions");
        this.instructions = answer.ok ? answer.body.instructions || [] : [];
      }
      this.fillInstructions(channelInstruction ?? null);
      await this.fillBases();
      let models = this.policy.models || [];
      let bounds = Object.fromEntries(Object.keys(OWNER_BOUNDS).filter((key) => key in this.policy).map((key) => [key, { ...OWNER_BOUNDS[key], ...this.policy[key] }]));
      let thinking = Boolean(this.policy.thinking);
      if (options.canManage) {
        this.providers = this.providers || (await api("/api/providers")).body.providers || [];
        models = this.providers.flatMap((provider) => (provider.models || []).map((model) => `${provider.name}/${model}`));
        bounds = OWNER_BOUNDS;
        thinking = true;
      }
      this.fill(models, bounds, thinking);
    },
    fill(models, bounds, thinking) {
      const chosen = this.model.value;
      this.model.replaceChildren(el("option", null, "channel's model"));
      this.model.options[0].value = "";
      for (const name of models) {
        const option = el("option", null, name);
        option.value = name;
        this.model.append(option);
      }
      this.model.value = models.includes(chosen) ? chosen : "";
      this.model.parentElement.hidden = models.length === 0;
      const values = Object.fromEntries([...this.fields.querySelectorAll("input")].map((input) => [input.name, input.value]));
      this.fields.replaceChildren();
      for (const [name, range] of Object.entries(bounds)) {
        const label = el("label", "choice");
        const input = el("input");
        input.type = "number";
        input.name = name;
        input.step = String(range.step ?? "any");
        if (range.min !== null && range.min !== undefined) input.min = String(range.min);
        if (range.max !== null && range.max !== undefined) input.max = String(range.max);
        input.placeholder = "channel's";
        input.value = values[name] || "";
        label.append(el("span", null, name), input);
        this.fields.append(label);
      }
      this.thinkingToggle.hidden = !thinking;
      if (!thinking) this.thinking.checked = false;
      this.showBox();
    },
    showBox() {
      const parts = [this.model.parentElement, this.instruction.parentElement, this.kbBox, this.agent?.parentElement].filter(Boolean);
      this.box.hidden = parts.every((part) => part.hidden) && this.fields.children.length === 0;
    },
    // The agent picker: where members may name an agent (agent_choice "members"), or for
    // those who configure the channel; "channel's agent" sends nothing.
    async offerAgents(event) {
      if (this.webSearch && event.tools_apply !== undefined) {
        // A completion-mode channel takes no tools: the server would refuse it.
        this.webSearch.parentElement.hidden = event.tools_apply === false;
        if (event.tools_apply === false) this.webSearch.checked = false;
      }
      if (!this.agent || event.agent_choice === undefined) return;
      const offered = event.agent_choice === "members" || options.canManage;
      if (offered && this.agents === null) {
        const answer = await api("/api/agents");
        this.agents = answer.ok ? answer.body.agents || [] : [];
      }
      const chosen = this.agent.value;
      const first = el("option", null, event.agent ? `channel's agent (${event.agent})` : "channel's (no agent)");
      first.value = "";
      this.agent.replaceChildren(
        first,
        ...(this.agents || []).map((agent) => {
          const option = el("option", null, agent.name);
          option.value = agent.name;
          if (agent.description) option.title = agent.description;
          return option;
        }),
      );
      this.agent.value = (this.agents || []).some((agent) => agent.name === chosen) ? chosen : "";
      this.agent.parentElement.hidden = !offered || (this.agents || []).length === 0;
      this.showBox();
    },
    // A box per personal knowledge base of the user's, to search for this message too
    // (the room's own and attached bases are searched for every reply anyway). Asked
    // once; hidden where there are none (or no knowledge bases on this server).
    async fillBases() {
      if (!this.kbBox || this.kbList !== null) return;
      const answer = await api(`/api/knowledge-bases/available?channel=${encodeURIComponent(options.channel)}`);
      const items = answer.ok ? (Array.isArray(answer.body) ? answer.body : answer.body.knowledge_bases || answer.body.results || []) : [];
      this.kbList = items.filter((base) => !base.channel);
      const boxes = this.kbBox.querySelector(".choice-kb-list");
      boxes.replaceChildren(
        ...this.kbList.map((base) => {
          const box = el("input");
          box.type = "checkbox";
          box.value = String(base.id);
          const label = el("label", "policy-model");
          label.append(box, el("span", null, base.name));
          return label;
        }),
      );
      this.kbBox.hidden = this.kbList.length === 0;
    },
    // The ids of the bases ticked for this message (a message's field only, not a
    // regenerate's).
    bases() {
      if (!this.kbBox || this.kbBox.hidden) return [];
      return [...this.kbBox.querySelectorAll("input:checked")].map((box) => box.value);
    },
    // "channel's default" sends nothing (the channel's, else the user's default, applies);
    // "none" sends `instruction: null`. With no instruction anywhere there is no choice.
    fillInstructions(channelInstruction) {
      const chosen = this.instruction.value;
      const applied = this.instructions.find((item) => item.id === channelInstruction);
      const options = [
        ["", applied ? `channel's default (${applied.name})` : "channel's default"],
        ["none", "none"],
        ...this.instructions.map((item) => [String(item.id), item.shared ? item.name : `${item.name} (mine)`]),
      ];
      this.instruction.replaceChildren(
        ...options.map(([value, label]) => {
          const option = el("option", null, label);
          option.value = value;
          return option;
        }),
      );
      this.instruction.value = options.some(([value]) => value === chosen) ? chosen : "";
      this.instruction.parentElement.hidden = this.instructions.length === 0 && channelInstruction === null;
    },
    // The message's `params` (only what was chosen) and `thinking`.
    read() {
      const params = {};
      const model = this.model.value;
      if (model) {
        const slash = model.indexOf("/");
        params.provider = model.slice(0, slash);
        params.model = model.slice(slash + 1);
      }
      for (const input of this.fields.querySelectorAll("input")) {
        if (input.value.trim() !== "" && !Number.isNaN(Number(input.value))) params[input.name] = Number(input.value);
      }
      const extra = {};
      if (Object.keys(params).length) extra.params = params;
      if (this.thinking.checked) extra.thinking = true;
      const instruction = this.instruction.parentElement.hidden ? "" : this.instruction.value;
      if (instruction) extra.instruction = instruction === "none" ? null : Number(instruction);
      if (this.agent && !this.agent.parentElement.hidden && this.agent.value) extra.agent = this.agent.value;
      if (this.webSearch && !this.webSearch.parentElement.hidden && this.webSearch.checked) extra.web_search = true;
      return extra;
    },
  };

  // --- prompt suggestions -------------------------------------------------------------------
  // Asked for on demand, not on every page load: each call counts as one message against
  // the caller's limits (POST /api/prompts).

  const suggestions = {
    button: document.getElementById("suggest"),
    list: document.getElementById("suggestions"),
    available: null,
    async offer(empty) {
      if (!empty) return this.hide();
      if (this.available === null) this.available = await offers("/api/prompts", "POST");
      this.button.hidden = !this.available;
    },
    hide() {
      this.button.hidden = true;
      this.list.hidden = true;
      this.list.replaceChildren();
    },
    async ask() {
      this.button.disabled = true;
      const answer = await api("/api/prompts", { method: "POST", body: { text: text.value, n: 3, channel: options.channel } });
      this.button.disabled = false;
      if (answer.status === 404 || answer.status === 405) {
        this.available = false;
        return this.hide();
      }
      if (!answer.ok) return options.notify(problem(answer, "No suggestions now."), "error");
      const chips = (answer.body.prompts || []).map((prompt) => {
        const chip = el("button", "suggestion", prompt);
        chip.type = "button";
        chip.addEventListener("click", () => {
          text.value = prompt;
          saveDraft();
          text.focus();
        });
        return chip;
      });
      this.list.replaceChildren(...chips);
      this.list.hidden = chips.length === 0;
    },
  };
  suggestions.button.addEventListener("click", () => suggestions.ask());

  // --- the channel's own controls ----------------------------------------------------------------

  document.getElementById("inject").addEventListener("click", () => {
    if (!text.value.trim()) return options.notify("Write the text to inject in the box first.");
    if (options.send({ type: "inject", role: document.getElementById("inject-role").value, text: text.value })) clearText();
  });
  document.getElementById("reset").addEventListener("click", () => {
    if (window.confirm("Start a new session? The current one is archived, not deleted.")) options.send({ type: "reset" });
  });

  return {
    setRunning,
    startEdit,
    attachmentUpdated: (event) => tray.updated(event),
    // A turn arrived: the chips of the files it carries are done.
    sawTurn(turn) {
      if (turn.role !== "user" || !(turn.attachments || []).length) return;
      tray.sawTurn(turn);
      if (!tray.blocker()) unsent = "";
    },
    // A fresh history: chips whose turn is in it are done; a message whose turn never
    // came (the socket dropped meanwhile) gets its chips back.
    sawHistory(turns) {
      for (const turn of turns) if (turn.role === "user") tray.sawTurn(turn);
      tray.refused();
      unsent = "";
    },
    // The server refused something: a message sent with files gets its chips (and text)
    // back; the error names an upload by id, the reader by its name.
    refused(said) {
      if (tray.refused() && unsent && !text.value) {
        text.value = unsent;
        saveDraft();
      }
      unsent = "";
      return tray.explain(said);
    },
    regenerate() {
      options.send({ type: "regenerate", ...choices.read() });
    },
    offerChoices: (policy, instruction) => choices.offer(policy, instruction),
    offerAgents: (event) => choices.offerAgents(event),
    offerSuggestions: (empty) => suggestions.offer(empty),
    show(visible) {
      form.hidden = !visible;
    },
  };
}
