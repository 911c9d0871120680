"""Augmentations: the defining property of each (Eq. 1, 3, 4), padding, seeding and edge cases."""
from __future__ import annotations

import pytest
import torch

from cagelib.methods.augment import (AmbiguityTransform, Compose, Crop, JointJitter, Shear, SpeedDown, SpeedUp,
                             ambiguity_transform, contrastive_views, make_generator, valid_lengths)

ALL_AUGMENTATIONS = [
    Crop(), JointJitter(), SpeedUp(), SpeedUp(fill="repeat"), SpeedDown(), Shear(), Shear(joint_fraction=1.0),
    AmbiguityTransform("up"), AmbiguityTransform("down"), contrastive_views(),
]
IDS = [repr(a)[:40] for a in ALL_AUGMENTATIONS]


def gen(seed: int = 0) -> torch.Generator:
    return make_generator(seed)


def random_batch(n=4, t=30, lengths=None, seed=0) -> torch.Tensor:
    """Random non-zero frames, zero after ``lengths[i]``."""
    x = torch.rand(n, t, 16, 3, generator=gen(seed)) + 0.5  # (N, T, V, C), no zero frame
    if lengths is not None:
        x[torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return x


def frame_index_batch(n=4, t=30, lengths=None) -> torch.Tensor:
    """Every coordinate of frame t equals t + 1, so an output's values name its source frame."""
    x = (torch.arange(t, dtype=torch.float32) + 1)[None, :, None, None].expand(n, t, 16, 3).clone()
    if lengths is not None:
        x[torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return x


def source_frames(y: torch.Tensor) -> torch.Tensor:
    """Source frame index of each output frame of a frame-index batch (-1 for zero frames): (N, T)."""
    return y[:, :, 0, 0].round().long() - 1


# --- common properties -------------------------------------------------------------------------------

@pytest.mark.parametrize("aug", ALL_AUGMENTATIONS, ids=IDS)
def test_shape_dtype_device_preserved_and_padding_kept(aug):
    x = random_batch(lengths=[30, 20, 7, 1])
    y = aug(x, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    new_lengths = valid_lengths(y)
    assert (new_lengths <= valid_lengths(x)).all()  # never longer; padding stays zero


@pytest.mark.parametrize("aug", ALL_AUGMENTATIONS, ids=IDS)
def test_same_seed_same_output_different_seed_different_output(aug):
    x = random_batch(n=3, t=40)
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1)))
    assert not torch.equal(aug(x, gen(1)), aug(x, gen(2)))


@pytest.mark.parametrize("aug", ALL_AUGMENTATIONS, ids=IDS)
def test_global_rng_untouched(aug):
    state = torch.get_rng_state()
    aug(random_batch(), gen())
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("aug", ALL_AUGMENTATIONS, ids=IDS)
def test_edge_cases_batch_of_one_and_single_frame(aug):
    x = random_batch(n=1, t=25)
    assert aug(x, gen()).shape == (1, 25, 16, 3)
    single = random_batch(n=3, t=1)
    y = aug(single, gen())
    assert y.shape == single.shape and valid_lengths(y).tolist() == [1, 1, 1]
    empty = torch.zeros(2, 10, 16, 3)  # an all-zero sequence stays all zero
    assert torch.equal(aug(empty, gen()), empty)


def test_each_sample_gets_its_own_draw():
    x = random_batch(n=1, t=40).expand(6, -1, -1, -1).contiguous()
    for aug in (Crop(), JointJitter(), SpeedUp(), SpeedDown(), Shear()):
        y = aug(x, gen(3))
        distinct = {tuple(y[i].flatten()[:200].tolist()) for i in range(6)}
        assert len(distinct) > 1, aug


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, T, V, C\)"):
        Crop()(torch.zeros(10, 16, 3), gen())
    with pytest.raises(ValueError, match="no frames"):
        SpeedUp()(torch.zeros(2, 0, 16, 3), gen())
    with pytest.raises(TypeError, match="torch.Generator"):
        Shear()(random_batch(), None)
    with pytest.raises(ValueError, match="floating"):
        JointJitter()(torch.ones(2, 5, 16, 3, dtype=torch.long), gen())
    with pytest.raises(ValueError, match="num_joints"):
        JointJitter(num_joints=17)(random_batch(), gen())
    for bad in (lambda: SpeedUp(rate=0), lambda: SpeedUp(fill="edge"), lambda: SpeedDown(rate=1.5),
                lambda: Crop(padding_ratio=0), lambda: AmbiguityTransform(speed="sideways")):
        with pytest.raises(ValueError):
            bad()


def test_valid_lengths():
    x = random_batch(n=4, t=12, lengths=[12, 5, 1, 0])
    x[0, 3] = 0  # an interior zero frame does not shorten the sequence
    assert valid_lengths(x).tolist() == [12, 5, 1, 0]
    assert valid_lengths(x).dtype == torch.int64


# --- Crop --------------------------------------------------------------------------------------------

def test_crop_of_unpadded_sequences_is_a_contiguous_reflected_window_without_zeros():
    t = 60
    y = Crop(padding_ratio=6)(frame_index_batch(n=64, t=t), gen())
    src = source_frames(y)  # (N, T)
    assert (src >= 0).all()  # no zero frame
    pad = t // 6
    # Reconstruct the padded index sequence [pad-1..0, 0..T-1, T-1..T-pad] and find each crop in it.
    padded = torch.cat([torch.arange(pad).flip(0), torch.arange(t), torch.arange(t - pad, t).flip(0)])
    windows = padded.unfold(0, t, 1)  # (2 pad + 1, T)
    matches = (src[:, None, :] == windows[None]).all(-1)  # (N, 2 pad + 1)
    assert matches.any(dim=1).all()
    assert matches.float().argmax(dim=1).unique().numel() > 5  # offsets vary across samples


def test_crop_of_padded_sequences_keeps_length_and_zeros_only_in_padding():
    lengths = [40, 13, 6, 1]
    y = Crop()(frame_index_batch(n=4, t=40, lengths=lengths), gen(5))
    src = source_frames(y)
    for i, length in enumerate(lengths):
        assert (src[i, :length] >= 0).all() and (src[i, :length] < length).all()
        assert (src[i, length:] == -1).all()


# --- Joint Jittering (Eq. 1) ------------------------------------------------------------------------

@pytest.mark.parametrize("j", [0, 1, 10, 16])
def test_joint_jitter_touches_exactly_j_joints_with_one_matrix_per_sample(j):
    x = random_batch(n=8, t=5)
    y = JointJitter(num_joints=j)(x, gen())
    changed = (y != x).any(dim=-1).any(dim=1)  # (N, V)
    assert (changed.sum(dim=1) == j).all()
    for i in range(8):  # the changed joints share one 3x3 matrix: solve it from them and check
        joints = changed[i].nonzero().flatten()
        if j == 0:
            continue
        a, b = x[i][:, joints].reshape(-1, 3), y[i][:, joints].reshape(-1, 3)
        matrix = torch.linalg.lstsq(a, b).solution
        assert torch.allclose(a @ matrix, b, atol=1e-4)
        assert matrix.abs().max() <= 1.0 + 1e-4


# --- Speed-up ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [2, 4, 8])
def test_speed_up_keeps_every_rth_frame_in_order_from_a_start_below_r(rate):
    t = 50
    lengths = [50, 50, 50, 33, 9, 3]
    y = SpeedUp(rate=rate)(frame_index_batch(n=6, t=t, lengths=lengths), gen(rate))
    src = source_frames(y)
    for i, length in enumerate(lengths):
        start = src[i, 0].item()
        assert 0 <= start < min(rate, length)
        expected = torch.arange(start, length, rate)
        kept = len(expected)
        assert torch.equal(src[i, :kept], expected)
        assert (src[i, kept:] == -1).all()  # zero-padded back to T


def test_speed_up_starts_vary_over_all_phases():
    y = SpeedUp(rate=4)(frame_index_batch(n=200, t=40), gen())
    assert set(source_frames(y)[:, 0].tolist()) == {0, 1, 2, 3}


def test_speed_up_repeat_fill_cycles_kept_frames_up_to_the_valid_length():
    lengths = [40, 21]
    y = SpeedUp(rate=4, fill="repeat")(frame_index_batch(n=2, t=40, lengths=lengths), gen())
    src = source_frames(y)
    for i, length in enumerate(lengths):
        kept = torch.arange(src[i, 0].item(), length, 4)
        assert torch.equal(src[i, :length], kept.repeat(length // len(kept) + 1)[:length])
        assert (src[i, length:] == -1).all()


# --- Speed-down (Eq. 3) -----------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 1.0])
def test_speed_down_interpolates_a_window_of_r_l_frames_back_to_l(rate):
    n, t = 16, 60
    lengths = [60] * 8 + [41, 41, 20, 20, 7, 7, 2, 1]
    x = random_batch(n=n, t=t, lengths=lengths)
    index = frame_index_batch(n=n, t=t, lengths=lengths)
    x[..., 0] = index[..., 0]  # channel 0 carries the frame number, channels 1-2 are random
    y = SpeedDown(rate=rate)(x, gen(7))
    assert torch.equal(valid_lengths(y), valid_lengths(x))
    for i, length in enumerate(lengths):
        window = min(max(1, int(rate * length + 0.5)), length)
        position = y[i, :length, 0, 0] - 1  # fractional source frame of every output frame
        first, last = int(round(position[0].item())), int(round(position[-1].item()))
        assert last - first == window - 1 and 0 <= first <= length - window
        # endpoints are exactly the window's first and last frames
        assert torch.equal(y[i, 0], x[i, first]) and torch.equal(y[i, length - 1], x[i, last])
        # positions are evenly spaced, and every frame lies on the segment between its neighbours
        if length > 1:
            step = torch.diff(position)
            assert torch.allclose(step, torch.full_like(step, (window - 1) / (length - 1)), atol=1e-4)
        low = position.floor().long().clamp(max=last)
        high = (low + 1).clamp(max=last)
        frac = (position - low)[:, None, None]
        expected = x[i, low] * (1 - frac) + x[i, high] * frac
        assert torch.allclose(y[i, :length], expected, atol=1e-5)
        assert (y[i, length:] == 0).all()


# --- Shear (Eq. 4) ----------------------------------------------------------------------------------

def test_shear_has_unit_diagonal_bounded_off_diagonal_and_leaves_other_joints_alone():
    n, amplitude = 32, 0.5
    eye = torch.eye(3)
    # frame c holds the unit vector e_c on every joint: the output row is row c of the matrix
    x = eye[None, :, None, :].expand(n, 3, 16, 3).contiguous()  # (N, 3, V, 3)
    y = Shear(amplitude=amplitude, joint_fraction=0.5)(x, gen())
    changed = (y != x).any(dim=-1).any(dim=1)  # (N, V)
    assert (changed.sum(dim=1) == 8).all()
    for i in range(n):
        joints = changed[i].nonzero().flatten()
        matrices = y[i][:, joints].permute(1, 0, 2)  # (k, 3, 3): one matrix row per frame
        assert torch.equal(matrices, matrices[:1].expand_as(matrices))  # one matrix per sample
        matrix = matrices[0]
        assert torch.equal(matrix.diagonal(), torch.ones(3))
        off = matrix[~eye.bool()]
        assert (off.abs() <= amplitude).all() and (off != 0).all()
        untouched = ~changed[i]
        assert torch.equal(y[i][:, untouched], x[i][:, untouched])


def test_shear_joint_fraction_sets_the_count():
    x = random_batch(n=5, t=4)
    for fraction, count in ((0.0, 0), (0.25, 4), (1.0, 16)):
        y = Shear(joint_fraction=fraction)(x, gen())
        assert ((y != x).any(dim=-1).any(dim=1).sum(dim=1) == count).all()


# --- ambiguity transform and composition -------------------------------------------------------------

def test_ambiguity_transform_is_speed_change_then_shear_on_one_generator():
    x = random_batch(n=4, t=40, lengths=[40, 30, 12, 5])
    for speed, change in (("up", SpeedUp(4)), ("down", SpeedDown(0.3))):
        expected = Compose([change, Shear()])(x, gen(11))
        assert torch.equal(AmbiguityTransform(speed)(x, gen(11)), expected)
        assert torch.equal(ambiguity_transform(x, gen(11), speed=speed), expected)
    assert torch.equal(AmbiguityTransform("up", shear=None)(x, gen(2)), SpeedUp(4)(x, gen(2)))


def test_contrastive_views_is_crop_then_jitter():
    x = random_batch(n=3, t=30)
    views = contrastive_views()
    assert [type(a) for a in views.transforms] == [Crop, JointJitter]
    assert views.transforms[0].padding_ratio == 6 and views.transforms[1].num_joints == 10
    g = gen(4)
    expected = JointJitter()(Crop()(x, g), g)
    assert torch.equal(views(x, gen(4)), expected)
