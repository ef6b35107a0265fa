"""Stop sequences split across tokens, and the repetition hint."""

from chat.generation.text import StopCutter, repetition_hint


def feed_all(cutter, pieces):
    return "".join(cutter.feed(p) for p in pieces) + cutter.flush()


def test_a_stop_split_across_tokens_is_cut():
    cutter = StopCutter(["\nUser:"])
    assert feed_all(cutter, ["Fine", ".\n", "Us", "er: more"]) == "Fine."
    assert cutter.stopped


def test_text_that_cannot_start_a_stop_is_not_held_back():
    cutter = StopCutter(["\nUser:"])
    assert cutter.feed("Hello") == "Hello"
    assert cutter.feed(" there\n") == " there"
    assert cutter.feed("Usual") == "\nUsual"


def test_text_held_back_is_released_at_the_end():
    cutter = StopCutter(["\nQ:"])
    assert cutter.feed("end\n") == "end"
    assert cutter.flush() == "\n"


def test_without_stops_everything_passes():
    assert feed_all(StopCutter([]), ["a", "b\n", "c"]) == "ab\nc"


def test_the_repetition_hint():
    assert repetition_hint("I like tea. I like tea. I like tea.", []) is not None
    hint = repetition_hint("This is the very same answer.", ["This is the very same answer."])
    assert hint is not None
    assert "earlier turn" in hint
    assert repetition_hint("A perfectly normal reply.", ["Something else entirely."]) is None
