"""The flows' training state: one place defines the flow, its condition and the optimiser.

Like flax's ``TrainState`` carries ``apply_fn`` and ``tx``, `FlowTrainState`
carries the flow module, the positional condition and the optimiser as static
fields next to the arrays; a checkpoint holds only the arrays (epoch,
parameters, fixed rotations, Adam state).

Each level has its own Adam state: the reference's single torch Adam only
steps parameters that received a gradient, so levels never share moments or
step counts.
"""

import functools
from typing import Any, Dict, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from bgad_jax.models import flow as flow_lib
from bgad_jax.models.pos_embed import PositionalCondition


def level_key(level: int) -> str:
  return f'level_{level}'


@functools.cache
def make_optimizer() -> optax.GradientTransformation:
  """torch.optim.Adam defaults; the learning rate is set per chunk (injected hyperparameter).

  One instance per process: states carry it as a static field, which the
  jitted train step keys its cache on, so that every run in a process (seeds,
  classes of a sweep) reuses the traced step instead of tracing it again.
  """
  return optax.inject_hyperparams(optax.adam)(learning_rate=0.0, b1=0.9, b2=0.999, eps=1e-8)


def make_flow(flow_config) -> flow_lib.NormalizingFlow:
  """The flow of ``config.flow`` (the same module for every level)."""
  precision = flow_config.matmul_precision
  return flow_lib.NormalizingFlow(flow_config.coupling_layers, flow_config.clamp_alpha,
                                  None if precision == 'default' else precision)


class LevelState(flax.struct.PyTreeNode):
  """One level's flow: what a jitted step reads and returns."""
  params: Dict[str, Any]
  opt_state: Any
  constants: Dict[str, Any]
  flow: flow_lib.NormalizingFlow = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  condition: PositionalCondition = flax.struct.field(pytree_node=False)

  def apply(self, x: jnp.ndarray, condition: Dict[str, Any], params=None):
    """(z, logdet) of vectors x [N, C] with the flow's condition keywords."""
    variables = {'params': self.params if params is None else params,
                 flow_lib.CONSTANTS: self.constants}
    return self.flow.apply(variables, x, **condition)


class FlowTrainState(flax.struct.PyTreeNode):
  """Everything about the flows of all levels; checkpoints hold the array fields."""
  epoch: jnp.ndarray                  # meta-epochs completed
  params: Dict[str, Any]              # level_key -> flow parameters
  constants: Dict[str, Any]           # level_key -> fixed rotations (never optimised)
  opt_state: Dict[str, Any]           # level_key -> Adam state
  flow: flow_lib.NormalizingFlow = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  condition: PositionalCondition = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, config, channels: Sequence[int], rng) -> 'FlowTrainState':
    """Initial flows (PyTorch-default init, fresh rotations) for the given channel counts."""
    flow, tx = make_flow(config.flow), make_optimizer()
    condition = PositionalCondition.from_config(config.flow)
    params, constants, opt_state = {}, {}, {}
    for level, channel in enumerate(channels):
      rng, key = jax.random.split(rng)
      cond = jnp.zeros((1, condition.dim)) if condition.conditional else None
      variables = flow.init(key, jnp.zeros((1, channel)), cond)
      params[level_key(level)] = variables['params']
      constants[level_key(level)] = variables[flow_lib.CONSTANTS]
      opt_state[level_key(level)] = tx.init(variables['params'])
    return cls(epoch=jnp.zeros((), jnp.int32), params=params, constants=constants,
               opt_state=opt_state, flow=flow, tx=tx, condition=condition)

  def with_flows(self, variables: Sequence[Dict[str, Any]]) -> 'FlowTrainState':
    """This state with other flows and a fresh Adam state, e.g. to start from the
    reference's initialisation (`weight_conversion.flow_variables_from_freia`).

    Args:
      variables: one ``{'params': ..., 'constants': ...}`` per level, shaped as
        this state's.

    Raises:
      ValueError: a level's variables have another structure or shape.
    """
    if len(variables) != self.num_levels:
      raise ValueError(f'{len(variables)} flows given for {self.num_levels} levels')
    params, constants, opt_state = {}, {}, {}
    for level, given in enumerate(variables):
      key = level_key(level)
      for name, mine in (('params', self.params[key]),
                         (flow_lib.CONSTANTS, self.constants[key])):
        shapes = jax.tree.map(jnp.shape, given[name])
        if shapes != jax.tree.map(jnp.shape, mine):
          raise ValueError(f'level {level}: the given {name} do not match the flow '
                           f'({shapes} vs {jax.tree.map(jnp.shape, mine)})')
      params[key] = jax.tree.map(jnp.asarray, given['params'])
      constants[key] = jax.tree.map(jnp.asarray, given[flow_lib.CONSTANTS])
      opt_state[key] = self.tx.init(params[key])
    return self.replace(params=params, constants=constants, opt_state=opt_state)

  @property
  def num_levels(self) -> int:
    return len(self.params)

  def level(self, level: int) -> LevelState:
    key = level_key(level)
    return LevelState(self.params[key], self.opt_state[key], self.constants[key],
                      self.flow, self.tx, self.condition)

  def with_level(self, level: int, state: LevelState) -> 'FlowTrainState':
    key = level_key(level)
    return self.replace(params={**self.params, key: state.params},
                        opt_state={**self.opt_state, key: state.opt_state},
                        constants={**self.constants, key: state.constants})
