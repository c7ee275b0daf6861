from __future__ import annotations

import pytest

from postroom_speech.wer import normalise, word_error_rate


@pytest.mark.parametrize(("written", "spoken"), [
    ("Call me at 3:30 PM.", "call me at three thirty p.m."),
    ("at 3.30 pm", "At three-thirty P M"),
    ("My number is 555-0142", "my number is five five five zero one four two"),
    ("the 21st of June", "the twenty-first of june"),
    ("250 boxes", "two hundred and fifty boxes"),
    ("at 10 am", "at ten a.m."),
    ("It's 5:05", "its five oh five"),
])
def test_written_and_spoken_forms_agree(written: str, spoken: str) -> None:
    assert normalise(written) == normalise(spoken)


def test_i_am_is_not_a_time() -> None:
    assert normalise("I am here") == "i am here"


def test_wer_counts_errors_over_all_reference_words() -> None:
    refs = ["call me at 3 pm", "see you on Friday"]
    assert word_error_rate(refs, ["call me at three p.m.", "see you on Friday"]) == 0.0
    # one substitution in 10 normalised words
    assert word_error_rate(refs, ["call me at four p m", "see you on friday"]) == \
        pytest.approx(1 / 10)
