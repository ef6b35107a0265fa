// A reply's tool calls, its "steps" (docs/protocol.md, "Agents"), as folded cards in
// place inside the reply's text. Arguments and results are the model's and the tools'
// text (a fetched web page, an attacker's input echoed back): they reach the page as
// text nodes only, never as markup, and results are not rendered as Markdown.
import { api, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

const STATES = {
  running: "running…",
  awaiting_approval: "waiting for approval",
  ok: "✓",
  error: "error",
  denied: "denied",
  interrupted: "interrupted",
};
const OPEN = ["running", "awaiting_approval"];
// Fields of an event that are not the step's own.
const ENVELOPE = ["type", "seq", "channel", "turn_id", "arguments_delta"];

// Characters as the server counts them (code points: text_offset is one).
export function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

// A step's fields from the turn, history or an event, merged into what the page has
// (history and events may both bring the same call: apply by call_id).
export function mergeStep(known, fields, textOffset) {
  const step = known || { call_id: fields.call_id, status: "running", rawArguments: "", text_offset: textOffset };
  const merged = { ...step };
  for (const [key, value] of Object.entries(fields)) if (!ENVELOPE.includes(key)) merged[key] = value;
  return merged;
}

// The turn's text cut where its steps go: [text, step, text, …]. Steps at the same
// offset keep their call order (Array.prototype.sort is stable).
export function splitAtSteps(text, steps) {
  const ordered = [...steps].sort((a, b) => (a.text_offset ?? 0) - (b.text_offset ?? 0));
  const pieces = [];
  let index = 0; // in UTF-16 units, as JavaScript strings count
  let counted = 0; // in code points, as text_offset counts
  for (const step of ordered) {
    const start = index;
    while (counted < (step.text_offset ?? 0) && index < text.length) {
      index += text.codePointAt(index) > 0xffff ? 2 : 1;
      counted += 1;
    }
    if (index > start) pieces.push(text.slice(start, index));
    pieces.push(step);
  }
  if (index < text.length) pieces.push(text.slice(index));
  return pieces;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// The arguments as sent: pretty JSON once complete, the raw text while it streams.
function argumentsText(step) {
  const args = step.arguments;
  if (args && typeof args === "object") {
    const keys = Object.keys(args);
    if (keys.length === 1 && keys[0] === "_raw") return String(args._raw); // not a JSON object
    return JSON.stringify(args, null, 2);
  }
  return step.rawArguments || "";
}

// The arguments on one line, cut short, for the folded card.
function brief(step) {
  const args = step.arguments && typeof step.arguments === "object" ? JSON.stringify(step.arguments) : step.rawArguments || "";
  if (args === "{}") return "";
  return args.length > 80 ? `${args.slice(0, 79)}…` : args;
}

// One card: a wrapper (kept across repaints, so an unfolded card stays unfolded while
// the reply streams) around <details> and, for who may decide, the approval buttons.
// `ctx`: {turnId, me, mayDecide, decide(callId, approve) -> bool, repaint()}.
export class StepCard {
  constructor() {
    this.element = el("div", "step");
    this.details = el("details", "step-card");
    this.approval = el("div", "step-approval");
    this.element.append(this.details, this.approval);
    this.signature = null;
    this.revealed = null; // {content} or {error}: a redacted result fetched by its owner
    this.pending = false; // a decision sent, not yet answered by an event
    this.openedForDecision = false;
  }

  paint(step, ctx) {
    const signature = JSON.stringify([step, this.revealed, this.pending, ctx.mayDecide, ctx.me]);
    if (signature === this.signature) return this.element;
    this.signature = signature;
    const waiting = step.status === "awaiting_approval";
    if (!waiting) this.pending = false;
    this.element.dataset.callId = step.call_id;
    this.element.dataset.status = step.status || "running";
    const summary = el("summary");
    summary.append(
      el("span", "step-name", step.name || "tool"),
      el("span", "step-brief", brief(step)),
      el("span", "step-state", STATES[step.status] || step.status || ""),
      el("span", "step-time", duration(step.duration_ms)),
    );
    this.details.replaceChildren(summary, el("h5", null, "arguments"), el("pre", "step-arguments", argumentsText(step)));
    if (!OPEN.includes(step.status)) this.details.append(...this.result(step, ctx));
    if (step.approved_by) {
      const verb = step.status === "denied" ? "denied" : "approved";
      this.details.append(el("p", "step-note step-approved", `${verb} by ${step.approved_by}`));
    } else if (step.status === "denied") {
      this.details.append(el("p", "step-note step-approved", "not approved in time"));
    }
    this.paintApproval(step, ctx, waiting && ctx.mayDecide);
    return this.element;
  }

  result(step, ctx) {
    const parts = [el("h5", null, "result")];
    if (!step.redacted) {
      parts.push(el("pre", "step-result", step.content ?? ""));
    } else {
      const owner = step.redacted.owner;
      const hidden = el("p", "step-note step-redacted", `result hidden: ${owner}'s personal data`);
      parts.push(hidden);
      if (this.revealed && "content" in this.revealed) {
        parts.push(el("pre", "step-result step-revealed", this.revealed.content));
        hidden.textContent = "your personal data: only you can see this result";
      } else if (owner && owner === ctx.me) {
        const show = el("button", "step-show", "show");
        show.type = "button";
        show.addEventListener("click", () => this.reveal(step, ctx, show));
        hidden.append(" ", show);
        if (this.revealed) parts.push(el("p", "step-note step-error", this.revealed.error));
      }
    }
    if (step.truncated) parts.push(el("p", "step-note step-truncated", "The result was cut at the server's limit; the model got this much."));
    return parts;
  }

  async reveal(step, ctx, button) {
    button.disabled = true;
    const path = `/api/turns/${encodeURIComponent(ctx.turnId)}/steps/${encodeURIComponent(step.call_id)}`;
    const answer = await api(path);
    this.revealed = answer.ok ? { content: String(answer.body.content ?? "") } : { error: problem(answer, "The result could not be loaded.") };
    ctx.repaint();
  }

  paintApproval(step, ctx, show) {
    this.approval.hidden = !show;
    if (!show) return this.approval.replaceChildren();
    if (!this.openedForDecision) {
      // Who decides should see what they are letting run.
      this.details.open = true;
      this.openedForDecision = true;
    }
    const button = (label, approve) => {
      const node = el("button", approve ? "approve-tool primary" : "deny-tool", label);
      node.type = "button";
      node.disabled = this.pending;
      node.addEventListener("click", () => {
        if (!ctx.decide(step.call_id, approve)) return;
        this.pending = true;
        ctx.repaint();
      });
      return node;
    };
    const question = el("span", "step-question", this.pending ? "sent…" : `Let ${step.name || "the tool"} run with these arguments?`);
    this.approval.replaceChildren(question, button("Approve", true), button("Deny", false));
  }
}
