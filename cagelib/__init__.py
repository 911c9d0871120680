"""cagelib: self-supervised skeleton-based gait emotion recognition (CAGE, AAAI 2023).

Folders follow the data flow (``docs/design.md``): ``data`` (files -> GaitSet -> windows -> tasks),
``methods`` (augmentations, encoders, losses, CAGE and its ablations, the method registry), ``pretrain``
(the loop, checkpoints, fast path, DDP), ``evaluate`` (features, classifiers, protocols, metrics) and
``lab`` (notebooks, demo, batch grid). Everything outside ``lab`` imports with torch, NumPy, h5py and
scikit-learn alone. This file imports nothing.
"""
__version__ = "0.1.0"
