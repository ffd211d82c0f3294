"""Self-critical sequence training: CIDEr-D against pycocoevalcap, the baseline and loss arithmetic,
the direction of one update, K captions per image in the decoders, and exact resume in the SCST phase."""
import json

import pytest
import torch
from pycocoevalcap.cider.cider import Cider

import captioning.train
from captioning import evaluate, metrics
from captioning.config import TrainConfig
from captioning.data import Vocabulary
from captioning.models.attention_lstm import AttentionLSTMDecoder
from captioning.models.transformer import TransformerDecoder
from captioning.scst import CiderD, baselines, policy_gradient_loss, self_critical_loss
from common.checkpoint import load_checkpoint
from tests.captioning.test_captioning_amp import VOCAB, tiny_captioner
from tests.captioning.test_metrics import FakeSpice
from tests.captioning.test_train import TINY, train

REFERENCES = [
    ["a red circle left of a blue square", "the blue square is right of the red circle",
     "a red circle and a blue square side by side", "there is a red circle next to a blue square"],
    ["a green triangle above a yellow circle", "the yellow circle is below the green triangle",
     "a green triangle on top of a yellow circle"],
    ["a dog runs on the grass", "a brown dog is running through a field", "the dog plays outside",
     "a dog running", "a small dog runs across green grass"],
]


def test_cider_d_equals_pycocoevalcap_cider():
    """Same references (pycocoevalcap takes its document frequencies from the references it is
    given, ours from the corpus it was built on): every per-image score is equal, including an
    empty caption, an unseen word, a repeated caption and a caption longer than the references."""
    hypotheses = ["a red circle left of a blue square", "a yellow circle below a green zebra", "",
                  "a dog runs on the grass", "a dog a dog a dog a dog a dog a dog a dog a dog a dog"]
    images = [0, 1, 1, 2, 2]
    ours = CiderD(REFERENCES).score_batch(images + [0], hypotheses + [hypotheses[0]])
    for image, hypothesis, score in zip(images, hypotheses, ours):
        # pycocoevalcap scores every image of its input: give it all references, one hypothesis each
        hyps = {i: [hypothesis if i == image else REFERENCES[i][0]] for i in range(len(REFERENCES))}
        _, per_image = Cider().compute_score(dict(enumerate(REFERENCES)), hyps)
        assert score.item() == pytest.approx(per_image[image], rel=1e-12, abs=1e-12)
    assert ours[0] == ours[-1] and ours[2] == 0.0 and ours[0] > ours[1] > 0


def test_baselines_and_policy_gradient_arithmetic():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert torch.equal(baselines(rewards, None), torch.tensor([[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]))
    assert torch.equal(baselines(rewards, torch.tensor([0.5, 4.0])),
                       torch.tensor([[0.5, 0.5, 0.5], [4.0, 4.0, 4.0]]))
    # -(mean over sampled tokens of advantage * log p); the banned <pad> after <end> (-inf) is masked
    log_probs = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, float("-inf"), float("-inf")]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = policy_gradient_loss(log_probs, mask, torch.tensor([2.0, -1.0]))
    assert loss.item() == pytest.approx(-(2 * -1.0 + 2 * -2.0 + -1 * -0.5) / 3)


class RewardFirstWord:
    """A stand-in for CiderD: 1 for captions starting with "red", 0 for "blue", 0.5 otherwise."""

    def score_batch(self, images, captions):
        return torch.tensor([{"red": 1.0, "blue": 0.0}.get(c.split()[0] if c else "", 0.5) for c in captions],
                            dtype=torch.float64)


class ToyModel(torch.nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.decoder = AttentionLSTMDecoder(vocab_size, encoder_dim=8, embed_dim=8, hidden_dim=16,
                                            attention_dim=8, dropout=0.5)

    def forward(self, features, inputs, teacher_forcing_prob=1.0, draw="sample", features_given=True):
        return self.decoder(features, inputs)


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_one_step_makes_the_better_caption_more_likely(baseline):
    torch.manual_seed(0)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "red", "blue", "circle"])
    model = ToyModel(len(vocab)).eval()  # dropout 0.5 would blur the before/after comparison
    features = torch.randn(4, 3, 8)
    # One-word captions (max length 1): a caption's probability is its word's
    cfg = TrainConfig(method="scst", scst_samples=16, scst_baseline=baseline, scst_max_len=1)

    def caption_log_prob(words):
        tokens = torch.tensor([[vocab.start] + [vocab.stoi[w] for w in words]] * 4)
        with torch.no_grad():
            logits, _ = model.decoder(features, tokens[:, :-1])
        return torch.log_softmax(logits, -1).gather(2, tokens[:, 1:].unsqueeze(2)).sum().item()

    before = caption_log_prob(["red"]), caption_log_prob(["blue"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    loss, reward, mean_baseline = self_critical_loss(model, model, features, torch.arange(4), RewardFirstWord(),
                                                     vocab, cfg, True, torch.device("cpu"), None)
    assert not model.training  # sampled and differentiated without dropout
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = caption_log_prob(["red"]), caption_log_prob(["blue"])
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert 0.0 < reward.item() < 1.0 and 0.0 <= mean_baseline.item() <= 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["attention_lstm", "transformer"])
def test_scst_loss_under_autocast(kind, dtype, check_fp32_finite_gradients):
    """The code path of a GPU run (bf16 on Ampere+, fp16 on V100), on CPU autocast: the sampling
    and teacher-forced passes run in half precision, the loss and every gradient are fp32 and finite."""
    model = tiny_captioner(kind)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "red", "blue"] + [f"w{i}" for i in range(VOCAB - 6)])
    cfg = TrainConfig(method="scst", scst_samples=3, scst_max_len=6)
    loss, reward, baseline = self_critical_loss(model, model, torch.randn(2, 3, 32, 32), torch.arange(2),
                                                RewardFirstWord(), vocab, cfg, False, torch.device("cpu"), dtype)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and 0 <= reward.item() <= 1
    loss.backward()
    check_fp32_finite_gradients([(name, p) for name, p in model.named_parameters() if p.requires_grad])


@pytest.mark.parametrize("decoder", [
    AttentionLSTMDecoder(9, encoder_dim=8, embed_dim=8, hidden_dim=16, attention_dim=8, dropout=0.0),
    TransformerDecoder(9, encoder_dim=8, num_positions=3, d_model=8, heads=2, layers=1, ff_dim=16, dropout=0.0)])
def test_k_captions_per_image_equal_repeated_features(decoder):
    """SCST's teacher-forced pass feeds K captions per image without copying the features K times."""
    torch.manual_seed(0)
    features, inputs = torch.randn(2, 3, 8), torch.randint(0, 9, (6, 5))
    shared, _ = decoder.eval()(features, inputs)
    repeated, _ = decoder(features.repeat_interleave(3, dim=0), inputs)
    assert torch.allclose(shared, repeated, atol=1e-5)


def test_scst_resume_mid_epoch_is_bit_exact_then_evaluated_and_user_mistakes(tmp_path, capsys, monkeypatch):
    """A cross-entropy run, then SCST from it (mean baseline) stopped after step 3 of 6 and resumed:
    the same weights, rewards and dev scores as the uninterrupted SCST run. Then evaluated with a
    stand-in SPICE scorer, and the one-line errors of SCST settings."""
    data = tmp_path / "shapes"
    cross_entropy = train(data, tmp_path, "xe", "train.epochs=1")
    scst = ["train.method=scst", f"train.init_from={cross_entropy}", "train.epochs=3", "train.lr=1e-3",
            "train.scst_samples=3", "train.scst_baseline=mean", "train.scst_max_len=8", "train.batch_size=16",
            "run.checkpoint_every_steps=3", "run.keep_last=50"]
    straight = train(data, tmp_path, "straight", *scst)
    checkpoints = sorted((straight / "checkpoints").glob("step-*.pt"))
    assert [load_checkpoint(p)["step"] for p in checkpoints] == [2, 3, 4, 6]  # 30 images: 2 batches an epoch
    resumed = tmp_path / "captioning" / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "checkpoints" / "step-00000003.pt").write_bytes(checkpoints[1].read_bytes())
    train(data, tmp_path, "resumed", *scst, resume="latest")
    a = load_checkpoint(checkpoints[-1])
    b = load_checkpoint(sorted((resumed / "checkpoints").glob("step-*.pt"))[-1])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["history"] == [{**h, "train_images_per_s": a["history"][i]["train_images_per_s"]}
                            for i, h in enumerate(b["history"])]
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["model"] == "small_cnn+attention_lstm+scst"
    assert {"train_reward", "train_baseline", "valid_cider", "valid_distinct_captions"} <= set(summary["history"][0])
    assert any(p.name.startswith("events") for p in (straight / "tb").iterdir())

    # Evaluated with a stand-in SPICE: SPIDEr in the printed table, the best/worst lists and summary.json
    monkeypatch.setattr(metrics, "spice_unavailable_reason", lambda: None)
    monkeypatch.setattr(metrics, "spice_scorer", FakeSpice)
    evaluate.main([str(straight), "evaluate.meteor=false", "evaluate.human_ceiling=false", "evaluate.splits=[test]",
                   "evaluate.attention_figures=0", "decode.beam_size=2"])
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["model"] == "small_cnn+attention_lstm+scst" and "SPICE" not in summary["unavailable"]
    assert summary["metrics"]["test_spider"] == pytest.approx(
        (summary["metrics"]["test_cider"] + summary["metrics"]["test_spice"]) / 2)
    assert "== SPIDEr: 3 best ==" in (straight / "examples_test.txt").read_text()
    assert summary["test_distinct_captions"] >= 1
    out = capsys.readouterr().out
    assert "| SPIDEr | " in out and "SPICE and SPIDEr unavailable" not in out

    capsys.readouterr()
    for mistake, message in [(["train.method=scst"], "set train.init_from="),
                             ([f"train.init_from={cross_entropy}"], "it needs train.method=scst"),
                             (["train.method=scst", f"train.init_from={cross_entropy}", "decoder.hidden_dim=32"],
                              "holds another architecture"),
                             (["train.method=scst", f"train.init_from={cross_entropy}", "train.scst_samples=1",
                               "train.scst_baseline=mean"], "needs train.scst_samples >= 2"),
                             (["train.method=scst", f"train.init_from={cross_entropy}", "data.min_word_count=100"],
                              "another vocabulary")]:
        with pytest.raises(SystemExit):
            captioning.train.main(["--config", "captioning/configs/demo.yaml", f"data.root={data}",
                                   f"run.root={tmp_path}", f"run.name=mistake{len(message)}", *TINY, *mistake])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
