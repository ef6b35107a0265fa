"""Framing → prompt, exactly as PROTOCOL.md defines it."""

from typing import Any

from chat.generation.prompt import PromptTurn, build_prompt, estimate_tokens, stop_sequences

INTERVIEW: dict[str, Any] = {
    "name": "Interview",
    "preamble": "The following is a transcript.\n\n",
    "user_prefix": "Q: ",
    "bot_prefix": "A: ",
    "agent_prefix": "Narrator: ",
    "turn_suffix": "\n\n",
    "stop": ["\nQ:"],
    "quote_user": False,
}
TURNS = [
    PromptTurn("user", "Who are you?"),
    PromptTurn("bot", "A model."),
    PromptTurn("agent", "The lights dim."),
    PromptTurn("user", "And now?"),
]


def test_the_completion_prompt_is_preamble_turns_and_bot_prefix():
    built = build_prompt(
        mode="completion", framing=INTERVIEW, turns=TURNS, context_window=4096, max_tokens=64
    )
    assert built.prompt == (
        "The following is a transcript.\n\n"
        "Q: Who are you?\n\n"
        "A: A model.\n\n"
        "Narrator: The lights dim.\n\n"
        "Q: And now?\n\n"
        "A: "
    )
    assert built.dropped_turns == 0


def test_quote_user_wraps_only_user_text_in_double_quotes():
    framing = {**INTERVIEW, "quote_user": True}
    built = build_prompt(mode="completion", framing=framing, turns=TURNS, context_window=4096, max_tokens=64)
    assert 'Q: "Who are you?"\n\n' in built.prompt
    assert "A: A model.\n\n" in built.prompt
    assert "Narrator: The lights dim." in built.prompt


def test_the_reply_is_cut_at_stops_and_at_the_next_user_turn():
    assert stop_sequences(INTERVIEW, "completion") == ["\nQ:", "\n\nQ: "]
    assert stop_sequences(INTERVIEW, "chat") == ["\nQ:"]


def test_chat_mode_makes_a_system_message_and_alternating_roles():
    built = build_prompt(mode="chat", framing=INTERVIEW, turns=TURNS, context_window=4096, max_tokens=64)
    assert built.system == "The following is a transcript."
    assert built.messages == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "A model."},
        {"role": "user", "content": "The lights dim.\n\nAnd now?"},
    ]


def test_the_oldest_turns_drop_first_and_the_preamble_stays():
    many = [PromptTurn("user" if i % 2 == 0 else "bot", f"message number {i} " + "x" * 80) for i in range(40)]
    built = build_prompt(mode="completion", framing=INTERVIEW, turns=many, context_window=600, max_tokens=100)
    assert built.dropped_turns > 0
    assert built.prompt.startswith(INTERVIEW["preamble"])
    assert "message number 39" in built.prompt
    assert "message number 0 " not in built.prompt
    assert estimate_tokens(built.prompt) <= 600 - 100
    kept = [t for t in many[built.dropped_turns :]]
    assert all(t.text in built.prompt for t in kept)


def test_the_newest_turn_is_kept_even_when_nothing_fits():
    huge = [PromptTurn("user", "y" * 10_000)]
    built = build_prompt(mode="chat", framing=INTERVIEW, turns=huge, context_window=100, max_tokens=50)
    assert built.dropped_turns == 0
    assert built.messages == [{"role": "user", "content": "y" * 10_000}]
