// The account page's Credits section (docs/pages.md, "Account"): the balance and a chart
// of the credits spent per day over the last 30 days (UTC), both drawn here from
// GET /api/me/usage (no library, no CDN). Model and provider names are the admins' text:
// everything is set as text or as SVG attributes, never as markup.
//
// Live: the balance moves when a reply is paid for or an admin grants credits, and the
// server tells no one, so the page asks again every 10 s while it is visible (one cheap
// request: two small queries) and at once when the tab is shown again or the window
// regains focus; a hidden tab does not ask at all. When credits are off on the site the
// section says so and the page stops asking.
import { api, problem } from "/static/js/api.js";

const REFRESH_MS = 10_000;
const DAYS = 30;
const SVG = "http://www.w3.org/2000/svg";
// Distinct in light and dark themes; models past the eighth reuse them (the legend and
// each bar's title still tell them apart).
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];
const CHART = { dayWidth: 20, gap: 4, height: 160, top: 18, bottom: 22, left: 6, right: 6 };

const $ = (selector) => document.querySelector(selector);

function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// "12.500000" → "12.5"; "3.000000" → "3". The API's strings are exact: shown as they are.
export function shortCredits(text) {
  const value = String(text);
  return value.includes(".") ? value.replace(/0+$/, "").replace(/\.$/, "") : value;
}

// The last `count` days (UTC) as "YYYY-MM-DD", oldest first, today last.
function utcDays(count, now = new Date()) {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return Array.from({ length: count }, (_, i) =>
    new Date(today - (count - 1 - i) * 86_400_000).toISOString().slice(0, 10),
  );
}

function seriesName(row) {
  const model = row.model || "default model";
  return row.provider ? `${row.provider} · ${model}` : model;
}

function drawChart(days) {
  const dates = utcDays(DAYS);
  const names = [...new Set(days.map(seriesName))].sort();
  const colour = new Map(names.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
  const byDate = new Map(dates.map((date) => [date, []]));
  for (const row of days) if (byDate.has(row.date)) byDate.get(row.date).push(row);
  const total = (rows) => rows.reduce((sum, row) => sum + Math.max(Number(row.credits) || 0, 0), 0);
  const highest = Math.max(0, ...[...byDate.values()].map(total));

  const c = CHART;
  const width = c.left + dates.length * c.dayWidth + c.right;
  const height = c.top + c.height + c.bottom;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "credits-svg-title",
    "aria-describedby": "credits-svg-desc",
  });
  const spentTotal = [...byDate.values()].reduce((sum, rows) => sum + total(rows), 0);
  chart.append(
    svg("title", { id: "credits-svg-title" }, `Credits spent per day, ${dates[0]} to ${dates[dates.length - 1]} (UTC)`),
    svg(
      "desc",
      { id: "credits-svg-desc" },
      `${+spentTotal.toFixed(6)} credits in all; at most ${+highest.toFixed(6)} on one day. The table below lists each day and model.`,
    ),
  );
  const baseline = c.top + c.height;
  chart.append(svg("line", { class: "axis", x1: c.left, x2: width - c.right, y1: baseline, y2: baseline }));
  chart.append(svg("text", { x: c.left, y: c.top - 6 }, `${+highest.toFixed(6)} credits`));
  chart.append(svg("text", { x: c.left, y: height - 6 }, dates[0]));
  chart.append(svg("text", { x: width - c.right, y: height - 6, "text-anchor": "end" }, dates[dates.length - 1]));

  dates.forEach((date, index) => {
    let y = baseline;
    const x = c.left + index * c.dayWidth + c.gap / 2;
    for (const row of byDate.get(date)) {
      const credits = Math.max(Number(row.credits) || 0, 0);
      if (!credits || !highest) continue;
      const barHeight = Math.max((credits / highest) * c.height, 1);
      y -= barHeight;
      const bar = svg("rect", {
        class: "bar",
        x,
        y: y.toFixed(2),
        width: c.dayWidth - c.gap,
        height: barHeight.toFixed(2),
        fill: colour.get(seriesName(row)),
        "data-date": date,
        "data-model": row.model,
        "data-provider": row.provider,
        "data-credits": row.credits,
      });
      bar.append(svg("title", {}, `${date} · ${seriesName(row)}: ${shortCredits(row.credits)} credits`));
      chart.append(bar);
    }
  });
  $("#credits-chart").replaceChildren(chart);

  $("#credits-legend").replaceChildren(
    ...names.map((name) => {
      const item = el("li");
      const swatch = svg("svg", { width: 12, height: 12, "aria-hidden": "true" });
      swatch.append(svg("rect", { width: 12, height: 12, fill: colour.get(name) }));
      item.append(swatch, document.createTextNode(name));
      return item;
    }),
  );
  return highest > 0;
}

function fillTable(days) {
  $("#credits-rows").replaceChildren(
    ...days.map((row) => {
      const line = el("tr");
      line.dataset.date = row.date;
      line.append(
        el("td", row.date),
        el("td", seriesName(row)),
        el("td", row.input_tokens),
        el("td", row.output_tokens),
        el("td", shortCredits(row.credits)),
      );
      return line;
    }),
  );
}

function show(state) {
  $("#credits").dataset.state = state;
  $("#credits-loading").hidden = true;
  $("#credits-off").hidden = state !== "off";
  $("#credits-on").hidden = state !== "on";
}

function render(usage) {
  $("#credits-error").hidden = true;
  if (!usage.enabled) return show("off");
  const balance = usage.balance || { available: "0", held: "0" };
  $("#credits-available").textContent = shortCredits(balance.available);
  $("#credits-held").textContent = shortCredits(balance.held);
  const days = usage.days || [];
  const drawn = drawChart(days);
  fillTable(days);
  $("#credits-figure").hidden = !drawn;
  $("#credits-none").hidden = drawn;
  show("on");
}

let timer = null;
let running = null;
let enabled = true;

function schedule() {
  clearTimeout(timer);
  timer = null;
  if (enabled && document.visibilityState === "visible") timer = setTimeout(refresh, REFRESH_MS);
}

async function refresh() {
  if (running) return running; // a focus during a request: that request's answer will do
  running = (async () => {
    const answer = await api(`/api/me/usage?days=${DAYS}`);
    if (answer.ok) {
      render(answer.body);
      enabled = Boolean(answer.body.enabled);
    } else {
      $("#credits-loading").hidden = true;
      const notice = $("#credits-error");
      notice.textContent = problem(answer, "Your credits could not be read.");
      notice.hidden = false;
    }
  })();
  try {
    await running;
  } finally {
    running = null;
    schedule();
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refresh();
  else schedule(); // stops the timer
});
window.addEventListener("focus", () => {
  if (enabled) refresh();
});
refresh();
