import math

import torch
import torch.nn.functional as F

from polyvox.losses import contrastive_loss, spread_out


def test_contrastive_loss_by_hand():
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    b = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    scale = 10.0
    # dot products: a0·b0=0.8 a0·b1=0 ; a1·b0=0.96 a1·b1=0.8
    s = [[0.8, 0.0], [0.96, 0.8]]
    row = [-math.log(math.exp(scale * s[i][i]) / sum(math.exp(scale * x) for x in s[i])) for i in range(2)]
    col = [-math.log(math.exp(scale * s[i][i]) / sum(math.exp(scale * s[j][i]) for j in range(2))) for i in range(2)]
    expected = 0.5 * (sum(row) / 2 + sum(col) / 2)
    assert abs(contrastive_loss(a, b, scale).item() - expected) < 1e-5


def test_contrastive_loss_is_low_for_matched_pairs():
    x = F.normalize(torch.randn(16, 32), dim=-1)
    assert contrastive_loss(x, x, 50.0) < 0.01
    assert contrastive_loss(x, x.roll(1, 0), 50.0) > 5.0


def test_spread_out_by_hand():
    # orthonormal points in E=4 dims: mean dot 0, mean squared dot 0 <= 1/4 -> zero penalty
    assert spread_out(torch.eye(4)).item() == 0.0
    # all points identical: mean dot 1 -> 1 + (1 - 1/4)
    same = F.normalize(torch.ones(3, 4), dim=-1)
    assert abs(spread_out(same).item() - (1.0 + 0.75)) < 1e-6
