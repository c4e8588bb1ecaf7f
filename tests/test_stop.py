"""Stop strings: the model's text ends before the first one, and no streamed piece shows part of one."""

from chatbot.backends.base import until_stop


def test_text_ends_before_a_stop_string_split_across_pieces():
    pieces = ["The sea is bl", "ue. EN", "D of it", " never shown"]
    shown = list(until_stop(pieces, ["END"]))
    assert "".join(shown) == "The sea is blue. "
    assert not any("E" in piece for piece in shown)  # "EN" was held until "D" made it the stop string


def test_a_held_prefix_that_is_no_stop_string_is_shown_whole_and_in_order():
    pieces = ["Answer: E", "N", "OUGH said. ", "Q", "uite. \nQ", "uestion: next"]
    assert "".join(until_stop(pieces, ["END", "\nQuestion:"])) == "Answer: ENOUGH said. Quite. "
    assert "".join(until_stop(pieces, [])) == "".join(pieces)
    assert "".join(until_stop(["no stop here, E"], ["END"])) == "no stop here, E"  # the held end comes at the end


def test_the_earliest_of_several_stop_strings_wins_and_one_at_the_start_gives_nothing():
    assert "".join(until_stop(["one, two; three"], [";", ","])) == "one"
    assert list(until_stop(["STOP and more"], ["STOP"])) == []


def test_stopping_closes_the_generation_behind_the_pieces():
    produced, closed = [], []

    def generation():
        try:
            for word in ["alpha ", "beta ", "STOP ", "gamma ", "delta "]:
                produced.append(word)
                yield word
        finally:
            closed.append(True)

    assert "".join(until_stop(generation(), ["STOP"])) == "alpha beta "
    assert produced == ["alpha ", "beta ", "STOP "] and closed == [True]
