"""A small PyTorch MLP (CPU) federated by fedcast.

Run from the repository root (the ``examples`` folder must be importable)::

    pip install 'fedcast[torch]'   # the pinned CPU build
    PYTHONPATH=. fedcast train --task examples.torch_defects:Client --rounds 5 --clients 4

The weights are the module's parameters in ``model.parameters()`` order
(float32). ``fit`` loads them, runs ``local_epochs`` epochs of mini-batch SGD
(cross-entropy) and returns the new parameters. Options: ``hidden`` (32),
``learning_rate`` (0.1), ``local_epochs`` (2), ``batch_size`` (32), plus the
data options of :mod:`examples.defect_data`. Everything is seeded from the
context, so a run repeats exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from examples.defect_data import defect_metrics, load_partition, option
from fedcast.api import ClientContext, Config, EvaluateResult, FitResult, NumPyClient, Weights
from fedcast.shared.learning.features import FeatureData

__all__ = ["Client", "make_model"]


def make_model(n_features: int, hidden: int, n_classes: int, seed: int) -> nn.Module:
    """The MLP, its initial parameters drawn from ``seed`` (torch's global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


class Client(NumPyClient):
    """One casting line's defect classifier; data is loaded only when first needed."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        options = context.options
        self.n_classes = int(option(options, "n_classes", 2))
        self.learning_rate = option(options, "learning_rate", 0.1)
        self.local_epochs = int(option(options, "local_epochs", 2))
        self.batch_size = int(option(options, "batch_size", 32))
        self.model = make_model(
            int(option(options, "n_features", 16)),
            int(option(options, "hidden", 32)),
            self.n_classes,
            context.seed,
        )
        self._data: tuple[FeatureData, FeatureData] | None = None

    @property
    def data(self) -> tuple[FeatureData, FeatureData]:
        if self._data is None:
            self._data = load_partition(self.context)
        return self._data

    def get_weights(self) -> Weights:
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    def _load(self, weights: Weights) -> None:
        with torch.no_grad():
            for param, value in zip(self.model.parameters(), weights, strict=True):
                param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def fit(self, weights: Weights, config: Config) -> FitResult:
        train, _ = self.data
        self._load(weights)
        x = torch.from_numpy(train.x.astype(np.float32))
        y = torch.tensor(train.y)
        partition = -1 if self.context.partition_id is None else self.context.partition_id
        generator = torch.Generator().manual_seed(
            int(
                np.random.SeedSequence(
                    [self.context.seed, partition + 1, int(config.get("round", 0))]
                ).generate_state(1)[0]
            )
        )
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        self.model.train()
        total, batches = 0.0, 0
        for _ in range(self.local_epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            for start in range(0, x.shape[0], self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(self.model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
                total, batches = total + float(loss.item()), batches + 1
        return FitResult(self.get_weights(), train.n_samples, {"train_loss": total / max(batches, 1)})

    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        _, test = self.data
        self._load(weights)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.from_numpy(test.x.astype(np.float32)))
            loss = float(nn.functional.cross_entropy(logits, torch.tensor(test.y)).item())
            predicted = logits.argmax(dim=1).numpy()
        return EvaluateResult(loss, test.n_samples, defect_metrics(test.y, predicted))
