"""cagelib: self-supervised skeleton-based gait emotion recognition (CAGE, AAAI 2023).

The training core (skeleton, coordinates, data, augment, model, contrast, train, evaluate) imports with
torch, NumPy, h5py and scikit-learn alone; plotting and widgets (viz, player) import their libraries lazily.
"""
__version__ = "0.1.0"
