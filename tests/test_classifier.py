"""cagelib.evaluate.classifier: the linear probe's autograd-free SGD computes the autograd path's update.

The two paths are different code (different kernels and summation orders), so they are compared to float32
tolerance, never bitwise (the rounding differs between CPUs: docs/decisions.md, "Tests on any CPU"); bitwise
equality is asserted only of one path against itself.
"""
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


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Equal to float32 rounding, relative to the tensor's scale (a kernel's summation order moves the last bits)."""
    a, b = a.detach(), b.detach()
    return bool((a - b).abs().max() <= rtol * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 1e-3), (0.0, 0.0), (0.0, 1e-2)])
def test_linear_head_sgd_step_equals_the_autograd_step(momentum, weight_decay):
    """Each step from the same state (weights and momentum buffers re-synchronised) gives the same loss and update:
    the hand-written gradient of Eq. dL/dz = (softmax(z) - onehot(y)) / B is autograd's, to float32 rounding."""
    x, y = _problem()
    head = init_linear_head(16, 5, torch.Generator().manual_seed(1))
    twin = copy.deepcopy(head)
    opts = [torch.optim.SGD(m.parameters(), lr=30.0, momentum=momentum, weight_decay=weight_decay) for m in (head, twin)]
    analytic, autograd = LinearHeadSGD(head, opts[0]), _AutogradUpdate(twin, opts[1])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))
    start = head.weight.clone()
    for step, idx in enumerate(order.split(32)):
        assert _close(analytic(x[idx], y[idx]), autograd(x[idx], y[idx])), step  # the same loss
        assert _close(head.weight, twin.weight) and _close(head.bias, twin.bias), step  # the same update
        with torch.no_grad():  # the next step starts from one state: rounding differences must not compound
            for mine, theirs in zip((head.weight, head.bias), (twin.weight, twin.bias)):
                theirs.copy_(mine)
            if momentum:
                for buffer, p in zip(analytic.buffers, (twin.weight, twin.bias)):
                    opts[1].state[p]["momentum_buffer"].copy_(buffer)
    assert not _close(head.weight, start)  # it trained


def _fit(head, x, y, **overrides):
    kwargs = dict(epochs=12, lr=30.0, milestones=(5, 9), gamma=0.1, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                  batch_size=32, generator=torch.Generator().manual_seed(3), device=torch.device("cpu"))
    kwargs.update(overrides)
    return fit_classifier(head, x, y, **kwargs)


def _standardized_problem(seed=4):
    x, y = _problem(seed=seed)
    return (x - x.mean(0)) / x.std(0), y


def test_fit_classifier_uses_the_analytic_step_for_a_linear_head_and_matches_autograd(monkeypatch, recwarn):
    """A whole fit by either path ends in the same model, on a well-conditioned problem (z-scored features, lr 0.5:
    a float32 rounding difference stays of its size; at lr 30 on raw features it grows chaotically with the steps,
    so two paths cannot be compared there, on any CPU)."""
    x, y = _standardized_problem()
    head = init_linear_head(16, 5, torch.Generator().manual_seed(1))
    twin = copy.deepcopy(head)
    calls = []
    original = LinearHeadSGD.__call__
    monkeypatch.setattr(LinearHeadSGD, "__call__", lambda self, b, t: calls.append(1) or original(self, b, t))
    history = _fit(head, x, y, lr=0.5, val=(x[:40], y[:40]))
    assert calls, "a plain nn.Linear with SGD and no prepare() must take the autograd-free step"
    monkeypatch.setattr(classifier, "_is_plain_linear", lambda model: False)  # force the autograd path
    twin_history = _fit(twin, x, y, lr=0.5, val=(x[:40], y[:40]))
    assert history["train_loss"] == pytest.approx(twin_history["train_loss"], rel=1e-5)
    assert history["val_accuracy"] == twin_history["val_accuracy"]
    assert history["selected_epoch"] == twin_history["selected_epoch"]  # the schedule and selection agree
    assert _close(head.weight, twin.weight, 1e-4) and _close(head.bias, twin.bias, 1e-4)
    assert history["train_loss"][-1] < history["train_loss"][0]  # it learns
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]  # no spurious scheduler warning


@pytest.mark.parametrize("analytic", [True, False])
def test_fit_classifier_is_bitwise_repeatable_on_one_path(monkeypatch, analytic):
    """The same path, seed and data twice: bitwise the same fit (here lr 30 on raw features, the paper's probe)."""
    if not analytic:
        monkeypatch.setattr(classifier, "_is_plain_linear", lambda model: False)
    x, y = _problem(seed=4)
    fits = []
    for _ in range(2):
        head = init_linear_head(16, 5, torch.Generator().manual_seed(1))
        fits.append((_fit(head, x, y, val=(x[:40], y[:40])), head))
    (history, head), (again, twin) = fits
    assert history == again
    assert torch.equal(head.weight, twin.weight) and torch.equal(head.bias, twin.bias)


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
