"""Evaluation protocols: linear / finetune / semi-supervised / k-NN, metrics, seed aggregation."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cagelib.coordinates import spherical_coordinates
from cagelib.data.splits import stratified_holdout, stratified_subset
from cagelib.evaluate.classifier import fit_classifier
from cagelib.evaluate.features import TwoStreamEncoder, extract_features, knn_predict
from cagelib.evaluate.metrics import EvalResult, aggregate_seeds
from cagelib.evaluate.protocols import (EvalConfig, finetune_eval, knn_eval, linear_eval, semi_supervised_eval,
                                        supervised_baseline)

T, V, C, K = 2, 4, 3, 4  # tiny sequences (N, 2, 4, 3) for stand-in encoders


def tiny_encoder(out_dim: int = 16, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """Stand-in encoder (N, T, V, C) -> (N, out_dim)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(T * V * C, out_dim), nn.ReLU(), nn.Dropout(dropout))


def clustered(n: int, seed: int, spread: float = 0.3, num_classes: int = K):
    """Well separated Gaussian clusters in input space: (n, T, V, C), labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, T * V * C, generator=torch.Generator().manual_seed(123)) * 2
    y = torch.arange(n) % num_classes
    x = centres[y] + spread * torch.randn(n, T * V * C, generator=g)
    return x.reshape(n, T, V, C), y


def linear_config(**kw) -> EvalConfig:
    settings = dict(device="cpu", epochs=30, milestones=(15, 21), batch_size=64)
    return EvalConfig.paper("linear", **{**settings, **kw})


def test_paper_settings():
    lin, ft, semi = EvalConfig.paper("linear"), EvalConfig.paper("finetune"), EvalConfig.paper("semi-supervised")
    assert (lin.epochs, lin.lr, lin.milestones, lin.gamma, lin.sgd_momentum, lin.weight_decay) == (
        100, 30.0, (50, 70), 0.1, 0.9, 0.0)
    assert (ft.epochs, ft.lr, ft.milestones, ft.gamma, ft.optimizer) == (20, 0.001, (10,), 0.1, "sgd")
    assert (semi.epochs, semi.lr, semi.milestones, semi.protocol) == (20, 0.001, (10,), "semi-supervised")
    assert EvalConfig().val_fraction == 0.0 and EvalConfig.paper("knn").knn_k == EvalConfig().knn_k == 10
    assert EvalConfig.paper("finetune", epochs=5, milestones=(3,)).milestones == (3,)
    with pytest.raises(ValueError, match="^EvalConfig: protocol must be one of"):
        EvalConfig.paper("best-epoch")


def test_milestones_are_epochs_or_fractions_of_the_epochs():
    assert EvalConfig(milestones=(0.5, 0.7)).milestones == (50, 70)  # of the default 100 epochs
    assert EvalConfig.paper("linear", epochs=30, milestones=(0.5, 0.7)).milestones == (15, 21)
    assert EvalConfig.paper("finetune", epochs=3, milestones=(0.5,)).milestones == (1,)
    assert EvalConfig.paper("finetune", epochs=3, milestones=(2, 0.5)).milestones == (1, 2)
    assert EvalConfig.paper("linear", epochs=30).milestones == (50, 70)  # epochs stay epochs
    with pytest.raises(ValueError, match="^EvalConfig: milestones: 0 is neither"):
        EvalConfig(milestones=(0,))


@pytest.mark.parametrize("field, value, message", [
    ("protocol", "best-epoch", "protocol must be one of"), ("epochs", -1, "epochs must be a whole number >= 0"),
    ("epochs", 2.5, "epochs must be a whole number >= 0"), ("lr", 0.0, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"), ("batch_size", 0, "batch_size must be a whole number >= 1"),
    ("optimizer", "adamw", "optimizer must be one of"), ("val_fraction", 1.0, r"val_fraction must be in \[0, 1\)"),
    ("val_fraction", -0.1, r"val_fraction must be in \[0, 1\)"), ("knn_k", 0, "knn_k must be a whole number >= 1"),
    ("knn_k", True, "knn_k must be a whole number >= 1"), ("input_transform", "polar", "input_transform must be one of")])
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"^EvalConfig: {message}"):
        EvalConfig(**{field: value})
    with pytest.raises(ValueError, match=f"^EvalConfig: {message}"):  # replace() checks again
        dataclasses.replace(EvalConfig(), **{field: value})


def test_linear_probe_separable_and_random_labels():
    x, y = clustered(200, seed=0)
    xt, yt = clustered(400, seed=1)
    encoder = tiny_encoder()
    result = linear_eval(encoder, x, y, xt, yt, linear_config(), num_classes=K)
    assert result.top1 >= 99.0
    # Random labels carry no information: the probe must stay near chance (25 %) on held-out data.
    g = torch.Generator().manual_seed(7)
    shuffled = linear_eval(encoder, x, y[torch.randperm(200, generator=g)], xt, yt[torch.randperm(400, generator=g)],
                           linear_config(), num_classes=K)
    assert 10.0 < shuffled.top1 < 40.0


def test_confusion_matrix_and_per_class_accuracy_agree():
    x, y = clustered(120, seed=0, spread=2.0)  # overlapping clusters: some errors
    xt, yt = clustered(90, seed=1, spread=2.0)
    r = linear_eval(tiny_encoder(), x, y, xt, yt, linear_config(), label_names=["n", "h", "s", "a"])
    cm = np.array(r.confusion)
    assert cm.shape == (K, K) and cm.sum() == 90 and r.n_test == 90
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(yt.numpy(), minlength=K))  # rows = true class
    np.testing.assert_allclose(r.per_class, 100 * np.diag(cm) / cm.sum(axis=1))
    assert r.top1 == pytest.approx(100 * np.trace(cm) / 90)
    assert 0 < r.top1 < 100 and r.label_names == ("n", "h", "s", "a")


def test_linear_eval_leaves_encoder_alone_and_finetune_trains_a_copy():
    x, y = clustered(64, seed=0)
    encoder = tiny_encoder()
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    linear_eval(encoder, x, y, x, y, linear_config(epochs=3, milestones=()))
    assert encoder.training  # mode restored
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    cfg = EvalConfig.paper("finetune", device="cpu", epochs=3, milestones=(2,), lr=0.05)
    result = finetune_eval(encoder, x, y, x, y, cfg)
    for k, v in encoder.state_dict().items():  # the caller's encoder is untouched ...
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    tuned = result.model.encoder.state_dict()  # ... the trained copy moved
    assert any(not torch.equal(tuned[k], before[k]) for k in before)


def _accuracy_by_epoch(x, y, xt, yt, epochs, **kw):
    return [linear_eval(tiny_encoder(), x, y, xt, yt, linear_config(epochs=e, milestones=(), **kw)).top1
            for e in range(1, epochs + 1)]


def test_reports_the_last_epoch_not_the_best_test_epoch():
    # Noisy labels and lr 30: test accuracy oscillates between epochs. A run of e epochs is the prefix of
    # a longer run with the same seed, so these are the test accuracies after each epoch of one run.
    x, y = clustered(96, seed=0, spread=2.5)
    xt, yt = clustered(200, seed=1, spread=2.5)
    per_epoch = _accuracy_by_epoch(x, y, xt, yt, 8)
    assert max(per_epoch) > per_epoch[-1], "precondition: the curve must not peak at the last epoch"
    final = linear_eval(tiny_encoder(), x, y, xt, yt, linear_config(epochs=8, milestones=()))
    assert final.top1 == per_epoch[-1] and final.selected_epoch == 8
    assert len(final.train_loss) == 8 and final.val_accuracy is None


def test_validation_split_selects_on_training_data_only():
    x, y = clustered(96, seed=0, spread=2.5)
    xt, yt = clustered(200, seed=1, spread=2.5)
    r = linear_eval(tiny_encoder(), x, y, xt, yt, linear_config(epochs=8, milestones=(), val_fraction=0.25))
    assert len(r.val_accuracy) == 8 and r.n_train == 72  # 24 of 96 held out, 6 per class
    assert r.selected_epoch == int(np.argmax(r.val_accuracy)) + 1  # earliest best validation epoch
    # The reported model is the one after `selected_epoch` epochs of the same run.
    short = linear_eval(tiny_encoder(), x, y, xt, yt,
                        linear_config(epochs=r.selected_epoch, milestones=(), val_fraction=0.25))
    assert r.top1 == short.top1


def test_same_seed_same_result_and_seed_matters():
    x, y = clustered(64, seed=0, spread=1.5)
    cfg = EvalConfig.paper("finetune", device="cpu", epochs=3, milestones=(2,), lr=0.05, batch_size=16)
    enc = tiny_encoder(dropout=0.5)  # dropout draws from the global RNG: seeded inside the protocol
    a, b = finetune_eval(enc, x, y, x, y, cfg), finetune_eval(enc, x, y, x, y, cfg)
    assert a.train_loss == b.train_loss and a.confusion == b.confusion
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(v, w), k
    c = finetune_eval(enc, x, y, x, y, EvalConfig.paper("finetune", device="cpu", epochs=3, milestones=(2,),
                                                        lr=0.05, batch_size=16, seed=1))
    assert c.train_loss != a.train_loss
    assert linear_eval(enc, x, y, x, y, linear_config()).to_dict() == linear_eval(enc, x, y, x, y, linear_config()).to_dict()


def test_stratified_subset_fraction_and_every_class():
    labels = np.repeat(np.arange(4), [50, 30, 10, 3])
    idx = stratified_subset(labels, 0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [5, 3, 1, 1])  # rounded, >= 1 per class
    assert len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(idx, stratified_subset(labels, 0.1, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels, 0.1, seed=1))
    idx = stratified_subset(labels, 0.5, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [25, 15, 5, 2])
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0.0, seed=0)
    train, val = stratified_holdout(labels, 0.2, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[val]), [10, 6, 2, 1])


def test_grouped_subsets_keep_clips_whole():
    # 3 classes x 10 clips x 4 windows; windows of one clip must never be split.
    clip = np.repeat(np.arange(30), 4)
    labels = clip % 3
    idx = stratified_subset(labels, 0.2, seed=0, groups=clip)
    chosen = np.unique(clip[idx])
    assert len(chosen) == 6 and len(idx) == 24  # 2 clips per class, all 4 windows of each
    np.testing.assert_array_equal(np.bincount(labels[chosen * 4]), [2, 2, 2])
    train, val = stratified_holdout(labels, 0.3, seed=0, groups=clip)
    assert set(clip[train]).isdisjoint(clip[val]) and len(train) + len(val) == 120
    assert len(np.unique(clip[val])) == 9
    with pytest.raises(ValueError, match="more than one label"):
        stratified_subset(np.array([0, 1]), 0.5, seed=0, groups=np.array([7, 7]))
    x, y = clustered(120, seed=0)
    y = torch.as_tensor(labels) % K
    r = linear_eval(tiny_encoder(), x, y, x, y, linear_config(epochs=2, milestones=(), val_fraction=0.3),
                    train_groups=clip)
    assert r.n_train == 120 - len(val) and len(r.val_accuracy) == 2


def test_semi_supervised_trains_on_the_labelled_fraction():
    x, y = clustered(200, seed=0)
    xt, yt = clustered(40, seed=1)
    cfg = EvalConfig.paper("semi-supervised", device="cpu", epochs=4, milestones=(3,), lr=0.05)
    r = semi_supervised_eval(tiny_encoder(), x, y, xt, yt, 0.1, cfg)
    assert (r.protocol, r.n_train, r.n_test, r.label_fraction) == ("semi-supervised", 20, 40, 0.1)
    assert r.top1 > 50.0  # 20 labels of well separated clusters beat chance (25 %)


def test_knn_on_clustered_features():
    x, y = clustered(80, seed=0)
    xt, yt = clustered(40, seed=1)
    for temperature in (0.07, None):
        r = knn_eval(tiny_encoder(), x, y, xt, yt, temperature=temperature, config=EvalConfig(device="cpu", knn_k=5))
        assert r.top1 == 100.0 and r.protocol == r.config["protocol"] == "knn" and r.config["knn_k"] == 5
    r = knn_eval(None, x.flatten(1), y, xt.flatten(1), yt)  # precomputed features, EvalConfig.paper("knn")
    assert r.top1 == 100.0 and r.config["knn_k"] == 10 and r.config["temperature"] == 0.07


def test_knn_k_comes_from_the_config_and_is_clamped_to_the_training_set():
    x, y = clustered(40, seed=0)
    f = x.flatten(1)
    clamped = knn_eval(None, f[:6], y[:6], f, y, config=EvalConfig.paper("knn", knn_k=50))
    assert clamped.config["knn_k"] == 50 and clamped.config["k_used"] == 6
    every = knn_eval(None, f[:6], y[:6], f, y, config=EvalConfig.paper("knn", knn_k=6))
    assert "k_used" not in every.config
    with pytest.raises(TypeError):
        knn_predict(f, y, f, K)  # knn_predict has no default k: its caller says how many vote


def test_knn_votes_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    # k = 5: three class-1 neighbours outvote two class-0 neighbours; the weighted vote with a
    # small temperature follows the two far closer class-0 neighbours.
    assert knn_predict(train, labels, query, 2, k=5, temperature=None).item() == 1
    assert knn_predict(train, labels, query, 2, k=5, temperature=0.1).item() == 0
    # k = 2 tie (one vote each after dropping a class-0 point): the more similar neighbour wins.
    train2, labels2 = train[[0, 2]], labels[[0, 2]]
    assert knn_predict(train2, labels2, query, 2, k=2, temperature=None).item() == 0


def test_spherical_stream_sees_spherical_inputs():
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.seen = nn.Linear(16 * 3, 4), []

        def forward(self, x):
            self.seen.append(x.clone())
            return self.fc(x[:, 0].flatten(1))

    rng = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 16, 3, generator=rng)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    rec = Recorder()
    linear_eval(rec, x, y, x, y, linear_config(epochs=1, milestones=(), input_transform="spherical"))
    torch.testing.assert_close(rec.seen[0], spherical_coordinates(x))
    feats = extract_features(TwoStreamEncoder(Recorder(), Recorder()), x)
    assert feats.shape == (6, 8)
    with pytest.raises(ValueError, match="input_transform"):
        linear_eval(rec, x, y, x, y, linear_config(input_transform="polar"))


def test_bad_inputs_name_the_problem():
    x, y = clustered(8, seed=0)
    with pytest.raises(ValueError, match="train_y.*unlabelled"):
        linear_eval(tiny_encoder(), x, torch.tensor([-1] * 8), x, y, linear_config())
    with pytest.raises(ValueError, match="test_x"):
        linear_eval(tiny_encoder(), x, y, x.flatten(1), y, linear_config())
    with pytest.raises(ValueError, match="label_names"):
        linear_eval(tiny_encoder(), x, y, x, y, linear_config(), num_classes=K, label_names=["a", "b"])
    with pytest.raises(TypeError, match="factory"):
        supervised_baseline(tiny_encoder(), x, y, x, y)


def test_result_json_round_trip_with_missing_class():
    x, y = clustered(40, seed=0)
    keep = y < 3  # no test sample of class 3: its accuracy is undefined (nan -> null)
    r = linear_eval(tiny_encoder(), x, y, x[keep], y[keep], linear_config(epochs=2, milestones=()), num_classes=K)
    assert math.isnan(r.per_class[3])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_class"][3] is None and "model" not in d
    back = EvalResult.from_dict(d)
    assert back.top1 == r.top1 and back.confusion == r.confusion and math.isnan(back.per_class[3])


def _result(top1, per_class, seed=0, protocol="linear"):
    return EvalResult(protocol=protocol, top1=top1, per_class=per_class, confusion=[[0, 0], [0, 0]],
                      label_names=("a", "b"), seed=seed)


def test_aggregate_seeds_mean_and_sample_std():
    agg = aggregate_seeds([_result(70.0, [60.0, math.nan], 0), _result(80.0, [80.0, 90.0], 1),
                           _result(90.0, [100.0, 70.0], 2)])
    assert agg["n"] == 3 and agg["seeds"] == [0, 1, 2]
    assert agg["top1_mean"] == pytest.approx(80.0) and agg["top1_std"] == pytest.approx(10.0)
    assert agg["per_class_mean"] == pytest.approx([80.0, 80.0])  # nan ignored
    assert agg["per_class_std"] == pytest.approx([20.0, math.sqrt(200.0)])
    assert aggregate_seeds([_result(70.0, [1.0, 2.0])])["top1_std"] is None
    with pytest.raises(ValueError, match="protocols"):
        aggregate_seeds([_result(70.0, [1.0, 2.0]), _result(70.0, [1.0, 2.0], protocol="finetune")])


def test_results_table_markdown_and_csv():
    from cagelib.lab.tables import format_mean_std, results_table  # the lab's tables: imported here, not by the module

    assert format_mean_std(79.591, 1.234) == "79.59 ± 1.23" and format_mean_std(79.591, None) == "79.59"
    rows = [{"method": "CAGE", "top1": 79.594, "std": None}, {"method": "a|b, c", "top1": 76.0, "n": 5}]
    md = results_table(rows).splitlines()
    assert md[0] == "| method | top1 | std | n |" and md[1] == "|---|---|---|---|"
    assert md[2] == "| CAGE | 79.59 |  |  |" and md[3] == "| a\\|b, c | 76.00 |  | 5 |"
    parsed = list(csv.reader(io.StringIO(results_table(rows, fmt="csv", precision=1))))
    assert parsed == [["method", "top1", "std", "n"], ["CAGE", "79.6", "", ""], ["a|b, c", "76.0", "", "5"]]


def test_supervised_baseline_with_agcn_is_seeded():
    from cagelib.methods.encoders import AGCN, AGCNConfig

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 8, 16, 3, generator=g), torch.arange(12) % 3
    # finetune's optimiser from scratch, spelled out (the supervised recipe is Adam's: test_supervised.py)
    cfg = EvalConfig.paper("supervised", optimizer="sgd", lr=0.001, device="cpu", epochs=2, milestones=(1,),
                           batch_size=6)
    make = lambda: AGCN(AGCNConfig.small())  # noqa: E731
    a = supervised_baseline(make, x, y, x, y, cfg)
    b = supervised_baseline(make, x, y, x, y, cfg)
    assert a.protocol == "supervised" and len(a.train_loss) == 2 and a.train_loss == b.train_loss
    r = linear_eval(AGCN(AGCNConfig.small()), x, y, x, y, linear_config(epochs=2, input_transform="spherical"))
    assert np.array(r.confusion).sum() == 12


def test_fit_classifier_names_a_diverged_epoch():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 1e30  # (N, F)
    y = (x[:, 0] > 0).long()
    with pytest.raises(FloatingPointError, match="in epoch 1 .*lower the learning rate"):
        fit_classifier(nn.Linear(8, 2), x, y, epochs=2, lr=1e30, milestones=[], gamma=0.1, optimizer="sgd",
                       momentum=0.9, weight_decay=0.0, batch_size=16, generator=torch.Generator().manual_seed(1),
                       device=torch.device("cpu"))
