"""Finding and setting hyperparameters injected with ``optax.inject_hyperparams``.

``optax.inject_hyperparams(factory)(learning_rate=..., ...)`` keeps its numeric
hyperparameters in its state (``state.hyperparams[name]``) and reads them from
there at every update, so writing a new value into the state changes the next
update. The helpers below do that anywhere in a pytree: inside
``optax.chain``, a Flax ``TrainState``, or an ``nnx.Optimizer``'s split state
(whose ``hyperparams`` entries are ``nnx`` variables, ``...['hyperparams']
['learning_rate'].value``). A hyperparameter given as a schedule is recomputed
from the step count at every update, so it cannot be set this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

HOW_TO_INJECT = (
    "wrap the optimizer with optax.inject_hyperparams, e.g. "
    "tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)"
)


def _key_name(entry: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def _injected_name(path: tuple) -> Any:
    """``name`` when ``path`` ends in ``hyperparams/name`` (or ``.../name/value``), else None."""
    names = [_key_name(entry) for entry in path]
    if names and names[-1] == "value":  # an nnx variable's array
        names = names[:-1]
    if len(names) >= 2 and names[-2] == "hyperparams":
        return names[-1]
    return None


def injected_hyperparams(tree: Any) -> dict[str, jax.typing.DTypeLike]:
    """``{name: dtype}`` of every hyperparameter injected anywhere in ``tree``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
      ...                  optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3))
      >>> names = injected_hyperparams(tx.init(jnp.zeros(3)))
      >>> print(sorted(names))
      ['b1', 'b2', 'eps', 'eps_root', 'learning_rate', 'weight_decay']
    """
    found = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = _injected_name(path)
        if name is not None:
            found[name] = getattr(leaf, "dtype", None) or jnp.result_type(leaf)
    return found


def injected_values(tree: Any) -> dict[str, jax.Array]:
    """``{name: value}`` of the hyperparameters injected in a concrete state (the last found)."""
    return {
        name: leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if (name := _injected_name(path)) is not None
    }


def scheduled_hyperparams(tree: Any) -> set[str]:
    """Names of the hyperparameters ``inject_hyperparams`` recomputes from a schedule."""
    scheduled = set()
    for path, _ in jax.tree_util.tree_leaves_with_path(tree):
        names = [_key_name(entry) for entry in path]
        for i, name in enumerate(names[:-1]):
            if name == "hyperparams_states":
                scheduled.add(names[i + 1])
    return scheduled


def set_hyperparams(tree: Any, values: Mapping[str, jax.typing.ArrayLike]) -> Any:
    """A copy of ``tree`` with every injected hyperparameter named in ``values`` replaced.

    Values are cast to the dtype already in the state. Jittable: values may be
    traced.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
      >>> state = set_hyperparams(tx.init(jnp.zeros(2)), {"learning_rate": 0.5})
      >>> print(float(state.hyperparams["learning_rate"]))
      0.5
    """

    def replace(path: tuple, leaf: Any) -> Any:
        name = _injected_name(path)
        if name in values:
            return jnp.asarray(values[name]).astype(
                getattr(leaf, "dtype", None) or jnp.result_type(leaf)
            )
        return leaf

    return jax.tree_util.tree_map_with_path(replace, tree)


def check_injected(tree: Any, names: Iterable[str], what: str) -> None:
    """Raises ``ValueError`` unless every name is an injected, unscheduled hyperparameter.

    Also when the hyperparameters are stored in a float narrower than float32
    (``inject_hyperparams`` stores them in the params' dtype by default), which
    rounds them: in bfloat16, Adam's ``b2=0.999`` is 1.0 and every update NaN.

    Args:
      tree: a state that holds the optimizer state (or an optimizer state).
      names: the hyperparameters the caller will set (e.g. ``"learning_rate"``
        and a grid's names).
      what: how to name ``tree`` in the message (e.g. ``"train_state"``).
    """
    found = injected_hyperparams(tree)
    scheduled = scheduled_hyperparams(tree)
    narrow = sorted(
        name
        for name, dtype in found.items()
        if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32
    )
    if narrow:
        dtype = jnp.dtype(found[narrow[0]])
        rounded = float(jnp.asarray(0.999, dtype))
        nan = " (Adam's b2=1 makes every update NaN)" if rounded == 1 else ""
        raise ValueError(
            f"{what}: optax.inject_hyperparams stores the hyperparameters {narrow} in {dtype} "
            f"(by default the params' dtype), which rounds them to about "
            f"{jnp.finfo(dtype).precision} digits: 0.999 becomes {rounded:g}{nan} and the "
            "range test's learning rates are rounded too; store them in float32: "
            "optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)(learning_rate=...)"
        )
    for name in names:
        if name in scheduled:
            raise ValueError(
                f"{what}: the injected hyperparameter {name!r} is a schedule, which "
                "inject_hyperparams recomputes at every update, so it cannot be set per step; "
                f"build the optimizer with a constant {name} (e.g. 1e-3) for the range test"
            )
        if name not in found:
            if found:
                raise ValueError(
                    f"{what} has no injected hyperparameter {name!r} to set (its optimizer "
                    f"injects {sorted(found)}); inject one whose factory takes {name!r} "
                    "(e.g. optax.adamw for weight_decay, not optax.adam)"
                )
            raise ValueError(
                f"{what} has no optimizer hyperparameter {name!r} to set (none is injected); "
                f"{HOW_TO_INJECT}"
            )
        if not jnp.issubdtype(found[name], jnp.floating):
            raise ValueError(
                f"{what}: the injected hyperparameter {name!r} is stored as {found[name]}, so "
                f"the values set per step would be truncated; build it with a float (e.g. "
                f"{name}=1.0, not {name}=1)"
            )
