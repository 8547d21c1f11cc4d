"""Token bytes and stop-string trimming of the server's text codec (no model needed)."""

from __future__ import annotations

import threading

from skillsd_jax.serve import TextCodec


def test_token_bytes_rebuild_multibyte_text(tok):
    codec = TextCodec(tok)
    text = "Café — été ✓ <think>ok</think> 北"
    ids = tok.encode(text, add_special_tokens=False)
    assert b"".join(codec.token_bytes(i) for i in ids) == text.encode("utf-8")
    # Negative control: decoding token by token loses the characters split across tokens.
    assert b"".join(tok.decode([i]).encode("utf-8") for i in ids) != text.encode("utf-8")


def test_trim_cuts_at_first_stop_and_counts_tokens(tok):
    codec = TextCodec(tok)
    ids = tok.encode("go north. then east. done", add_special_tokens=False)
    cut = codec.trim(ids, ["east", "north"])
    assert cut.text == "go " and cut.stopped
    assert "north" in tok.decode(ids[:cut.num_tokens]) and "north" not in tok.decode(ids[:cut.num_tokens - 1])
    whole = codec.trim(ids, ["west"])
    assert (whole.text, whole.num_tokens, whole.stopped) == ("go north. then east. done", len(ids), False)


def test_codec_is_safe_from_many_threads(tok):
    codec = TextCodec(tok)
    texts = [f"room {i}: a lamp, a box and {i} keys" for i in range(40)]
    expected = [tok.encode(t, add_special_tokens=False) for t in texts]
    got: list = [None] * len(texts)

    def work(i: int) -> None:
        got[i] = codec.encode(texts[i], add_special_tokens=False)
        assert codec.decode(got[i]) == texts[i]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def _check_pieces(pieces, choice):
    assert "".join(t for _, _, t in pieces) == choice.text
    assert [s for s, _, _ in pieces] == [0] + [e for _, e, _ in pieces[:-1]]  # contiguous token ranges
    assert not pieces or pieces[-1][1] == len(choice.tokens)


def test_stream_pieces_never_split_a_character(tok):
    from skillsd_jax.serve.protocol import FinishedChoice
    from skillsd_jax.serve.streaming import text_deltas

    codec = TextCodec(tok)
    text = "Café — été ✓ 北京 ok"
    ids = tok.encode(text, add_special_tokens=False)
    choice = FinishedChoice(text, ids, [0.0] * len(ids), "length", len(ids))
    pieces = text_deltas(codec, choice)
    _check_pieces(pieces, choice)
    assert all("\ufffd" not in t for _, _, t in pieces)
    # Some character spans several tokens here, so some piece holds more than one token.
    assert len(pieces) < len(ids) and max(e - s for s, e, _ in pieces) > 1


def test_stream_pieces_stop_at_a_trimmed_stop_string(tok):
    from skillsd_jax.serve.protocol import finish_choices
    from skillsd_jax.serve.streaming import text_deltas
    from skillsd_jax.sampling import Completion

    codec = TextCodec(tok)
    ids = tok.encode("go north. then east. done", add_special_tokens=False)
    (choice,) = finish_choices([Completion(ids, [0.0] * len(ids), "length")], codec, ["east"])
    assert choice.text == "go north. then " and choice.finish_reason == "stop"
    pieces = text_deltas(codec, choice)
    _check_pieces(pieces, choice)
