// Older turns of a session, page by page (GET /api/sessions/{id}/turns?before=), loaded
// when the top of the transcript comes into view, or by its button. The page keeps its
// place: what was on screen stays there while older turns appear above it.
import { api, problem } from "/static/js/api.js";
import { el } from "/static/js/turns.js";

const PAGE = 50;

export class EarlierTurns {
  // transcript: a Transcript; notify(text, kind)
  constructor(transcript, notify) {
    this.transcript = transcript;
    this.notify = notify;
    this.session = null;
    this.loading = false;
    this.marker = null;
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.load();
    });
  }

  // A fresh transcript: older turns exist (hasMore) or not.
  reset(session, hasMore) {
    this.session = session;
    this.observer.disconnect();
    this.marker?.remove();
    this.marker = null;
    if (!hasMore) return;
    this.marker = el("li", "more");
    const button = el("button", "load-earlier", "Load earlier turns");
    button.type = "button";
    button.addEventListener("click", () => this.load());
    this.marker.append(button);
    this.transcript.list.prepend(this.marker);
    this.observer.observe(this.marker);
  }

  async load() {
    if (this.loading || !this.marker) return;
    const session = this.session;
    const before = this.transcript.oldestId();
    this.loading = true;
    this.marker.classList.add("loading");
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (before !== null) query.set("before", String(before));
    const answer = await api(`/api/sessions/${encodeURIComponent(session)}/turns?${query}`);
    this.loading = false;
    this.marker?.classList.remove("loading");
    if (session !== this.session || !this.marker) return; // a new transcript meanwhile
    if (!answer.ok) {
      this.notify(problem(answer, "Earlier turns could not be loaded."), "error");
      return;
    }
    const turns = answer.body.turns || [];
    const scroller = document.scrollingElement;
    const height = scroller.scrollHeight;
    for (const turn of turns) {
      // REST pages carry the substrate: no need to ask for it again.
      const view = this.transcript.set(turn);
      if (turn.role === "bot") view.detail = turn;
    }
    for (const checkpoint of answer.body.checkpoints || []) this.transcript.setCheckpoint(checkpoint);
    scroller.scrollTop += scroller.scrollHeight - height;
    if (turns.length < PAGE) {
      this.reset(session, false);
      return;
    }
    // Still in view (short turns): the observer will not fire again by itself.
    const top = this.marker.getBoundingClientRect().bottom;
    if (top >= 0 && top <= window.innerHeight) this.load();
  }
}
