import math

import torch

from pqd.losses import kd_loss


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[2.0, 0.5, -1.0]])
    t = torch.tensor([[1.0, 1.5, 0.0]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.7

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax(s[0].tolist()), softmax(t[0].tolist())
    kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    logits = s[0].tolist()
    ce = -(logits[1] - math.log(sum(math.exp(v) for v in logits)))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert abs(kd_loss(s, t, y, T, alpha).item() - expected) < 1e-5


def test_kd_loss_is_pure_cross_entropy_at_alpha_zero_and_zero_kl_for_identical_logits():
    s = torch.randn(4, 10)
    y = torch.randint(0, 10, (4,))
    assert torch.allclose(kd_loss(s, torch.randn(4, 10), y, 4.0, 0.0), torch.nn.functional.cross_entropy(s, y))
    assert kd_loss(s, s.clone(), y, 4.0, 1.0).abs().item() < 1e-6
