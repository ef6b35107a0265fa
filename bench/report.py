"""The benchmark's reports: the tables printed and written to RESULTS.md, and
results.json. Every section is optional, since `--only` runs some scenarios alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A measure with a goal: what, the figure, the goal, and whether it was met (None when
# the run cannot tell, e.g. a ceiling above every rate tried).
Goal = tuple[str, str, str, bool | None]

# Issue 13's bound for "grows with history": the largest size's figure at most this
# many times the smallest's, while history grows 100 to 10,000 times.
GROWTH_LIMIT = 2.0
FRAME_LIMIT = 64 * 1024  # MAX_FRAME_BYTES by default
REPLAY_LIMIT = (500, 256 * 1024)  # events, bytes (chat/realtime/history.py)


def verdict(met: bool | None) -> str:
    return "unknown" if met is None else "met" if met else "missed"


def table(head: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- Colloquy beside the reference -------------------------------------------------------


def memory_rows(results: dict[str, Any]) -> list[list[Any]]:
    if "memory_per_connection_kib" not in results:
        return []
    ours, ref = results["memory_per_connection_kib"], results["reference_memory_per_connection_kib"]
    return [["memory per idle WebSocket (KiB)", ours, ref, f"{ours / max(ref, 0.1):.2f}×"]]


def ttft_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    labels = {"ttft_overhead_ms": "WebSocket", "ttft_sse_overhead_ms": "SSE (`POST …/messages`)"}
    for key, label in labels.items():
        if key in results:
            got = results[key]
            rows.append(
                [
                    f"time to first token overhead, {label}, p50 / p99 (ms)",
                    f"{got['p50']} / {got['p99']}",
                    "—",
                    "—",
                ]
            )
    if "ttft_long_session" in results:
        long = results["ttft_long_session"]
        for name in ("fresh", "long"):
            got = long[name]
            rows.append(
                [
                    f"time to first token overhead, {name} session ({long['context_window']}-token window), "
                    "p50 / p99 (ms)",
                    f"{got['p50']} / {got['p99']}",
                    "—",
                    "—",
                ]
            )
    return rows


def fanout_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    if "fanout" in results:
        ours, ref = results["cpu_s_per_1000_deliveries"], results["reference_cpu_s_per_1000_deliveries"]
        rows.append(["CPU s per 1,000 deliveries", ours, ref, f"{ours / (ref or float('nan')):.2f}×"])
        for row in results["fanout"]:
            rows.append(
                [
                    f"fan-out {row['watchers']} watchers p50 / p99 / max (ms), lost",
                    f"{row['p50_ms']} / {row['p99_ms']} / {row['max_ms']}, {row['lost']}",
                    f"p99 {row['reference_p99_ms']}",
                    f"{row['p99_ms'] / max(row['reference_p99_ms'], 0.01):.2f}× p99",
                ]
            )
    if "concurrent_channels" in results:
        cc = results["concurrent_channels"]
        rows.append(
            [
                f"{cc['channels']} channels × {cc['watchers_each']} watchers p99 (ms), lost",
                f"{cc['p99_ms']}, {cc['lost']}",
                "—",
                "—",
            ]
        )
    return rows


def most(got: dict[str, Any]) -> str:
    """A capacity in watchers: ≥ when no trial failed (it lies above the most tried),
    < when the first already did."""
    if got["first_failed"] is None:
        return f"≥ {got['watchers']:,}"
    return f"{got['watchers']:,}" if got["watchers"] else f"< {got['first_failed']:,}"


def capacity_label(tp: dict[str, Any]) -> str:
    return f"{tp['channels']} channel(s) at {tp['rate']:g} tok/s each, p99 ≤ {tp['p99_ms']:g} ms, 0 lost"


def throughput_rows(results: dict[str, Any]) -> list[list[Any]]:
    if "throughput" not in results:
        return []
    tp = results["throughput"]
    ref = tp["reference"]
    return [
        [
            f"most watchers, {capacity_label(tp)}, {processes} process(es)",
            most(got),
            most(ref),
            f"{got['watchers'] / max(ref['watchers'], 1):.2f}×",
        ]
        for processes, got in tp["processes"].items()
    ]


def capacity_table(tp: dict[str, Any]) -> str:
    """Delivery capacity: each target's most watchers, its deliveries/s, and the trial
    that set it and the last that failed (Markdown)."""

    def trial(got: dict[str, Any] | None) -> str:
        if got is None:
            return "—"
        return (
            f"{got['watchers']:,}: p99 {got['p99_ms']} ms (client lag p99 {got['client_lag_p99_ms']} ms), "
            f"lost {got['lost']}; CPU: servers {got['server_cpu_pct']} %, client {got['client_cpu_pct']} %, "
            f"machine {got['machine_cpu_pct']} %"
        )

    def failed(got: dict[str, Any]) -> dict[str, Any] | None:
        return next((t for t in reversed(got["trials"]) if t["watchers"] == got["first_failed"]), None)

    def per_cpu(got: dict[str, Any]) -> str:
        """Deliveries/s over the servers' CPU (in cores) at the trial held."""
        best = got["best"]
        if not best or not best["server_cpu_pct"]:
            return "—"
        return f"{got['deliveries_per_s'] / best['server_cpu_pct'] * 100:,.0f}"

    def row(label: str, got: dict[str, Any]) -> list[str]:
        capacity = [most(got), f"{got['deliveries_per_s']:,}", per_cpu(got)]
        return [label, *capacity, trial(got["best"]), trial(failed(got))]

    rows = [
        row("Colloquy, 1 process", tp["processes"]["1"]),
        row("Colloquy, 2 processes", tp["processes"]["2"]),
        row("reference (1 process)", tp["reference"]),
    ]
    head = [
        "",
        "most watchers",
        "token deliveries/s",
        "per server CPU second",
        "trial held (CPU in % of one core)",
        "trial failed",
    ]
    return (
        f"{capacity_label(tp)}. Each trial streams {tp['seconds']:g} s of tokens to every channel; "
        f"watchers are spread round-robin over the channels and processes, doubled from "
        f"{tp['start']:,} (at most {tp['cap']:,}) until a size fails (twice in a row if its p99 "
        f"was under {tp['retry_below']:g}× the bound), then the "
        f"step halved {tp['refine']} time(s): each capacity is known to {tp['step']}×. One "
        f"watcher in {tp['timed_every']} reads at once and is timed; the others read every "
        f"~{tp['lazy_s']:g} s (cheaper for the client) and count losses. The client shares the "
        f"machine's {tp['cores']} cores with the servers; its event loop's lag is its own share "
        f"of the latency. The scenario took {tp['duration_s']:g} s."
        "\n\n" + table(head, rows)
    )


def results_table(results: dict[str, Any]) -> str:
    """Colloquy beside the reference, one measure a row (Markdown)."""
    rows = fanout_rows(results) + memory_rows(results) + ttft_rows(results) + throughput_rows(results)
    return table(["measure", "Colloquy", "reference", "ratio"], rows) if rows else ""


def matrix_table(results: dict[str, Any]) -> str:
    """The server × layer matrix (Markdown)."""
    return table(
        ["server", "layer", "CPU µs/delivery", "× reference", "p99 ms", "lost"],
        [
            [
                m["server"],
                m["layer"],
                m["cpu_us_per_delivery"],
                m["ratio_to_reference"],
                m["p99_ms"],
                m["lost"],
            ]
            for m in results["matrix"]
        ],
    )


def rest_table(rest: dict[str, Any]) -> str:
    """Each endpoint on 1 and 2 processes, and the ratio 2 to 1 (Markdown)."""

    def cell(got: dict[str, Any]) -> str:
        return f"{got['rps']} / {got['p50_ms']} / {got['p99_ms']} ({got['client_cpu_pct']} %)"

    one, two = rest["processes"]["1"], rest["processes"]["2"]
    return table(
        [
            f"endpoint ({rest['clients']} clients)",
            "1 process: req/s / p50 / p99 ms (client CPU)",
            "2 processes: req/s / p50 / p99 ms (client CPU)",
            "req/s 2 ÷ 1",
        ],
        [
            [f"`{label}`", cell(one[label]), cell(two[label]), f"{rest['two_to_one'][label]}×"]
            for label in one
        ],
    )


# --- growth ------------------------------------------------------------------------------


def ratio_row(label: str, values: list[Any]) -> list[Any]:
    return [f"**{label}**", *(f"{v}×" if v != "" else "" for v in values)]


def growth_tables(got: dict[str, Any]) -> str:
    """(a) sessions, (b) channel lists, (c) catch-ups, each with its ratio (Markdown)."""
    ratios = got["history_ratios"]
    sessions = table(
        [
            "turns in the session",
            "`history` frame (bytes)",
            "connect → `history` p50 (ms)",
            "`GET /api/channels` p50 (ms)",
        ],
        [
            [f"{r['turns']:,}", r["history_bytes"], r["history_ms_p50"], r["channels_list_ms_p50"]]
            for r in got["history"]
        ]
        + [
            ratio_row(
                "largest ÷ smallest",
                [ratios["history_bytes"], ratios["history_ms_p50"], ratios["channels_list_ms_p50"]],
            )
        ],
    )
    lists = table(
        ["channels the user sees", "`GET /api/channels` p50 (ms)"],
        [[f"{r['visible']:,}", r["ms_p50"]] for r in got["channel_list"]]
        + [ratio_row("largest ÷ smallest", [got["channel_list_ratio"]])],
    )
    replay = table(
        [
            f"`get_history` `since` = seq − N, of {got['replay_events']:,} events",
            "answer",
            "frames",
            "bytes",
            "ms",
        ],
        [[f"{r['events_back']:,}", r["answer"], r["frames"], r["bytes"], r["ms"]] for r in got["replay"]]
        + [
            ratio_row(
                "largest ÷ smallest", ["", "", got["replay_ratios"]["bytes"], got["replay_ratios"]["ms"]]
            )
        ],
    )
    return (
        f"(a) A session's size\n\n{sessions}\n\n(b) Channels visible\n\n{lists}\n\n"
        f"(c) Catching up (asked a second after the connect's `history`)\n\n{replay}"
    )


# --- retrieval (issue 16) --------------------------------------------------------------------

DATABASES = (("sqlite", "SQLite"), ("postgresql", "PostgreSQL + pgvector"))
RANKING_NAMES = (("vector", "by meaning"), ("keyword", "by words"), ("fused", "fused (RRF)"))


def quality_cell(where: dict[str, Any], name: str) -> str:
    got = where[name]
    cell = f"{got['recall@5']:.3f} / {got['mrr']:.3f}"
    if got.get("asked", where["questions"]) < where["questions"]:
        cell += f" (first {got['asked']} questions: time budget)"
    return cell


def retrieval_tables(got: dict[str, Any]) -> str:
    """Quality on the FAQ alone and among distractors, index throughput, latency and
    its growth, per database (Markdown)."""
    present = [(key, label) for key, label in DATABASES if key in got]
    quality_rows = []
    for key, label in present:
        found = got[key]
        for where in [found["faq"], *found["sizes"]]:
            quality_rows.append(
                [label, f"{where['chunks']:,}", where["questions"]]
                + [quality_cell(where, name) for name, _ in RANKING_NAMES]
            )
    quality = table(
        ["database", "chunks", "questions", *(f"{title}: recall@5 / MRR" for _, title in RANKING_NAMES)],
        quality_rows,
    )
    index_rows = []
    for key, label in present:
        found = got[key]
        faq = found["faq"]["index"]
        index_rows.append([label, f"FAQ: {faq['chunks']:,} chunks", faq["seconds"], faq["chunks_per_s"]])
        for where in found["sizes"]:
            grown = where["index"]
            index_rows.append(
                [
                    label,
                    f"+{grown['chunks_added']:,} → {where['chunks']:,}",
                    grown["seconds"],
                    grown["chunks_per_s"],
                ]
            )
    index = table(["database", "indexed", "seconds", "chunks/s"], index_rows)
    latency_rows = []
    for key, label in present:
        for where in got[key]["sizes"]:
            for name, title in RANKING_NAMES:
                ms = where[name]["ms"]
                latency_rows.append(
                    [label, f"{where['chunks']:,}", title, ms["p50"], ms["p99"], where[name]["first_ms"]]
                )
        growth = got[key].get("growth") or {}
        if growth:
            latency_rows.append(
                [
                    f"**{label}**",
                    f"**{growth['chunks']}× the chunks**",
                    "p50 grows",
                    ", ".join(f"{title} {growth[name]}×" for name, title in RANKING_NAMES),
                    "",
                    "",
                ]
            )
    latency = table(
        ["database", "chunks", "ranking", "p50 (ms)", "p99 (ms)", "first query (ms)"], latency_rows
    )
    note = got.get("dataset", {})
    return (
        f"Questions: {note.get('questions', '')} ({note.get('package', '')}); distractors: "
        f"{note.get('distractors', '')}.\n\n(a) Quality (recall@5 / MRR@10)\n\n{quality}\n\n"
        f"(b) Indexing (the engine's task: chunking, embedding, writes)\n\n{index}\n\n"
        f"(c) Query latency (warm; the first query apart)\n\n{latency}"
    )


# --- the tool loop (issue 17) ---------------------------------------------------------------


def tool_rounds_table(got: dict[str, Any]) -> str:
    """Per row: a reply of k tool rounds beside its k + 1 requests made straight to the
    stub; the overhead and what one round adds (bench/tool_rounds.py)."""

    def pair(figures: dict[str, float]) -> str:
        return f"{figures['p50']} / {figures['p99']}"

    def ratio(figures: dict[str, float] | None) -> str:
        return f"{figures['p50']}× / {figures['p99']}×" if figures else "—"

    rows = []
    for row in got["rows"]:
        per_round = row.get("per_round_ms")
        events = row.get("events_per_round") or {}
        rows.append(
            [
                row["rounds"],
                pair(row["reply_ms"]),
                pair(row["direct_ms"]),
                pair(row["tool_ms"]),
                pair(row["overhead_ms"]),
                pair(per_round) if per_round else "—",
                pair(row["between_requests_ms"]) if per_round else "—",
                ratio(row.get("per_round_to_plain")),
                ", ".join(f"{kind} {count:g}" for kind, count in events.items()) or "—",
            ]
        )
    main = table(
        [
            "tool rounds",
            "reply p50 / p99 (ms)",
            "its requests, direct",
            "tool time",
            "overhead",
            "per round",
            "answer → next request",
            "per round ÷ plain reply's overhead",
            "events per round",
        ],
        rows,
    )
    writes, requests, none = got["writes"], got["requests"], got["no_tools"]
    return (
        f"{got['runs']} rounds; tool `{got['tool']}`, model `{got['model']}`. Overhead = reply − "
        "direct − tool time; per round = (overhead(k) − overhead(0)) / k, paired in each round. "
        "Answer → next request: the stub's clock, from a call's last byte to the next "
        "request's, per round (the loop's own time, tool included).\n\n"
        f"{main}\n\nA channel without tools: reply {pair(none['reply_ms'])} ms, overhead "
        f"{pair(none['overhead_ms'])} ms.\n\nAlone in the benchmark's process, p50 / p99 (ms): one "
        f"UPDATE of the turn's steps {pair(writes['save_steps_ms'])} ({writes['saves_per_round']} a "
        f"round with one call); one event's publish {pair(writes['publish_ms'])}; one model request "
        f"through the provider's client {pair(requests['provider_ms'])} against "
        f"{pair(requests['bare_socket_ms'])} over a bare socket."
    )


# --- the goals -----------------------------------------------------------------------------


def memory_goals(results: dict[str, Any]) -> list[Goal]:
    if "memory_per_connection_kib" not in results:
        return []
    kib = results["memory_per_connection_kib"]
    return [("memory per idle WebSocket", f"{kib} KiB", "≤ 20 KiB", kib <= 20)]


def fanout_goals(results: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    if "fanout" in results:
        ref = results["reference_cpu_s_per_1000_deliveries"]
        times = results["cpu_s_per_1000_deliveries"] / (ref or float("nan"))
        # No verdict when the reference's CPU was under the clock's tick (smoke runs).
        met = times <= 1.5 if ref else None
        goals.append(("fan-out CPU per delivery, × reference", f"{times:.2f}×", "≤ 1.5×", met))
        big = results["fanout"][-1]
        label = f"fan-out to {big['watchers']:,} watchers at 50 tok/s (goal set for 1,000): p99, lost"
        goals.append(lossless(label, big, 50))
    if "concurrent_channels" in results:
        cc = results["concurrent_channels"]
        label = f"{cc['channels']} channels × {cc['watchers_each']} watchers: p99, lost"
        goals.append(lossless(label, cc, 100))
    if "throughput" in results:
        goals.append(throughput_goal(results["throughput"]))
    return goals


def lossless(label: str, got: dict[str, Any], p99_ms: float) -> Goal:
    """A fan-out's goal: its p99 at most ``p99_ms``, and no token lost."""
    met = got["p99_ms"] <= p99_ms and got["lost"] == 0
    return (label, f"{got['p99_ms']} ms, {got['lost']}", f"≤ {p99_ms:g} ms, 0", met)


def throughput_goal(tp: dict[str, Any]) -> Goal:
    """The most watchers held on 2 processes over 1 (same token rate, so the same ratio
    of deliveries/s). When both capacities were found, each lies between the most held
    and the least failed, and so does the ratio: met or missed when that whole range
    is, unknown when it straddles the goal. A lower bound when only 1 process's was
    found; unknown when 1 process held every size tried. The client's CPU share is
    shown, since it takes from the same cores."""
    one, two = tp["processes"]["1"], tp["processes"]["2"]
    times, bound = tp["ratio_2_to_1"], tp["ratio_2_to_1_bound"]
    detail = f"{most(two)} ÷ {most(one)} watchers"
    if two["best"]:
        best = two["best"]
        detail += (
            f"; beside 2 processes the benchmark client took {best['client_cpu_pct']} % of a core "
            f"(servers {best['server_cpu_pct']} %, whole machine {best['machine_cpu_pct']} % "
            f"of {tp['cores'] * 100} %)"
        )
    met: bool | None = None
    if bound == "unknown":
        measured = f"unknown ({detail})"
    elif bound == "at least":
        measured, met = f"≥ {times}× ({detail})", True if times >= 1.7 else None
    else:
        low = two["watchers"] / one["first_failed"]
        high = two["first_failed"] / one["watchers"]
        measured = f"{times}×, between {low:.2f}× and {high:.2f}× ({detail})"
        met = True if low >= 1.7 else False if high < 1.7 else None
    label = f"fan-out delivery capacity ({capacity_label(tp)}), 2 processes ÷ 1"
    return (label, measured, "≥ 1.7×", met)


def ttft_goals(results: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    if "ttft_overhead_ms" in results:
        got = results["ttft_overhead_ms"]
        goals.append(
            (
                "time to first token overhead (WebSocket), p50 / p99",
                f"{got['p50']} / {got['p99']} ms",
                "≤ 2 / ≤ 10 ms",
                got["p50"] <= 2 and got["p99"] <= 10,
            )
        )
    if "ttft_sse_overhead_ms" in results:
        sse, socket = results["ttft_sse_overhead_ms"], results["ttft_overhead_ms"]
        goals.append(
            (
                "time to first token over SSE, p50 less the WebSocket's",
                f"{sse['p50']} − {socket['p50']} = {sse['minus_websocket_p50']} ms",
                "≤ 1 ms",
                sse["minus_websocket_p50"] <= 1,
            )
        )
    if "ttft_credits" in results:
        got = results["ttft_credits"]
        goals.append(
            (
                "time to first token, credits on − off (the hold), p50 / p99",
                f"{got['difference_p50_ms']} / {got['difference_p99_ms']} ms",
                "p50 < 1 ms",
                got["difference_p50_ms"] < 1,
            )
        )
    if "ttft_long_session" in results:
        long = results["ttft_long_session"]
        for q in ("p50", "p99"):
            goals.append(
                (
                    f"time to first token overhead {q}, session of {long['turns']} turns ÷ fresh",
                    f"{long['long'][q]} ÷ {long['fresh'][q]} ms = {long[f'ratio_{q}']}×",
                    "≤ 1.10×",
                    long[f"ratio_{q}"] <= 1.10,
                )
            )
    return goals


def rest_goals(results: dict[str, Any]) -> list[Goal]:
    if "rest" not in results:
        return []
    rest, goals = results["rest"], []
    for processes, got in rest["processes"].items():
        for api, bare in rest["api_and_bare"].items():
            times = rest["api_to_bare"][processes][api]
            goals.append(
                (
                    f"REST `{api}` ÷ `{bare}`, {processes} process(es): req/s",
                    f"{got[api]['rps']} ÷ {got[bare]['rps']} = {times}×",
                    "≥ 0.5×",
                    times >= 0.5,
                )
            )
            goals.append(
                (
                    f"REST `{api}`, {processes} process(es): p99",
                    f"{got[api]['p99_ms']} ms",
                    "≤ 100 ms",
                    got[api]["p99_ms"] <= 100,
                )
            )
    for api in rest["api_and_bare"]:
        times = rest["two_to_one"][api]
        goals.append((f"REST `{api}`: req/s, 2 processes ÷ 1", f"{times}×", "≥ 1.7×", times >= 1.7))
    return goals


def growth_goals(results: dict[str, Any]) -> list[Goal]:
    if "growth" not in results:
        return []
    got = results["growth"]
    history, lists, ratios = got["history"], got["channel_list"], got["history_ratios"]
    turns = f"{history[0]['turns']:,} → {history[-1]['turns']:,} turns"
    limit = f"≤ {GROWTH_LIMIT:g}×"
    goals: list[Goal] = [
        (
            f"`history` frame, {turns}",
            f"{history[0]['history_bytes']:,} → {history[-1]['history_bytes']:,} bytes",
            f"≤ {FRAME_LIMIT:,} bytes",
            max(r["history_bytes"] for r in history) <= FRAME_LIMIT,
        ),
        (
            f"connect → `history`, {turns}",
            f"{ratios['history_ms_p50']}×",
            limit,
            ratios["history_ms_p50"] <= GROWTH_LIMIT,
        ),
        (
            f"`GET /api/channels` with one channel, {turns}",
            f"{ratios['channels_list_ms_p50']}×",
            limit,
            ratios["channels_list_ms_p50"] <= GROWTH_LIMIT,
        ),
        (
            f"`GET /api/channels`, {lists[0]['visible']:,} → {lists[-1]['visible']:,} channels visible",
            f"{got['channel_list_ratio']}×",
            limit,
            got["channel_list_ratio"] <= GROWTH_LIMIT,
        ),
    ]
    for row in got["replay"]:
        bounded = row["bytes"] <= REPLAY_LIMIT[1] and (
            row["frames"] <= REPLAY_LIMIT[0] or row["answer"] == "history"
        )
        goals.append(
            (
                f"catch-up {row['events_back']:,} events back",
                f"{row['answer']}: {row['frames']} frame(s), {row['bytes']:,} bytes, {row['ms']} ms",
                "≤ 500 events and ≤ 256 KiB, else one `history`",
                bounded,
            )
        )
    return goals


def files_goals(results: dict[str, Any]) -> list[Goal]:
    """Issue 15: the pipeline adds little to the work itself (measured beside it)."""
    if "files" not in results:
        return []
    upload, speech = results["files"]["upload"], results["files"]["transcription"]
    goals: list[Goal] = [
        (
            f"{upload['pdf_pages']}-page PDF, upload → `ready` event (p50 / p99)",
            f"{upload['upload_to_ready_ms']['p50']} / {upload['upload_to_ready_ms']['p99']} ms; "
            f"extraction alone {upload['extraction_alone_ms']['p50']} ms; "
            f"+{upload['added_ms_p50']} ms",
            f"≤ extraction + {FILES_ADDED_MS} ms (p50)",
            upload["added_ms_p50"] <= FILES_ADDED_MS,
        )
    ]
    if "skipped" in speech:
        goals.append(("transcription real-time factor", speech["skipped"], "", None))
    else:
        goals.append(
            (
                f"transcription real-time factor, {speech['audio_seconds']} s of speech (p50 / p99)",
                f"API {speech['rtf_api']['p50']} / {speech['rtf_api']['p99']}; "
                f"alone {speech['rtf_alone']['p50']}; ratio {speech['ratio_p50']}×",
                f"API < 1 and ≤ {TRANSCRIBE_RATIO:g}× alone",
                speech["rtf_api"]["p50"] < 1 and speech["ratio_p50"] <= TRANSCRIBE_RATIO,
            )
        )
    return goals


# Issue 15's goals: the request, storage, queue, worker and events add at most this to a
# document's extraction; an API transcription costs at most this much more than decoding
# and recognising in one process.
FILES_ADDED_MS = 100
TRANSCRIBE_RATIO = 1.3


def goal_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every measure of this run that has a goal (README, issue 13), with its verdict."""
    builders = (memory_goals, fanout_goals, ttft_goals, rest_goals, growth_goals, files_goals)
    return [
        {"measure": measure, "measured": measured, "goal": goal, "verdict": verdict(met)}
        for build in builders
        for measure, measured, goal, met in build(results)
    ]


def goals_table(goals: list[dict[str, str]]) -> str:
    head = ["measure", "measured", "goal", "verdict"]
    return table(head, [[goal[key] for key in head] for goal in goals])


# --- the files -----------------------------------------------------------------------------


def sections(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's sections, (title, Markdown), for the scenarios that ran."""
    found = []
    if "matrix" in results:
        found.append(("Server and layer", matrix_table(results)))
    if results_table(results):
        found.append(("Results", results_table(results)))
    if "throughput" in results:
        found.append(("Fan-out delivery capacity", capacity_table(results["throughput"])))
    if "rest" in results:
        found.append(("REST", rest_table(results["rest"])))
    if "growth" in results:
        found.append(("Growth with history", growth_tables(results["growth"])))
    if "retrieval" in results:
        found.append(("Knowledge-base retrieval", retrieval_tables(results["retrieval"])))
    if "tool_rounds" in results:
        found.append(("Tool loop", tool_rounds_table(results["tool_rounds"])))
    if results.get("goals"):
        found.append(("Goals", goals_table(results["goals"])))
    return found


def write_reports(results: dict[str, Any], out: Path) -> str:
    """Adds the goals to ``results``, writes results.json and RESULTS.md to ``out``, and
    returns the sections to print."""
    results["goals"] = goal_rows(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    m, v = results["machine"], results["versions"]
    title = "# Benchmark results" + (" (smoke run)" if results["smoke"] else "")
    if results.get("partial"):
        title += f" — only {', '.join(results['scenarios'])}"
    head = (
        f"{title}\n\nMachine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}.\n"
        f"Versions: {', '.join(f'{k} {val}' for k, val in v.items())}.\n"
    )
    if "choice" in results:
        head += (
            f"Measured: the defaults, **{results['choice']['server']}** with the "
            f"**{results['choice']['layer']}** channel layer (best in this run's matrix: "
            f"{results['best_this_run']['server']} with {results['best_this_run']['layer']}).\n"
        )
    body = "\n\n".join(f"## {name}\n\n{text}" for name, text in sections(results))
    (out / "RESULTS.md").write_text(f"{head}\n{body}\n")
    return "\n\n".join(f"{name}\n\n{text}" for name, text in sections(results))
