"""A scikit-learn ``SGDClassifier`` (logistic regression) federated by fedcast.

Run from the repository root (the ``examples`` folder must be importable)::

    pip install 'fedcast[sklearn]'
    PYTHONPATH=. fedcast train --task examples.sklearn_defects:Client --rounds 5 --clients 4

The weights are ``[coef_, intercept_]`` (float64). ``fit`` warm-starts the
classifier from the global weights and runs ``local_epochs`` passes of
``partial_fit``. Options: ``learning_rate`` (0.05), ``local_epochs`` (2),
``alpha`` (1e-4, L2), plus the data options of :mod:`examples.defect_data`.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

from examples.defect_data import defect_metrics, load_partition, option
from fedcast.api import ClientContext, Config, EvaluateResult, FitResult, NumPyClient, Weights
from fedcast.shared.learning.features import FeatureData

__all__ = ["Client"]


def _seed(context: ClientContext, round_index: int) -> int:
    """A seed per (federation seed, partition, round): runs repeat exactly."""
    partition = -1 if context.partition_id is None else context.partition_id
    return int(np.random.SeedSequence([context.seed, partition + 1, round_index]).generate_state(1)[0])


class Client(NumPyClient):
    """One casting line's defect classifier; data is loaded only when first needed."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        self.n_features = int(option(context.options, "n_features", 16))
        self.n_classes = int(option(context.options, "n_classes", 2))
        self.learning_rate = option(context.options, "learning_rate", 0.05)
        self.local_epochs = int(option(context.options, "local_epochs", 2))
        self.alpha = option(context.options, "alpha", 1e-4)
        self._data: tuple[FeatureData, FeatureData] | None = None

    @property
    def data(self) -> tuple[FeatureData, FeatureData]:
        if self._data is None:
            self._data = load_partition(self.context)
        return self._data

    def _classifier(self, weights: Weights, round_index: int = 0) -> SGDClassifier:
        clf = SGDClassifier(
            loss="log_loss",
            learning_rate="constant",
            eta0=self.learning_rate,
            alpha=self.alpha,
            random_state=_seed(self.context, round_index),
        )
        # Warm start: partial_fit continues from preset parameters.
        clf.coef_ = weights[0].copy()
        clf.intercept_ = weights[1].copy()
        clf.classes_ = np.arange(self.n_classes)
        clf.t_ = 1.0
        return clf

    def get_weights(self) -> Weights:
        rows = 1 if self.n_classes == 2 else self.n_classes
        return [np.zeros((rows, self.n_features)), np.zeros(rows)]

    def fit(self, weights: Weights, config: Config) -> FitResult:
        train, _ = self.data
        clf = self._classifier(weights, int(config.get("round", 0)))
        for _ in range(self.local_epochs):
            clf.partial_fit(train.x, train.y, classes=np.arange(self.n_classes))
        proba = clf.predict_proba(train.x)
        loss = float(log_loss(train.y, proba, labels=np.arange(self.n_classes)))
        return FitResult([clf.coef_, clf.intercept_], train.n_samples, {"train_loss": loss})

    def evaluate(self, weights: Weights, config: Config) -> EvaluateResult:
        _, test = self.data
        clf = self._classifier(weights)
        proba = clf.predict_proba(test.x)
        loss = float(log_loss(test.y, proba, labels=np.arange(self.n_classes)))
        return EvaluateResult(
            loss, test.n_samples, defect_metrics(test.y, clf.classes_[proba.argmax(axis=1)])
        )
