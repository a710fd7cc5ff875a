"""Small numpy classifiers with one flat parameter vector, and mini-batch SGD.

The federated layer ships exactly one flat float64 vector per client, so every
model here stores *all* its parameters in one contiguous array and exposes the
weight matrices as reshaped views of it. ``get_params`` / ``set_params`` are
then a copy, and the gradient is assembled directly in the same layout.

Two models, both vectorized over samples:

* :class:`LogisticRegression`: sigmoid output for 2 classes, softmax for more;
* :class:`MLP`: one hidden layer (``tanh`` or ``relu``) and the same output.

Loss is the mean cross-entropy plus ``0.5 * l2 * ||W||^2`` over the weight
matrices (biases are not penalised). For two classes the output is a single
logit ``z`` with ``P(y=1) = sigmoid(z)``; for ``C > 2`` it is ``C`` logits.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedcast.shared.errors import ConfigurationError, DataError

__all__ = ["MLP", "FlatParamModel", "LogisticRegression", "Model", "train_sgd"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Layout = tuple[tuple[str, tuple[int, ...]], ...]


@runtime_checkable
class Model(Protocol):
    """What the federated code needs from a model."""

    @property
    def n_params(self) -> int: ...

    def get_params(self) -> FloatArray:
        """A copy of all parameters as one flat float64 vector."""
        ...

    def set_params(self, params: FloatArray) -> None:
        """Overwrite all parameters from a flat vector of length ``n_params``."""
        ...

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Class probabilities, shape ``(n, n_classes)``."""
        ...

    def predict(self, x: FloatArray) -> IntArray:
        """Most probable class per row."""
        ...

    def loss(self, x: FloatArray, y: IntArray) -> float:
        """Mean cross-entropy plus the L2 penalty."""
        ...

    def loss_and_grad(self, x: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
        """The loss and its gradient as a flat vector in the ``get_params`` layout."""
        ...


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")


class FlatParamModel:
    """Shared machinery: flat storage, output layer, loss and L2; subclasses add layers.

    Subclasses set ``_layout`` (name and shape of each parameter block, in flat
    order), then implement :meth:`_forward` (returning the output logits and a
    cache) and :meth:`_backward` (filling gradient views from ``dlogits``).
    Blocks whose names start with ``W`` are L2-penalised.
    """

    def __init__(self, n_features: int, n_classes: int, l2: float, layout: Layout) -> None:
        _check_positive_int("n_features", n_features)
        _check_positive_int("n_classes", n_classes, 2)
        if not (np.isfinite(l2) and l2 >= 0.0):
            raise ConfigurationError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.n_features = n_features
        self.n_classes = n_classes
        self.l2 = float(l2)
        self._layout = layout
        self._theta = np.zeros(sum(int(np.prod(shape)) for _, shape in layout))
        # Views into _theta: writing a block writes the flat vector and vice versa.
        self._p = self._views(self._theta)

    @property
    def n_outputs(self) -> int:
        """1 logit for binary (sigmoid), else one per class (softmax)."""
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def n_params(self) -> int:
        return int(self._theta.size)

    def _views(self, flat: FloatArray) -> dict[str, FloatArray]:
        views: dict[str, FloatArray] = {}
        offset = 0
        for name, shape in self._layout:
            size = int(np.prod(shape))
            views[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return views

    def get_params(self) -> FloatArray:
        return self._theta.copy()

    def set_params(self, params: FloatArray) -> None:
        params = np.asarray(params, dtype=np.float64)
        if params.shape != self._theta.shape:
            raise ConfigurationError(
                f"parameter vector has shape {params.shape}, model needs ({self.n_params},)"
            )
        if not np.all(np.isfinite(params)):
            raise ConfigurationError("parameter vector contains NaN or infinity")
        self._theta[...] = params  # in place, so the block views stay valid

    # -- subclass hooks
    def _forward(self, x: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        raise NotImplementedError

    def _backward(
        self, cache: dict[str, FloatArray], dlogits: FloatArray, grads: dict[str, FloatArray]
    ) -> None:
        raise NotImplementedError

    # -- shared output layer
    def _check_x(self, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise DataError(f"features must have shape (n, {self.n_features}), got {x.shape}")
        return x

    def _check_xy(self, x: FloatArray, y: IntArray) -> tuple[FloatArray, IntArray]:
        x = self._check_x(x)
        y = np.asarray(y)
        if y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise DataError(f"labels shape {y.shape} does not match features shape {x.shape}")
        if y.dtype.kind not in "iu" or np.any((y < 0) | (y >= self.n_classes)):
            raise DataError(f"labels must be integers in [0, {self.n_classes})")
        return x, y.astype(np.int64)

    def predict_proba(self, x: FloatArray) -> FloatArray:
        logits, _ = self._forward(self._check_x(x))
        if self.n_outputs == 1:
            p1 = _sigmoid(logits[:, 0])
            return np.column_stack([1.0 - p1, p1])
        return _softmax(logits)

    def predict(self, x: FloatArray) -> IntArray:
        logits, _ = self._forward(self._check_x(x))
        if self.n_outputs == 1:
            return (logits[:, 0] > 0.0).astype(np.int64)
        labels: IntArray = np.argmax(logits, axis=1).astype(np.int64)
        return labels

    def _penalty(self) -> float:
        return 0.5 * self.l2 * sum(float(np.sum(v * v)) for k, v in self._p.items() if k[0] == "W")

    def _data_loss(self, logits: FloatArray, y: IntArray) -> float:
        if self.n_outputs == 1:
            z = logits[:, 0]
            # log(1 + e^z) - y z, written with logaddexp so large |z| cannot overflow.
            return float(np.mean(np.logaddexp(0.0, z) - y * z))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.sum(np.exp(shifted), axis=1))
        return float(np.mean(log_norm - shifted[np.arange(y.size), y]))

    def loss(self, x: FloatArray, y: IntArray) -> float:
        x, y = self._check_xy(x, y)
        logits, _ = self._forward(x)
        return self._data_loss(logits, y) + self._penalty()

    def loss_and_grad(self, x: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
        x, y = self._check_xy(x, y)
        logits, cache = self._forward(x)
        loss = self._data_loss(logits, y) + self._penalty()
        # d(mean CE)/d logits = (probabilities - one-hot) / n for sigmoid and softmax alike.
        if self.n_outputs == 1:
            dlogits = (_sigmoid(logits[:, 0]) - y)[:, None]
        else:
            dlogits = _softmax(logits)
            dlogits[np.arange(y.size), y] -= 1.0
        dlogits /= y.size
        grad = np.zeros_like(self._theta)
        grads = self._views(grad)
        self._backward(cache, dlogits, grads)
        for name, block in self._p.items():
            if name[0] == "W":
                grads[name] += self.l2 * block
        return loss, grad


def _sigmoid(z: FloatArray) -> FloatArray:
    # 0.5 * (1 + tanh(z / 2)) equals the logistic function without exp overflow.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(logits: FloatArray) -> FloatArray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: FloatArray = e / e.sum(axis=1, keepdims=True)
    return probs


class LogisticRegression(FlatParamModel):
    """Linear classifier ``logits = x W + b``; flat layout ``[W (d x out), b (out)]``."""

    def __init__(self, n_features: int, n_classes: int = 2, *, l2: float = 0.0, seed: int = 0):
        out = 1 if n_classes == 2 else n_classes
        super().__init__(n_features, n_classes, l2, (("W", (n_features, out)), ("b", (out,))))
        # Small random weights (not zeros) so that different seeds give different starts.
        self._p["W"][...] = 0.01 * np.random.default_rng(seed).standard_normal((n_features, out))

    def _forward(self, x: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        return x @ self._p["W"] + self._p["b"], {"x": x}

    def _backward(
        self, cache: dict[str, FloatArray], dlogits: FloatArray, grads: dict[str, FloatArray]
    ) -> None:
        grads["W"][...] = cache["x"].T @ dlogits
        grads["b"][...] = dlogits.sum(axis=0)


class MLP(FlatParamModel):
    """One hidden layer: ``logits = act(x W1 + b1) W2 + b2``.

    Flat layout ``[W1 (d x h), b1 (h), W2 (h x out), b2 (out)]``. Weights are
    drawn with variance ``gain / fan_in`` (gain 1 for tanh, 2 for relu) so the
    hidden activations start in a useful range.
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int = 16,
        n_classes: int = 2,
        *,
        activation: Literal["tanh", "relu"] = "tanh",
        l2: float = 0.0,
        seed: int = 0,
    ) -> None:
        _check_positive_int("n_hidden", n_hidden)
        if activation not in ("tanh", "relu"):
            raise ConfigurationError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        out = 1 if n_classes == 2 else n_classes
        layout: Layout = (
            ("W1", (n_features, n_hidden)),
            ("b1", (n_hidden,)),
            ("W2", (n_hidden, out)),
            ("b2", (out,)),
        )
        super().__init__(n_features, n_classes, l2, layout)
        self.n_hidden = n_hidden
        self.activation = activation
        rng = np.random.default_rng(seed)
        gain = 2.0 if activation == "relu" else 1.0
        self._p["W1"][...] = rng.standard_normal((n_features, n_hidden)) * np.sqrt(gain / n_features)
        self._p["W2"][...] = rng.standard_normal((n_hidden, out)) * np.sqrt(1.0 / n_hidden)

    def _forward(self, x: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        pre = x @ self._p["W1"] + self._p["b1"]
        hidden = np.tanh(pre) if self.activation == "tanh" else np.maximum(pre, 0.0)
        return hidden @ self._p["W2"] + self._p["b2"], {"x": x, "pre": pre, "hidden": hidden}

    def _backward(
        self, cache: dict[str, FloatArray], dlogits: FloatArray, grads: dict[str, FloatArray]
    ) -> None:
        hidden = cache["hidden"]
        grads["W2"][...] = hidden.T @ dlogits
        grads["b2"][...] = dlogits.sum(axis=0)
        dhidden = dlogits @ self._p["W2"].T
        if self.activation == "tanh":
            dpre = dhidden * (1.0 - hidden * hidden)
        else:
            dpre = dhidden * (cache["pre"] > 0.0)
        grads["W1"][...] = cache["x"].T @ dpre
        grads["b1"][...] = dpre.sum(axis=0)


def train_sgd(
    model: Model,
    x: FloatArray,
    y: IntArray,
    *,
    epochs: int,
    batch_size: int | None,
    learning_rate: float,
    seed: int | np.random.Generator = 0,
) -> list[float]:
    """Mini-batch SGD in place; return the mean mini-batch loss of each epoch.

    Each epoch visits the samples in a fresh permutation from the seeded
    generator and takes one step per batch of ``batch_size`` (the last batch
    may be smaller). ``batch_size=None`` (or >= n) means full-batch gradient
    descent: one step per epoch, no shuffling needed. The reported loss of a
    batch is taken before its step, averaged with batch-size weights.
    """
    _check_positive_int("epochs", epochs)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    if not (np.isfinite(learning_rate) and learning_rate > 0.0):
        raise ConfigurationError(f"learning_rate must be a finite number > 0, got {learning_rate}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    n = int(y.shape[0]) if y.ndim == 1 else 0
    if n == 0 or x.ndim != 2 or x.shape[0] != n:
        raise DataError(f"need matching non-empty x (n, d) and y (n,), got {x.shape}, {y.shape}")
    rng = np.random.default_rng(seed)
    step = n if batch_size is None else min(batch_size, n)
    params = model.get_params()
    history: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(n) if step < n else np.arange(n)
        total = 0.0
        for start in range(0, n, step):
            batch = order[start : start + step]
            loss, grad = model.loss_and_grad(x[batch], y[batch])
            params -= learning_rate * grad
            model.set_params(params)
            total += loss * batch.size
        history.append(total / n)
    return history
