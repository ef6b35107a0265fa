"""The OpenAI-compatible provider through the engine, against a real HTTP server."""

import pytest

from chat.models import Turn
from chat.services import post_message
from tests.conftest import add_provider, channel_events, use_provider, wait_for_done

pytestmark = pytest.mark.django_db(transaction=True)

INTERVIEW = {
    "preamble": "A transcript.\n\n",
    "user_prefix": "Q: ",
    "bot_prefix": "A:",
    "turn_suffix": "\n",
    "stop": ["\nQ:"],
}


def bot_turn(channel):
    return Turn.objects.filter(session__channel=channel, role="bot").order_by("-id").first()


def test_completion_mode_sends_the_exact_framed_prompt(channel, alice, openai_server):
    add_provider("llama", openai_server.base_url)
    channel.mode = "completion"
    channel.save()
    use_provider(channel, "llama", max_tokens=50, top_k=7, repeat_penalty=1.3)
    post_message(channel=channel, user=alice, text="Hi there", framing=INTERVIEW)
    wait_for_done(channel)
    request = openai_server.requests[0]
    assert openai_server.paths == ["/v1/completions"]
    assert request["prompt"] == "A transcript.\n\nQ: Hi there\nA:"
    assert request["stop"] == ["\nQ:", "\nQ: "]
    assert request["top_k"] == 7 and request["repeat_penalty"] == 1.3
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    turn = bot_turn(channel)
    assert turn.text == "Hello, world."
    assert turn.prompt == request["prompt"]
    assert turn.finish_reason == "stop"
    assert turn.provider == "llama" and turn.model == "test-model"
    assert turn.usage == {"prompt_tokens": 11, "completion_tokens": 4, "estimated": False}
    assert turn.timings["ttft_ms"] is not None and turn.timings["duration_ms"] >= turn.timings["ttft_ms"]


def test_chat_mode_sends_system_and_messages(channel, alice, openai_server):
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama")
    post_message(channel=channel, user=alice, text="Hi there", framing={"preamble": "Be brief."})
    wait_for_done(channel)
    assert openai_server.paths == ["/v1/chat/completions"]
    assert openai_server.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    assert bot_turn(channel).text == "Hello, world."


def test_the_joined_token_events_equal_the_saved_text(channel, alice, openai_server):
    openai_server.behaviour.tokens = [f" word{i}" for i in range(60)]
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama", max_tokens=100)
    post_message(channel=channel, user=alice, text="Talk")
    events = wait_for_done(channel)
    turn = bot_turn(channel)
    tokens = [e["data"] for e in events if e["type"] == "token" and e["turn_id"] == turn.pk]
    assert "".join(tokens) == turn.text == "".join(f" word{i}" for i in range(60))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[:2] == ["turn", "thinking"]
    assert types[-2:] == ["turn", "done"]
    assert events[-2]["id"] == turn.pk and events[-2]["finish_reason"] == "stop"


def test_reasoning_is_kept_apart_from_the_answer(channel, alice, openai_server):
    openai_server.behaviour.reasoning = ["Let me ", "think."]
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama")
    post_message(channel=channel, user=alice, text="Why?")
    events = wait_for_done(channel)
    turn = bot_turn(channel)
    assert turn.reasoning == "Let me think."
    assert turn.text == "Hello, world."
    assert "".join(e["data"] for e in events if e["type"] == "reasoning") == "Let me think."


def test_missing_usage_is_estimated_and_marked_so(channel, alice, openai_server):
    openai_server.behaviour.usage = False
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    usage = bot_turn(channel).usage
    assert usage["estimated"] is True
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_a_stop_sequence_the_server_ignores_is_still_applied(channel, alice, openai_server):
    openai_server.behaviour.honour_stop = False
    openai_server.behaviour.tokens = ["Sure", ".", "\n", "Q", ":", " next", " question"]
    add_provider("llama", openai_server.base_url)
    channel.mode = "completion"
    channel.save()
    use_provider(channel, "llama")
    post_message(channel=channel, user=alice, text="Hi", framing=INTERVIEW)
    events = wait_for_done(channel)
    turn = bot_turn(channel)
    assert turn.text == "Sure."
    assert turn.truncated is True
    assert turn.raw_completion.startswith("Sure.\nQ:")
    assert "".join(e["data"] for e in events if e["type"] == "token") == "Sure."


def test_max_tokens_ends_the_reply_as_length(channel, alice, openai_server):
    openai_server.behaviour.tokens = [" t"] * 20
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama", max_tokens=5)
    post_message(channel=channel, user=alice, text="Go")
    wait_for_done(channel)
    turn = bot_turn(channel)
    assert turn.finish_reason == "length" and turn.truncated is True
    assert turn.text == " t" * 5


def test_a_dropped_connection_mid_stream_keeps_the_text_as_error(channel, alice, openai_server):
    openai_server.behaviour.tokens = ["one", " two", " three", " four"]
    openai_server.behaviour.drop_after = 2
    add_provider("llama", openai_server.base_url)
    use_provider(channel, "llama")
    post_message(channel=channel, user=alice, text="Count")
    events = wait_for_done(channel)
    turn = bot_turn(channel)
    assert turn.finish_reason == "error"
    assert turn.text == "one two"
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == "provider_error"
    assert len(openai_server.requests) == 1  # no failover after the first token
    assert [e["type"] for e in events][-3:] == ["turn", "error", "done"]


def test_the_channel_provider_name_counts_when_no_param_names_one(channel, alice, openai_server):
    channel.provider = add_provider("llama", openai_server.base_url)
    channel.save()
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    assert bot_turn(channel).provider == "llama"
    assert channel_events(channel)[-1]["finish_reason"] == "stop"


def test_llm_base_url_makes_a_default_provider_for_channels_that_name_none(
    channel, alice, openai_server, settings, monkeypatch
):
    settings.LLM_BASE_URL = openai_server.base_url
    settings.LLM_MODEL = "my-model"
    monkeypatch.setenv("LLM_API_KEY", "secret-from-env")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    from chat.models import Provider

    default = Provider.objects.get(name="default")
    assert default.api_key_env == "LLM_API_KEY"  # the name of the variable, never the key
    assert bot_turn(channel).provider == "default"
    assert openai_server.requests[0]["model"] == "my-model"
    assert openai_server.headers[0]["authorization"] == "Bearer secret-from-env"


def test_a_long_session_reads_only_what_the_context_window_holds(channel, alice, openai_server):
    """A reply reads the newest turns its prompt can hold, not the whole session (the
    old code read all 3,000 turns before the first token), and still reports exactly
    how many turns were left out."""
    from chat.generation import records

    add_provider("llama", openai_server.base_url, context_window=600)
    use_provider(channel, "llama", max_tokens=100)
    session = channel.active_session
    Turn.objects.bulk_create(
        Turn(session=session, role=role, text=f"turn {i} " + "x" * 36, finish_reason=finish)
        for i in range(3000)
        for role, finish in [("user", None) if i % 2 == 0 else ("bot", "stop")]
    )
    plan = records.start_generation(channel.pk)
    assert plan is not None and plan.unread_before is not None
    assert 40 < len(plan.turns) < 200  # ~500 tokens of ~11 each, not 3,000 turns
    assert plan.turns[-1].text.startswith("turn 2999 ")
    Turn.objects.filter(pk=plan.turn_id).delete()  # the plan's bot turn: not under test

    post_message(channel=channel, user=alice, text="And now?")
    wait_for_done(channel)
    sent = openai_server.requests[0]["messages"]
    assert sent[-1]["content"].endswith("And now?") and len(sent) < 200
    reply = bot_turn(channel)
    kept = [m for m in sent if m["role"] != "system"]
    assert kept[0]["content"].startswith("turn 2968 ") and len(kept) == 33
    assert reply.dropped_turns == 2968  # turns 0 to 2967: each one counted, none read


def test_a_turn_posted_while_the_reply_is_planned_makes_it_read_again(channel, alice):
    """The model request starts from a plan read before the bot turn is written; if the
    conversation moved on in between, writing the turn is refused and nothing is saved,
    so the reply is planned again and answers the newer turn too."""
    from chat.generation import records
    from chat.services import inject

    inject(channel=channel, user=alice, role="user", text="First")
    plan = records.read_plan(channel.pk)
    assert plan is not None and [t.text for t in plan.turns] == ["First"]
    inject(channel=channel, user=alice, role="user", text="Second")
    before = Turn.objects.count()
    assert records.open_turn(plan) is None
    assert Turn.objects.count() == before
    again = records.read_plan(channel.pk)
    assert again is not None and [t.text for t in again.turns] == ["First", "Second"]
    opened = records.open_turn(again)
    assert opened is not None and Turn.objects.get(pk=opened.turn_id).role == "bot"
