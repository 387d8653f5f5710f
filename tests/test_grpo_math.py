"""GRPO math comes from verl; these pin its numbers on our row layout (uneven groups included)."""

import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos

from s2lpo.algo import correction, grpo


def test_advantages_on_uneven_groups_match_hand_computation_and_verl():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    groups = [0, 0, 0, 1, 1, 1, 1, 1, 2]  # sizes 3, 5 and 1
    lengths = [3, 1, 2, 4, 2, 2, 1, 3, 2]
    mask = torch.zeros(9, 4)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    adv = grpo.group_advantages(scores, mask, groups)
    eps = 1e-6
    # group 0: mean 1/3, unbiased std sqrt(1/3)
    s0 = np.sqrt(1 / 3)
    # group 1: 3 of 5 -> mean .6, unbiased std sqrt(.3)
    s1 = np.sqrt(0.3)
    expected = [(1 - 1 / 3) / (s0 + eps), (-1 / 3) / (s0 + eps), (-1 / 3) / (s0 + eps),
                0.4 / (s1 + eps), 0.4 / (s1 + eps), 0.4 / (s1 + eps), -0.6 / (s1 + eps), -0.6 / (s1 + eps),
                1.0 / (1.0 + eps)]  # a group of one: mean 0, std 1 (verl's rule)
    for i in range(9):
        assert adv[i, : lengths[i]].tolist() == pytest.approx([expected[i]] * lengths[i], rel=1e-5)
        assert adv[i, lengths[i]:].abs().sum() == 0
    # and the same as calling verl directly with rewards on the last token
    tlr = torch.zeros(9, 4)
    for i, n in enumerate(lengths):
        tlr[i, n - 1] = scores[i]
    ref, _ = core_algos.compute_grpo_outcome_advantage(tlr, mask, np.array(groups))
    assert torch.equal(adv, ref)


def test_dr_grpo_no_std():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0])
    adv = grpo.group_advantages(scores, torch.ones(4, 2), [0, 0, 0, 0], norm_by_std=False)
    assert adv[:, 0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    cfg = grpo.actor_config(4)
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = grpo.policy_loss(logp, logp, adv, mask, cfg)
    assert loss.item() == pytest.approx(-(1 + 1 - 2) / 3)
    assert m["actor/pg_clipfrac"] == 0.0


def test_policy_loss_clips():
    cfg = grpo.actor_config(4, clip_ratio=0.2)
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.5]]))
    loss, m = grpo.policy_loss(old, new, torch.ones(1, 1), torch.ones(1, 1), cfg)
    assert loss.item() == pytest.approx(-1.2)
    assert m["actor/pg_clipfrac"] == 1.0


def test_truncated_is_weights():
    old = torch.log(torch.tensor([[0.5, 0.9], [0.5, 0.9]]))
    beh = torch.log(torch.tensor([[0.25, 0.1], [0.25, 0.1]]))
    w = correction.truncated_is_weights(old, beh, torch.tensor([True, False]), cap=2.0)
    assert w.flatten().tolist() == pytest.approx([2.0, 2.0, 1.0, 1.0])
    w = correction.truncated_is_weights(old, beh, torch.tensor([True, False]), cap=100.0)
    assert w[0].tolist() == pytest.approx([2.0, 9.0])


def _grads(name, old, beh, adv, off, **params):
    """d loss / d log-prob of every token under correction ``name`` (ratio 1: log_prob = old)."""
    cfg = grpo.actor_config(2)
    logp = old.clone().requires_grad_()
    loss, _ = correction.get_correction(name)(old, logp, adv, torch.ones_like(old), off, beh, cfg,
                                               correction.CorrectionParams(**params))
    loss.backward()
    return loss.item(), logp.grad


def test_shaping_loss_splits_rows():
    logp = torch.log(torch.tensor([[0.5], [0.2]]))
    loss, g = _grads("shaping", logp, logp, torch.tensor([[1.0], [1.0]]), torch.tensor([False, True]),
                     shaping_gamma=0.1)
    # learner row: -1 * ratio(1) / 2 tokens; explorer row: -1 * .2/(.2+.1) / 2 tokens
    assert loss == pytest.approx(-(1.0 + 0.2 / 0.3) / 2)
    # d/dlogp of -p/(p+g) = -g p/(p+g)^2: a low-probability explorer token keeps most of its gradient
    assert g[1, 0].item() == pytest.approx(-(0.1 * 0.2 / 0.3**2) / 2)
    assert g[0, 0].item() == pytest.approx(-0.5)  # the learner row's is verl's clipped objective's


def test_corrections_scale_explorer_gradients_as_documented():
    """On a hand-built batch (row 0 from the explorer, row 1 the learner's): truncated IS multiplies the
    explorer row's gradient by min(pi_old / pi_explorer, cap) and leaves the learner row's alone; shaping
    replaces the explorer row's gradient -A by -A gamma p / (p + gamma)^2; ``none`` treats both rows alike."""
    old = torch.log(torch.tensor([[0.5, 0.9], [0.5, 0.9]]))
    beh = torch.log(torch.tensor([[0.25, 0.6], [0.5, 0.9]]))  # the explorer liked token 0 less, token 1 less
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    off = torch.tensor([True, False])
    _, g_none = _grads("none", old, beh, adv, off)
    assert g_none.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.25])  # -A / 4 tokens
    _, g_is = _grads("truncated_is", old, beh, adv, off, is_cap=1.6)
    assert g_is[0].tolist() == pytest.approx([-0.25 * 1.6, -0.25 * 1.5])  # weights min(2, 1.6), min(1.5, 1.6)
    assert g_is[1].tolist() == pytest.approx(g_none[1].tolist())
    _, g_sh = _grads("shaping", old, beh, adv, off, shaping_gamma=0.1)
    expect = [-(0.1 * p / (p + 0.1) ** 2) / 4 for p in (0.5, 0.9)]
    assert g_sh[0].tolist() == pytest.approx(expect)
    assert g_sh[1].tolist() == pytest.approx(g_none[1].tolist())


def test_unknown_correction_names_the_registered_ones():
    with pytest.raises(ValueError, match="registered: none, truncated_is, shaping"):
        correction.get_correction("magic")


def test_kl_loss_is_zero_at_reference():
    lp = torch.log(torch.tensor([[0.3, 0.6]]))
    assert grpo.kl_loss(lp, lp, torch.ones(1, 2)).item() == pytest.approx(0.0, abs=1e-7)
    assert grpo.kl_loss(lp, lp - 0.1, torch.ones(1, 2)).item() > 0


def test_the_share_of_signal_only_explorer_rows_created():
    """Four groups of four rows (two explorer, two learner): group 0 all solved (no signal); group 1 the
    explorer's rows solve it, the learner's fail (signal only the explorer created); group 2 the learner's rows
    differ (its own signal); group 3 both explorer rows fail, both learner rows solve (the learner's own success, not the explorer's)."""
    from s2lpo.rollout.metrics import outcome_metrics

    scores = [1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1]
    groups = [g for g in range(4) for _ in range(4)]
    sources = ["explorer", "explorer", "learner", "learner"] * 4
    m = outcome_metrics(scores, groups, sources)
    assert m["train/groups_with_signal"] == 3 / 4
    assert m["train/signal_from_explorer_only"] == 1 / 3
    assert "train/groups_with_signal" not in outcome_metrics(scores, groups)
    # a group of explorer rows only (alpha = 1): whatever signal it has, the explorer created
    assert outcome_metrics([1, 0], [0, 0], ["explorer", "explorer"])["train/signal_from_explorer_only"] == 1.0
    assert outcome_metrics([1, 1], [0, 0], ["learner", "learner"])["train/signal_from_explorer_only"] == 0.0
