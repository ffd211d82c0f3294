"""Teacher-forcing schedules (Bengio et al. 2015) and the mixing of model predictions."""
import math

import pytest
import torch

from captioning.scheduled_sampling import ScheduledSamplingConfig, mix_in_predictions, teacher_forcing_prob


def test_schedule_values():
    linear = ScheduledSamplingConfig(schedule="linear", linear_slope=0.01, min_prob=0.25)
    assert [teacher_forcing_prob(linear, i) for i in (0, 10, 50, 100)] == pytest.approx([1.0, 0.9, 0.5, 0.25])
    exponential = ScheduledSamplingConfig(schedule="exponential", exponential_base=0.9)
    assert teacher_forcing_prob(exponential, 0) == 1.0
    assert teacher_forcing_prob(exponential, 3) == pytest.approx(0.729)
    sigmoid = ScheduledSamplingConfig(schedule="inverse_sigmoid", inverse_sigmoid_k=10.0)
    assert teacher_forcing_prob(sigmoid, 0) == pytest.approx(10 / 11)
    assert teacher_forcing_prob(sigmoid, 50) == pytest.approx(10 / (10 + math.exp(5)))
    assert teacher_forcing_prob(sigmoid, 10 ** 9) == pytest.approx(0.0, abs=1e-12)   # no overflow
    assert teacher_forcing_prob(ScheduledSamplingConfig(), 10 ** 6) == 1.0
    for cfg in (linear, exponential, sigmoid):   # monotone non-increasing
        values = [teacher_forcing_prob(cfg, i) for i in range(0, 200, 7)]
        assert all(a >= b for a, b in zip(values, values[1:]))


def test_mixing_uses_gold_at_one_model_at_zero_and_about_the_rate_between():
    gold = torch.full((4000,), 5)
    logits = torch.zeros(4000, 8)
    logits[:, 2] = 100.0                                          # the model always predicts 2
    assert torch.equal(mix_in_predictions(gold, logits, 1.0, "sample"), gold)
    assert (mix_in_predictions(gold, logits, 0.0, "argmax") == 2).all()
    torch.manual_seed(0)
    mixed = mix_in_predictions(gold, logits, 0.75, "sample")
    assert set(mixed.unique().tolist()) == {2, 5}
    assert float((mixed == 5).float().mean()) == pytest.approx(0.75, abs=0.03)


def test_training_forward_logs_and_uses_the_schedule():
    """With p = 0 and argmax, the LSTM's inputs after <start> are its own previous predictions:
    the logits equal those of a greedy step-by-step rollout."""
    from captioning.models.attention_lstm import AttentionLSTMDecoder
    torch.manual_seed(0)
    dec = AttentionLSTMDecoder(10, 6, 5, 8, 4, dropout=0.0).eval()
    features = torch.randn(3, 4, 6)
    gold = torch.randint(3, 10, (3, 6))
    logits, _ = dec(features, gold, teacher_forcing_prob=0.0, draw="argmax")
    memory = dec.prepare_memory(features)
    state = dec.init_state(memory)
    tokens = gold[:, 0]
    for t in range(6):
        step_logits, state, _ = dec.step(tokens, state, memory)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-6)
        tokens = step_logits.argmax(-1)


def test_course_config_decays_over_the_run_it_configures():
    """resnet101_lstm_ss.yaml on Flickr8k (6,000 training images x 5 captions): the teacher-forcing
    probability must reach its floor well inside the configured epochs. With k=3000 per step it
    was still 0.99 at epoch 10 and 0.85 at epoch 20 (2.6 % of the input tokens ever replaced)."""
    from captioning.config import Config
    from common.config import REPO_ROOT, load_config
    cfg = load_config(Config, REPO_ROOT / "captioning/configs/resnet101_lstm_ss.yaml")
    steps_per_epoch = math.ceil(6000 * 5 / cfg.train.batch_size)
    unit = steps_per_epoch if cfg.sampling.unit == "step" else 1
    at_epoch = lambda epoch: teacher_forcing_prob(cfg.sampling, epoch * unit)
    assert cfg.sampling.min_prob <= 0.75
    assert at_epoch(cfg.train.epochs // 4) > 0.9  # mostly teacher-forced at first
    assert at_epoch(cfg.train.epochs * 3 // 4) == pytest.approx(cfg.sampling.min_prob)  # at the floor by then
