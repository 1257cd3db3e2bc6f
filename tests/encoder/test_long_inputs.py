"""Long inputs cost what they keep (issue 19, item 4): a text is cut by characters before it is
tokenized, with exactly the ids (and truncation flags) that cutting its full encoding gives."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skmoe.encoder import tokenization
from skmoe.encoder.tokenization import load_tokenizer, tokenize

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog, twice; then it rests. ",
    "german": "Donaudampfschifffahrtsgesellschaftskapitänsmützen sind selten. ",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. ",
    "chinese": "我能吞下玻璃而不伤身体。天下大势，分久必合，合久必分。",
    "japanese": "私はガラスを食べられます。それは私を傷つけません。",
    "thai": "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ",
    "arabic": "أنا قادر على أكل الزجاج و هذا لا يؤلمني. ",
    "hindi": "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती. ",
    "emoji": "🙂👍🏽 ok 🇫🇷🇩🇪 ",
    "url": "https://example.com/a/very/long/path?with=query&and=more#frag ",
    "digits": "3.14159265358979323846264338327950288419716939937510 ",
    "spaces": "word" + " " * 37,  # whitespace runs: many characters, few tokens
    "no-space": "abcdefghij" * 3,
    # runs of one character: their segmentation depends on the run's length, so a cut inside
    # the run changed ids from the 4th token on (audit 2026-12-04: 'a' * 10,000 with XLM-R)
    "run-a": "a",
    "run-dash": "-",
    "run-dot": ".",
}


def reference(tokenizer, texts, max_length):
    """What tokenize() returned before: the full text through the tokenizer, cut afterwards."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length + 1,
                    verbose=False)["input_ids"]
    cut = [i for i, row in enumerate(ids) if len(row) > max_length]
    return [row[: max_length - 1] + row[-1:] if len(row) > max_length else row for row in ids], cut


@pytest.fixture(scope="module", params=["wordpiece", "xlmr"])
def tokenizer(request, bert_tokenizer, xlmr_tokenizer_path):
    return load_tokenizer(bert_tokenizer if request.param == "wordpiece" else xlmr_tokenizer_path)


@pytest.mark.parametrize("max_length", [8, 40])
def test_cut_before_tokenizing_keeps_the_same_ids_and_flags(tokenizer, max_length):
    threshold = (max_length + 1 + tokenization.CUT_GUARD_TOKENS) * tokenization.CHARS_PER_TOKEN
    texts = []
    for sample in SAMPLES.values():
        # lengths around the character threshold and the token limit, and far beyond both
        for n in sorted({threshold - 3, threshold, threshold + 1, 2 * threshold + 5, 50_000}):
            texts.append((sample * (n // len(sample) + 1))[:n])
        for words in range(max_length - 3, max_length + 3):  # about max_length tokens, long text
            texts.append(" " * threshold + " ".join(["dog"] * words) + " " * threshold)
    expected = reference(tokenizer, texts, max_length)
    got = tokenize(tokenizer, texts, max_length)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert any(i not in got[1] for i in range(len(texts)))  # both kinds of row are exercised


@pytest.mark.parametrize("script", ["english", "russian", "chinese", "thai", "url"])
def test_a_long_text_never_reaches_the_tokenizer_whole(tokenizer, script, monkeypatch):
    calls: list[int] = []
    real = tokenization.encode_ids

    def spy(tok, texts, *args, **kwargs):
        calls.append(max(map(len, texts)))
        return real(tok, texts, *args, **kwargs)

    monkeypatch.setattr(tokenization, "encode_ids", spy)
    text = SAMPLES[script] * (200_000 // len(SAMPLES[script]))
    ids, cut = tokenize(tokenizer, [text], 512)
    assert cut == [0] and len(ids[0]) == 512
    assert max(calls) <= len(text) // 5, calls  # a bounded prefix, never the whole text


def test_a_text_of_spaces_is_tokenized_whole_not_cut(tokenizer):
    text = "a" + " " * 100_000 + "b"
    assert tokenize(tokenizer, [text], 8) == reference(tokenizer, [text], 8)


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    torch.set_num_threads(1)
    from skmoe import MoEEmbeddingTransformer
    est = MoEEmbeddingTransformer(sys.argv[1], device="cpu", verbose=0).fit([])
    est.transform(["warm up " * 600])
    small = est.transform(["The quick brown fox. " * 2000])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = "The quick brown fox. " * (20_000_000 // 21)
    start = time.perf_counter()
    vec = est.transform([big])
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"grown_mb": grown / 1024, "seconds": seconds,
                      "same": bool(abs(vec - small).max() < 1e-5)}))
""")


def test_a_20_mb_text_embeds_within_200_mb(fast_moe, tmp_path):
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(fast_moe)], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # the text itself is 20 MB, and the prompt joined to it another 20 MB
    assert result["grown_mb"] < 200, result
    assert result["same"], result  # the same 512 tokens as a text cut to 2,000 sentences
    assert result["seconds"] < 20, result


def test_tokenizer_calls_are_bounded_by_texts_and_characters(tokenizer, monkeypatch):
    """Short texts go TOKENIZE_SLICE at a time; long ones (after the character cut) about
    TOKENIZE_CHARS characters at a time, so a call's encodings stay bounded either way."""
    calls: list[tuple[int, int]] = []
    real = tokenization.encode_ids

    def spy(tok, texts, *args, **kwargs):
        if kwargs.get("add_special_tokens", True):
            calls.append((len(texts), sum(map(len, texts))))
        return real(tok, texts, *args, **kwargs)

    monkeypatch.setattr(tokenization, "encode_ids", spy)
    short = ["a short text"] * (2 * tokenization.TOKENIZE_SLICE + 5)
    assert tokenize(tokenizer, short, 512)[0] == reference(tokenizer, short, 512)[0]
    assert [n for n, _ in calls] == [tokenization.TOKENIZE_SLICE] * 2 + [5]
    calls.clear()
    monkeypatch.setattr(tokenization, "TOKENIZE_CHARS", 20_000)
    long = [SAMPLES["english"] * 300] * 30  # 20k characters each, cut to ~4.4k before the call
    ids, cut = tokenize(tokenizer, long, 512)
    assert (ids, cut) == reference(tokenizer, long, 512)
    assert sum(n for n, _ in calls) == 30 and len(calls) > 1
    assert all(chars <= 20_000 for _, chars in calls)
