"""Pretraining methods: augmentations, encoders, contrastive losses, CAGE and its ablations, the registry.

``registry.available_methods()`` lists the methods by name; ``registry.build_method(config)`` builds one.
"""
