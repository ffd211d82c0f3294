"""Data: reading, vocabulary and OOV, file naming, batching and evaluation chunks."""
import pytest
import torch

from common.config import ConfigError
from lm.data import Vocab, batchify, bptt_segments, eval_chunks, load_corpus


def write(folder, names=("train.txt", "valid.txt", "test.txt"), texts=None):
    texts = texts or ["the cat sat\n\nthe dog sat\n", "the cow sat\n", "a cat\n"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, texts):
        (folder / name).write_text(text)
    return folder


def test_eos_per_line_empty_lines_skipped_and_oov_rate(tmp_path, capsys):
    corpus = load_corpus(write(tmp_path))
    v = corpus.vocab
    assert v.words[:2] == ["<eos>", "<unk>"]
    assert v.decode(corpus.train) == ["the", "cat", "sat", "<eos>", "the", "dog", "sat", "<eos>"]
    assert "1 empty line(s) skipped" in capsys.readouterr().out
    assert v.decode(corpus.valid) == ["the", "<unk>", "sat", "<eos>"]  # cow unseen in train
    assert corpus.oov_rate["valid"] == pytest.approx(1 / 4)
    assert corpus.oov_rate["test"] == pytest.approx(1 / 3)  # "a"
    assert corpus.oov_rate["train"] == 0


def test_empty_lines_as_eos_for_the_wikitext_convention(tmp_path, capsys):
    corpus = load_corpus(write(tmp_path), empty_lines="eos")
    assert corpus.vocab.decode(corpus.train) == ["the", "cat", "sat", "<eos>", "<eos>", "the", "dog", "sat", "<eos>"]
    assert "1 empty line(s) read as <eos>" in capsys.readouterr().out


def test_literal_unk_in_text_is_not_counted_as_oov(tmp_path):
    corpus = load_corpus(write(tmp_path, texts=["x <unk> y\n", "<unk> x\n", "y\n"]))
    assert corpus.oov_rate["valid"] == 0
    assert corpus.vocab.decode(corpus.valid[:1]) == ["<unk>"]


def test_course_convention_vocabulary_over_all_files(tmp_path):
    corpus = load_corpus(write(tmp_path), vocab_from="all")
    assert {"cow", "a"} <= set(corpus.vocab.words)
    assert corpus.oov_rate == {"train": 0, "valid": 0, "test": 0}


def test_max_vocab_keeps_most_frequent(tmp_path):
    corpus = load_corpus(write(tmp_path), max_vocab=4)
    assert corpus.vocab.words == ["<eos>", "<unk>", "sat", "the"]


def test_penn_treebank_file_names(tmp_path):
    corpus = load_corpus(write(tmp_path, names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")))
    assert len(corpus.test) == 3


def test_missing_and_empty_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="data folder .* not found"):
        load_corpus(tmp_path / "nowhere")
    write(tmp_path, names=("train.txt", "valid.txt"))
    with pytest.raises(ConfigError, match=r"test\.txt not found"):
        load_corpus(tmp_path)
    (tmp_path / "test.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="has no tokens"):
        load_corpus(tmp_path)


def test_batchify_rows_are_contiguous_slices():
    rows = batchify(torch.arange(11), 3)
    assert rows.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ConfigError, match="batch_size"):
        batchify(torch.arange(5), 4)


def test_bptt_segments_cover_the_stream_and_depend_on_seed_and_epoch_only():
    fixed = bptt_segments(100, 30)
    assert fixed == [(0, 30), (30, 30), (60, 30), (90, 9)]
    a = bptt_segments(1000, 35, variable=True, seed=1, epoch=2)
    assert a == bptt_segments(1000, 35, variable=True, seed=1, epoch=2)
    assert a != bptt_segments(1000, 35, variable=True, seed=1, epoch=3)
    assert sum(n for _, n in a) == 999 and all(s == sum(n for _, n in a[:i]) for i, (s, _) in enumerate(a))


@pytest.mark.parametrize("rows,chunk", [(1, 4), (3, 2), (4, 5)])
def test_eval_chunks_score_every_token_once(rows, chunk):
    stream = torch.arange(1, 11)
    seen, pairs = [], []
    for inputs, targets, mask in eval_chunks(stream, rows, chunk, eos_id=0):
        seen += targets[mask].tolist()
        pairs += list(zip(inputs[mask].tolist(), targets[mask].tolist()))
    assert sorted(seen) == list(range(1, 11))
    assert all(i == t - 1 for i, t in pairs)  # input = previous token; <eos>(0) before the first


def test_vocab_encode_decode():
    v = Vocab(["a", "b"])
    assert v.encode(["b", "zz", "<eos>"]) == [3, 1, 0]
    assert v.decode([2, 0]) == ["a", "<eos>"]


def test_invalid_utf8_is_one_line_naming_file_line_and_fix(tmp_path):
    write(tmp_path)
    (tmp_path / "valid.txt").write_bytes("the cow sat\nthe caf\xe9 sat\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_corpus(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'valid.txt'}:2: not valid UTF-8 (byte 0xe9 at column 8)" in message
    assert "iconv -f latin1 -t utf-8" in message
