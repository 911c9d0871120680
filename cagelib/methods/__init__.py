"""Pretraining methods: augmentations, encoders, contrastive losses, CAGE and its ablations, the peers.

``registry.available_methods()`` lists the methods by name; ``registry.build_method(config)`` builds one. Each
method module registers itself when imported; the imports below register the built-in ones (in this order).
"""
from . import cage, mamp, aimclr, crossclr, isc, cage_mamp  # noqa: F401  (each registers its methods)
