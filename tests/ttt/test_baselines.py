"""The TTT baselines leave the network as they found it, and TENT's step lowers the entropy it minimises."""

import pytest
import torch
from torch import nn

from pyebm import ttt


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).eval()


def test_batch_statistics_normalises_with_the_batch_and_restores_the_running_statistics():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = 3 + 2 * torch.randn(64, 4)
    with ttt.batch_statistics(net):
        hidden = net[1](net[0](x))
        net(x)  # a forward pass in train mode moves the running statistics ...
    assert torch.allclose(hidden.mean(0), torch.zeros(8), atol=1e-5)  # ... normalised by the batch's own
    assert not net.training
    for k, v in net.state_dict().items():  # ... and the block undoes it
        assert torch.equal(v, before[k]), k


def test_tent_lowers_the_entropy_and_leaves_the_network_alone():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(64, 4)
    with ttt.batch_statistics(net), torch.no_grad():
        start = ttt.entropy(net, x).mean()
    probs = ttt.tent(net, x, ["1.weight", "1.bias"], lr=1e-2, steps=5)
    assert float(-(probs * probs.log()).sum(1).mean()) < float(start)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="not parameters"):
        ttt.tent(net, x, ["nope"])


def test_the_digits_example_splits_and_shifts():
    pytest.importorskip("sklearn")
    from pyebm.examples import digits

    (xt, yt), (xv, yv), (xs, ys) = digits.load(0)
    assert (len(xt), len(xv), len(xs)) == (1000, 300, 497) and xt.shape[1:] == (8, 8)
    assert 0 <= float(xt.min()) and float(xt.max()) <= 1
    g = torch.Generator().manual_seed(0)
    for family, shifts in digits.SHIFTS.items():
        for shift in shifts:
            assert shift(xs, g).shape == xs.shape, family
    state = torch.random.get_rng_state()
    net = digits.make_net(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded locally
    assert net(xs[:5]).shape == (5, 10)
