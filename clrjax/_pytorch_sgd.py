"""The default optimizer of the range test: ``torch.optim.SGD``'s semantics in Optax."""

from __future__ import annotations

import jax
import optax


def pytorch_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformation:
    r"""SGD with momentum and coupled L2 weight decay, as ``torch.optim.SGD``.

    With gradient :math:`g_t`, parameters :math:`p_t`, momentum :math:`\mu`,
    weight decay :math:`\lambda` and learning rate :math:`\eta_t`:

    .. math::

      d_t = g_t + \lambda p_t, \quad b_t = \mu b_{t-1} + d_t \ (b_0 = d_0),
      \quad p_{t+1} = p_t - \eta_t b_t.

    Every argument may be a traced array, so a range test can sweep
    ``momentum`` and ``weight_decay`` as lanes of one compiled program.

    Args:
      learning_rate: the learning rate :math:`\eta`.
      momentum: the momentum :math:`\mu` (0 gives plain SGD).
      weight_decay: the coupled L2 coefficient :math:`\lambda`.

    Returns:
      An ``optax.GradientTransformation``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import clrjax
      >>> tx = clrjax.pytorch_sgd(0.1, momentum=0.9, weight_decay=0.5)
      >>> p = jnp.array(2.0)
      >>> u, state = tx.update(jnp.array(1.0), tx.init(p), p)
      >>> print(float(u))  # -0.1 * (1.0 + 0.5 * 2.0)
      -0.2
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    )
