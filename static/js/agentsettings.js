// The agent and tools part of the channel settings editor (settings.js): the agent the
// channel is bound to (GET /api/agents), whether members may name another, memory in
// this shared room, and a checklist of tools (GET /api/tools) with "needs approval" per
// tool. Its values come from history / channel_updated (fill) and go out in the
// editor's one PATCH (read). Text goes in with textContent only.
import { api } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

export function setUpAgentSettings(form) {
  const fieldset = document.getElementById("tools-settings");
  const list = document.getElementById("tools-checklist");
  const off = document.getElementById("tools-off");
  const agentSelect = form.elements.agent;
  let state = null; // null: not asked; "loading"; "loaded"
  let catalogue = []; // GET /api/tools
  let agents = []; // GET /api/agents
  // The channel's, from history / channel_updated.
  let current = { tools: [], tools_requiring_approval: [], tools_apply: true, agent: null };

  function fillAgents() {
    const names = agents.map((agent) => agent.name);
    // The channel's agent stays listed when it was disabled since: saving keeps it.
    if (current.agent && !names.includes(current.agent)) names.push(current.agent);
    const none = el("option", null, "(none: the channel's own settings)");
    none.value = "";
    agentSelect.replaceChildren(
      none,
      ...names.map((name) => {
        const agent = agents.find((item) => item.name === name);
        const option = el("option", null, agent ? (agent.description ? `${name} — ${agent.description}` : name) : `${name} (disabled)`);
        option.value = name;
        return option;
      }),
    );
    agentSelect.value = current.agent || "";
  }

  // A row per tool offered, and per tool the channel has that is not (a disabled
  // server's): saving must not drop what the page cannot list.
  function fillTools() {
    const rows = [...catalogue];
    for (const name of current.tools) {
      if (!rows.some((tool) => tool.name === name)) rows.push({ name, description: "", builtin: !name.startsWith("mcp:"), available: false });
    }
    list.replaceChildren(
      ...rows.map((tool) => {
        const on = el("input");
        on.type = "checkbox";
        on.name = "tools";
        on.value = tool.name;
        on.checked = current.tools.includes(tool.name);
        on.disabled = !tool.available && !on.checked;
        const approval = el("input");
        approval.type = "checkbox";
        approval.name = "tools_requiring_approval";
        approval.value = tool.name;
        approval.checked = current.tools_requiring_approval.includes(tool.name);
        approval.disabled = !on.checked;
        on.addEventListener("change", () => {
          approval.disabled = !on.checked;
          if (!on.checked) approval.checked = false;
        });
        const label = el("label");
        const note = [tool.available ? "" : "unavailable", tool.description].filter(Boolean).join(" · ");
        label.append(on, el("span", "kb-choice-name", tool.name), el("span", "help", note));
        const needs = el("label", "tool-approval");
        needs.append(approval, el("span", null, "needs approval"));
        const item = el("li");
        item.dataset.tool = tool.name;
        item.append(label, needs);
        return item;
      }),
    );
    if (!rows.length) list.append(el("li", "help", "No tools on this server."));
    off.hidden = current.tools_apply !== false;
    for (const box of list.querySelectorAll("input")) if (current.tools_apply === false) box.disabled = true;
  }

  async function load() {
    if (state) return;
    state = "loading";
    const [tools, agentList] = await Promise.all([api("/api/tools"), api("/api/agents")]);
    if (!tools.ok || !agentList.ok) {
      state = null;
      return;
    }
    catalogue = tools.body.tools || [];
    agents = agentList.body.agents || [];
    fillAgents();
    fillTools();
    fieldset.hidden = false;
    state = "loaded";
  }

  function fill(event) {
    if (event.agent_choice === undefined) return;
    current = {
      tools: event.tools || [],
      tools_requiring_approval: event.tools_requiring_approval || [],
      tools_apply: event.tools_apply,
      agent: event.agent ?? null,
    };
    form.elements.agent_choice.checked = event.agent_choice === "members";
    form.elements.memory.checked = Boolean(event.memory);
    if (state === "loaded") {
      fillAgents();
      fillTools();
    }
  }

  // What the PATCH carries: the switches always; the agent and the tools once their
  // lists are there (saving before must not clear them), and the tools only in chat
  // mode (a completion-mode channel takes none).
  function read() {
    const changes = { agent_choice: form.elements.agent_choice.checked ? "members" : "fixed", memory: form.elements.memory.checked };
    if (state !== "loaded") return changes;
    changes.agent = agentSelect.value === "" ? null : agentSelect.value;
    if (current.tools_apply !== false) {
      const ticked = (name) => [...list.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);
      changes.tools = ticked("tools");
      changes.tools_requiring_approval = ticked("tools_requiring_approval").filter((name) => changes.tools.includes(name));
    }
    return changes;
  }

  return { fill, load, read };
}
