"""scikit-learn's MLP losses on the output layer's pre-activations, with sample weights.

Each returns ``(loss, dz)``: the 0-d loss on the device and ∂/∂z of what scikit-learn
back-propagates, for z (n, K) the last Linear layer's output, targets Y (n, K) in z's dtype,
optional per-sample weights w (n,) and S = Σᵢ wᵢ (n without weights, a host number):

==============  =========================================  ===========================
output          loss (scikit-learn's)                      dz
==============  =========================================  ===========================
softmax         −1/S Σᵢ wᵢ Σₖ Yᵢₖ log softmax(zᵢ)ₖ         wᵢ (softmax(zᵢ) − Yᵢ) / S
logistic        1/S Σᵢ wᵢ Σₖ BCE(zᵢₖ, Yᵢₖ)                 wᵢ (σ(zᵢ) − Yᵢ) / S
identity        1/(2 K S) Σᵢ wᵢ Σₖ (zᵢₖ − Yᵢₖ)²             wᵢ (zᵢ − Yᵢ) / S
exp (Poisson)   1/S Σᵢ wᵢ Σₖ Yᵢₖ log(Yᵢₖ/μᵢₖ) − Yᵢₖ + μᵢₖ   wᵢ (μᵢ − Yᵢ) / S,  μ = e^z
==============  =========================================  ===========================

As in scikit-learn, dz is the canonical-link "output − target" for every pair, which for the
squared error is K times the gradient of the reported loss (its mean over the K outputs): the
trajectories are scikit-learn's. Log-probabilities come from the logits (a max-shifted
log-softmax; BCE as max(z, 0) − z y + log(1 + e^−|z|)), where scikit-learn clips probabilities
to [ε, 1 − ε] first: the values agree except for a sample whose probability of its own class is
below machine epsilon, where scikit-learn's term stops growing at −log ε.
"""

from __future__ import annotations

from .._native import inner, maximizer, row_sums, summer
from .._typing import Array, Namespace
from ..functional.activations import sigmoid
from ..functional.losses import binary_cross_entropy_with_logits, cross_entropy, mse

__all__ = ["OUTPUTS", "output_loss"]

OUTPUTS = ("softmax", "logistic", "identity", "exp")


def output_loss(
    output: str,
    z: Array,
    Y: Array,
    w: Array | None,
    total: float,
    xp: Namespace,
) -> tuple[Array, Array]:
    """scikit-learn's loss and back-propagated δ for one batch (see the module docstring).

    Parameters
    ----------
    output : {"softmax", "logistic", "identity", "exp"}
        The output activation (scikit-learn's ``out_activation_``).
    z : array (n, K)
        Pre-activations of the output layer.
    Y : array (n, K)
        Targets (one-hot or indicator columns for classifiers), z's dtype and device.
    w : array (n, 1) or None
        Sample weights as a column, z's dtype and device.
    total : float
        S: Σ w over the batch, or n.
    xp : namespace
    """
    inv = 1.0 / total
    if output == "softmax":
        if w is None:
            return _one_hot_log_loss(z, Y, inv, xp)
        # Σ_c q = wᵢ for q = wᵢ Yᵢ: the library's gradient p Σ_c q − q is wᵢ (p − Yᵢ)
        loss, dz = cross_entropy(z, Y * w, reduction="sum")
        dz *= inv
        return loss * inv, dz
    if output == "logistic":
        if w is None:
            loss, dz = binary_cross_entropy_with_logits(z, Y, reduction="sum")
            dz *= inv
            return loss * inv, dz
        step = xp.astype(z >= 0.0, z.dtype)
        terms = (step - Y) * z
        terms += xp.log1p(xp.exp(-xp.abs(z)))
        loss = xp.sum(terms * w) * inv
        dz = sigmoid(z, xp=xp)
        dz -= Y
        dz *= w * inv
        return loss, dz
    if output == "identity":
        k = z.shape[1]
        if w is None:
            loss, dz = mse(z, Y, reduction="sum")  # Σ d², 2 d
            dz *= 0.5 * inv
            return loss * (0.5 * inv / k), dz
        dz = z - Y
        loss = xp.sum(dz * dz * w) * (0.5 * inv / k)
        dz *= w * inv
        return loss, dz
    if output == "exp":
        mu = xp.exp(z)
        positive = Y > 0.0
        ylogy = xp.where(positive, Y * xp.log(xp.where(positive, Y, xp.ones_like(Y))),
                         xp.zeros_like(Y))
        terms = ylogy - Y * z - Y + mu
        dz = mu - Y
        if w is None:
            loss = xp.sum(terms) * inv
            dz *= inv
        else:
            loss = xp.sum(terms * w) * inv
            dz *= w * inv
        return loss, dz
    msg = f"output_loss: unknown output activation {output!r}; expected one of {OUTPUTS}"
    raise ValueError(msg)


def _one_hot_log_loss(z: Array, Y: Array, inv: float, xp: Namespace) -> tuple[Array, Array]:
    """−1/n Σᵢ Σₖ Yᵢₖ log softmax(zᵢ)ₖ and (softmax(z) − Y) / n for one-hot rows Y (Σₖ Yᵢₖ
    = 1, as the label binarizer makes them for a softmax output): with the max-shifted
    logits s and ℓᵢ = log Σₖ e^sᵢₖ, the loss is (Σᵢ ℓᵢ − Σᵢₖ Yᵢₖ sᵢₖ) / n.

    The library's cross-entropy computes the same from any class probabilities (Σₖ Yᵢₖ
    read per row, 0 · log 0 guarded, every argument checked); with what an estimator's
    fit guarantees that is ~40 % of the batch's non-product time (digits: 97 against 59 µs
    for (200, 10) float64), the step's largest cost after its products.
    """
    shifted = z - maximizer(xp)(z, axis=1, keepdims=True)
    p = xp.exp(shifted)
    sum_exp = row_sums(p, xp)
    p /= sum_exp  # the softmax, in place
    loss = (summer(xp)(xp.log(sum_exp)) - inner(Y, shifted, xp)) * inv  # Σᵢₖ Yᵢₖ sᵢₖ: one dot
    p -= Y
    p *= inv
    return loss, p
