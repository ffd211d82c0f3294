"""Caption file parsing, tokenisation, vocabulary, split checks; the real Flickr8k text files."""
import pytest

from captioning.data import (
    SPECIALS,
    DataConfig,
    Vocabulary,
    build_vocabulary,
    encode_captions,
    load_corpus,
    parse_captions_file,
    read_image_list,
    tokenize,
)
from captioning.shapes import write_shapes_dataset
from common.config import ConfigError


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's ball, in 2 parks .") == ["a", "dog", "s", "ball", "in", "2", "parks"]


def test_vocabulary_min_count_order_and_round_trip():
    vocab = Vocabulary.build([["a", "dog"], ["a", "cat"], ["a", "dog", "runs"]], min_count=2)
    assert vocab.itos == SPECIALS + ["a", "dog"]          # by count, rare words dropped
    ids = vocab.encode(["a", "cat", "dog"])
    assert ids == [vocab.start, vocab.stoi["a"], vocab.unk, vocab.stoi["dog"], vocab.end]
    assert vocab.decode(ids + [vocab.pad, vocab.stoi["a"]]) == "a <unk> dog"   # stops at <end>


@pytest.mark.parametrize("line, message", [
    ("img.jpg#0 a dog without a tab", "malformed line"),
    ("img.jpg\ta caption without #k", "malformed line"),
    ("img.jpg#x\tnot a number", "malformed line"),
    ("img.jpg#1\t   ", "empty caption"),
    ("img.jpg#0\tsame number twice", "duplicate caption number"),
])
def test_malformed_caption_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "captions.txt"
    path.write_text(f"img.jpg#0\ta dog runs\n\n{line}\n")
    with pytest.raises(ConfigError, match=rf"captions.txt:3: {message}"):
        parse_captions_file(path)


def test_captions_kept_in_k_order_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("b.jpg#1\tsecond\r\n\n  \nb.jpg#0\tfirst\na.jpg#0\tonly\n")
    assert parse_captions_file(path) == {"b.jpg": ["first", "second"], "a.jpg": ["only"]}


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12, num_dev=3, num_test=3)


def test_shapes_set_has_flickr8k_layout(shapes_dir):
    corpus = load_corpus(DataConfig(root=str(shapes_dir)))
    assert [len(corpus.splits[s]) for s in ("train", "dev", "test")] == [12, 3, 3]
    assert all(len(corpus.captions[n]) == 5 for n in corpus.splits["train"])
    captions, lengths, index = encode_captions(corpus.splits["train"], corpus.captions,
                                               build_vocabulary(corpus, 1))
    assert captions.shape[0] == 60 and int(index.max()) == 11 and int(lengths.min()) >= 6


def test_missing_image_is_an_error_or_a_counted_skip(shapes_dir, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(shapes_dir, copy)
    victim = read_image_list(copy / "Flickr_8k.devImages.txt")[0]
    (copy / "Flicker8k_Dataset" / victim).unlink()
    with pytest.raises(ConfigError, match=f"1 of 3 dev images are missing.*{victim}.*skip_missing_images"):
        load_corpus(DataConfig(root=str(copy)))
    corpus = load_corpus(DataConfig(root=str(copy), skip_missing_images=True))
    assert victim not in corpus.splits["dev"] and len(corpus.splits["dev"]) == 2
    assert "skipping 1 missing dev images" in capsys.readouterr().out


def test_invalid_utf8_in_captions_names_file_line_and_fix(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_bytes("a.jpg#0\ta dog runs\na.jpg#1\ta dog in a caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        parse_captions_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}:2: not valid UTF-8 (byte 0xe9 at column 23)" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_unreadable_image_is_an_error_or_a_counted_listed_skip(shapes_dir, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(shapes_dir, copy)
    truncated, garbage = read_image_list(copy / "Flickr_8k.trainImages.txt")[3:5]
    image = copy / "Flicker8k_Dataset" / truncated
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])   # an interrupted copy
    (copy / "Flicker8k_Dataset" / garbage).write_bytes(b"<html>404 not found</html>")
    with pytest.raises(ConfigError) as info:
        load_corpus(DataConfig(root=str(copy)))
    message = str(info.value)
    assert "\n" not in message
    assert f"2 of 12 train images cannot be decoded, e.g. {copy / 'Flicker8k_Dataset' / truncated} " \
           f"(OSError: image file is truncated" in message
    assert "data.skip_missing_images=true" in message
    corpus = load_corpus(DataConfig(root=str(copy), skip_missing_images=True))
    assert corpus.splits["train"] == [n for n in read_image_list(copy / "Flickr_8k.trainImages.txt")
                                      if n not in (truncated, garbage)]
    printed = capsys.readouterr().out
    assert f"skipping 2 unreadable train images: {truncated} (OSError: image file is truncated" in printed
    assert f"{garbage} (UnidentifiedImageError: cannot identify image file" in printed


def test_missing_data_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="data folder not found"):
        load_corpus(DataConfig(root=str(tmp_path / "nope")))


def test_real_flickr8k_text(shared_data):
    """The real captions file and split lists: 6000/1000/1000 images with five captions each, and
    the vocabulary of the training captions (min count 5)."""
    folder = shared_data / "flickr8k_text"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    captions = parse_captions_file(folder / "Flickr8k.token.txt")
    splits = {s: read_image_list(folder / f"Flickr_8k.{s}Images.txt") for s in ("train", "dev", "test")}
    assert [len(v) for v in splits.values()] == [6000, 1000, 1000]
    assert not set(splits["train"]) & set(splits["test"])
    assert all(len(captions[n]) == 5 for names in splits.values() for n in names)
    vocab = Vocabulary.build((tokenize(c) for n in splits["train"] for c in captions[n]), min_count=5)
    assert vocab.itos[:6] == SPECIALS + ["a", "in"]
    assert len(vocab) == 2539   # 2535 words seen >= 5 times + 4 specials
    ids, lengths, _ = encode_captions(splits["train"], captions, vocab)
    assert ids.shape[0] == 30000
    unk_rate = float((ids == vocab.unk).sum() / (lengths - 2).sum())
    assert 0.02 < unk_rate < 0.03   # 2.5% of training words are rare


def test_karpathy_json_replaces_captions_file_and_lists(shapes_dir, tmp_path):
    import json
    import shutil
    copy = tmp_path / "karpathy"
    shutil.copytree(shapes_dir, copy)
    corpus = load_corpus(DataConfig(root=str(shapes_dir)))
    split_name = {"train": "train", "dev": "val", "test": "test"}
    images = [{"filename": n, "split": split_name[s], "sentences": [{"raw": c} for c in corpus.captions[n]]}
              for s, names in corpus.splits.items() for n in names]
    (copy / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    (copy / "Flickr8k.token.txt").unlink()
    from_json = load_corpus(DataConfig(root=str(copy), karpathy_json="dataset_flickr8k.json"))
    assert from_json.splits == corpus.splits and from_json.captions == corpus.captions
    (copy / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a Karpathy split file"):
        load_corpus(DataConfig(root=str(copy), karpathy_json="bad.json"))
