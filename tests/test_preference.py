"""The Diffusion-DPO loss (issue 44) on a tiny UNet and a hand-made pair of real-looking glyphs."""

import copy
import math

import pytest
import torch

from glyffuser.diffusion.preference import dpo_loss
from glyffuser.diffusion.process import training_scheduler
from glyffuser.diffusion.unet import build_unet

R, L, D, BETA = 16, 4, 24, 500.0


def glyph(kind: str) -> torch.Tensor:
    """(1,1,R,R) in [-1, 1]: paper (+1) with a black bar, vertical or horizontal."""
    x = torch.ones(1, 1, R, R)
    if kind == "vertical":
        x[..., 2:14, 7:9] = -1
    else:
        x[..., 7:9, 2:14] = -1
    return x


@pytest.fixture()
def models():
    torch.manual_seed(0)
    policy = build_unet(R, D, [16, 32], 1, [False, True], 8, True)
    return policy, copy.deepcopy(policy).requires_grad_(False), training_scheduler("cosine", "v_prediction", True)


def pair(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    text, mask = torch.randn(1, L, D, generator=g).expand(b, L, D), torch.ones(b, L, dtype=torch.bool)
    noise = torch.randn(b, 1, R, R, generator=g)
    t = torch.randint(50, 950, (b,), generator=g)
    return glyph("vertical").expand(b, -1, -1, -1), glyph("horizontal").expand(b, -1, -1, -1), noise, t, text, mask


def test_at_the_reference_the_loss_is_log_2_and_a_tie_has_no_gradient(models):
    policy, reference, sched = models
    winner, loser, noise, t, text, mask = pair(4, 0)
    loss, stats = dpo_loss(policy, reference, sched, winner, loser, noise, t, text, mask, BETA)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["reward_margin"] == 0
    loss.backward()  # a real preference moves the policy from the first step
    preference = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).norm()
    assert preference > 0
    policy.zero_grad(set_to_none=True)
    tie, _ = dpo_loss(policy, reference, sched, winner, winner, noise, t, text, mask, BETA)
    tie.backward()  # winner = loser: no preference, no gradient (up to the summation order of float sums)
    assert tie.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).norm() < 1e-5 * preference


def test_training_on_a_pair_moves_the_policy_towards_the_winner_relative_to_the_reference(models):
    policy, reference, sched = models
    frozen = copy.deepcopy(reference.state_dict())
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for step in range(30):
        loss, _ = dpo_loss(policy, reference, sched, *pair(8, step), BETA)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # on noise and timesteps it never trained on: the winner denoised better than by the reference, the loser worse
    with torch.no_grad():
        loss, stats = dpo_loss(policy, reference, sched, *pair(64, 1000), BETA)
    assert loss.item() < math.log(2) and stats["ranked_right"] > 0.8
    assert stats["winner_error_vs_reference"] < 0 < stats["loser_error_vs_reference"]
    assert all(torch.equal(v, frozen[k]) for k, v in reference.state_dict().items())  # the reference stayed put
