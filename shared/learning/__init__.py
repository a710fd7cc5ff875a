"""Federated learning on top of any :class:`fedcast.shared.secure_sum.SecureSum` scheme.

Pure numpy library code: data sets and loaders, federated matrix factorization
(FedMF), personalized masks (FedMMF), FedAvg for small numpy models, and the
gradient-leakage attack that shows why the secure schemes matter. Import the
submodules directly (``fedcast.shared.learning.mf``, ``fedcast.shared.learning.fedavg``, ...).
"""
