"""cagelib.evaluate.classifier: the linear probe's autograd-free SGD equals the autograd path bit for bit."""
import copy

import pytest
import torch
from torch import nn

from cagelib.evaluate import classifier
from cagelib.evaluate.classifier import LinearHeadSGD, _AutogradUpdate, fit_classifier, init_linear_head


def _problem(n=200, features=16, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=generator)
    x = 3 * torch.randn(n, features, generator=generator) + 1  # raw-feature scale: large, offset
    x[:, :3] += y[:, None].float()  # some signal
    return x, y


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 1e-3), (0.0, 0.0), (0.0, 1e-2)])
def test_linear_head_sgd_steps_equal_autograd_bitwise(momentum, weight_decay):
    x, y = _problem()
    head = init_linear_head(16, 5, torch.Generator().manual_seed(1))
    twin = copy.deepcopy(head)
    opts = [torch.optim.SGD(m.parameters(), lr=30.0, momentum=momentum, weight_decay=weight_decay) for m in (head, twin)]
    analytic, autograd = LinearHeadSGD(head, opts[0]), _AutogradUpdate(twin, opts[1])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))
    for step, idx in enumerate(order.split(32)):
        assert torch.equal(analytic(x[idx], y[idx]), autograd(x[idx], y[idx])), step  # the same loss
        assert torch.equal(head.weight, twin.weight) and torch.equal(head.bias, twin.bias), step
    assert not torch.equal(head.weight, init_linear_head(16, 5, torch.Generator().manual_seed(1)).weight)  # it trained


def _fit(head, x, y, **overrides):
    kwargs = dict(epochs=12, lr=30.0, milestones=(5, 9), gamma=0.1, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                  batch_size=32, generator=torch.Generator().manual_seed(3), device=torch.device("cpu"))
    kwargs.update(overrides)
    return fit_classifier(head, x, y, **kwargs)


def test_fit_classifier_uses_the_analytic_step_for_a_linear_head_and_matches_autograd(monkeypatch, recwarn):
    x, y = _problem(seed=4)
    head = init_linear_head(16, 5, torch.Generator().manual_seed(1))
    twin = copy.deepcopy(head)
    calls = []
    original = LinearHeadSGD.__call__
    monkeypatch.setattr(LinearHeadSGD, "__call__", lambda self, b, t: calls.append(1) or original(self, b, t))
    history = _fit(head, x, y, val=(x[:40], y[:40]))
    assert calls, "a plain nn.Linear with SGD and no prepare() must take the autograd-free step"
    monkeypatch.setattr(classifier, "_is_plain_linear", lambda model: False)  # force the autograd path
    twin_history = _fit(twin, x, y, val=(x[:40], y[:40]))
    assert history == twin_history  # losses, validation accuracy per epoch, selected epoch (schedule included)
    assert torch.equal(head.weight, twin.weight) and torch.equal(head.bias, twin.bias)
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]  # no spurious scheduler warning


def test_fit_classifier_keeps_autograd_where_the_analytic_step_does_not_apply(monkeypatch):
    x, y = _problem()
    monkeypatch.setattr(LinearHeadSGD, "__call__", lambda *a: pytest.fail("LinearHeadSGD used"))
    _fit(init_linear_head(16, 5, torch.Generator().manual_seed(1)), x, y, optimizer="adam", lr=1e-2, epochs=2)
    _fit(init_linear_head(16, 5, torch.Generator().manual_seed(1)), x, y, epochs=2, prepare=lambda b, g: b * 1.0)
    _fit(nn.Sequential(nn.Linear(16, 5)), x, y, epochs=2)  # not a bare nn.Linear


def test_linear_head_sgd_refuses_what_it_does_not_implement():
    head = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="plain SGD"):
        LinearHeadSGD(head, torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, nesterov=True))
