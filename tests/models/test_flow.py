"""bgad_jax.models.flow against FrEIA 0.2 (the reference's flow) and against calculus."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bgad_jax.models import flow as flow_lib
from bgad_jax.models.weight_conversion import flow_variables_from_freia
from references import freia_reference

COND_DIM = 128
TOL = 1e-5
# x -> z -> x passes 16 coupling layers whose activations reach |z| ~ 10, so
# float32 rounding alone leaves ~1e-5: 1.03e-5 measured on this CPU and
# 1.28e-5 on an H100 (41 channels; benchmarks/RESULTS.md). A wrong inverse is
# off by far more than this.
ROUND_TRIP_ATOL = 5e-5


def _inputs(channels, n=257, cond_dim=COND_DIM, seed=0):
  rng = np.random.default_rng(seed)
  # Per-vector scales spread lp over the clamp's and the focal weights' ranges.
  scale = rng.uniform(0.3, 3.0, size=(n, 1))
  x = (rng.standard_normal((n, channels)) * scale).astype(np.float32)
  cond = rng.standard_normal((n, cond_dim)).astype(np.float32)
  return x, cond


def _perturb_torch_params(model, seed=1):
  """Moves trainable parameters off their init (mildly: fp32 stays well conditioned)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in model.parameters():
      if param.requires_grad:
        param.add_(0.05 * torch.randn(param.shape, generator=gen))


@pytest.mark.parametrize('channels', [3, 24, 41])
@pytest.mark.parametrize('conditional', [True, False])
def test_matches_freia_forward(channels, conditional):
  model = freia_reference.build_freia_flow(
      channels, cond_dim=COND_DIM if conditional else None, seed=channels)
  _perturb_torch_params(model)
  x, cond = _inputs(channels)
  with torch.no_grad():
    lp_ref, z_ref, logdet_ref = freia_reference.freia_lp(
        model, torch.from_numpy(x), torch.from_numpy(cond) if conditional else None)

  variables = flow_variables_from_freia(model.state_dict())
  flow = flow_lib.NormalizingFlow(coupling_layers=8, clamp_alpha=1.9)
  z, logdet = jax.jit(flow.apply)(variables, x, cond if conditional else None)
  lp = flow_lib.per_dim_log_likelihood(z, logdet)
  logp = flow_lib.log_likelihood(z, logdet)

  np.testing.assert_allclose(z, z_ref.numpy(), rtol=TOL, atol=TOL)
  np.testing.assert_allclose(logdet, logdet_ref.numpy(), rtol=TOL, atol=TOL)
  np.testing.assert_allclose(lp, lp_ref.numpy(), rtol=TOL, atol=TOL)
  np.testing.assert_allclose(logp, lp_ref.numpy() * channels, rtol=TOL, atol=TOL)


def test_clamp_and_scaling_matter():
  """The equivalence above is sensitive to the soft clamp and the 0.1 scaling."""
  channels = 24
  model = freia_reference.build_freia_flow(channels, cond_dim=COND_DIM, seed=3)
  _perturb_torch_params(model)
  x, cond = _inputs(channels)
  with torch.no_grad():
    _, z_ref, _ = freia_reference.freia_lp(model, torch.from_numpy(x), torch.from_numpy(cond))
  variables = flow_variables_from_freia(model.state_dict())
  z_other_clamp, _ = flow_lib.NormalizingFlow(8, clamp_alpha=2.0).apply(variables, x, cond)
  assert np.max(np.abs(z_other_clamp - z_ref.numpy())) > 1e-3


def test_init_state():
  channels = 24
  flow = flow_lib.NormalizingFlow(coupling_layers=2)
  x, cond = _inputs(channels, n=8)
  variables = flow.init(jax.random.key(0), x, cond)
  block = variables['params']['blocks_0']
  # Global affine starts as the identity scale and zero offset.
  np.testing.assert_allclose(0.1 * flow_lib.softplus_beta_half(block['global_scale']),
                             1.0, rtol=1e-6)
  np.testing.assert_array_equal(block['global_offset'], 0.0)
  # Rotation is a constant, not a parameter, and special orthogonal.
  assert 'rotation' not in block
  rotation = variables[flow_lib.CONSTANTS]['blocks_0']['rotation']
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(channels), atol=1e-5)
  assert abs(np.linalg.det(rotation) - 1.0) < 1e-4
  other = variables[flow_lib.CONSTANTS]['blocks_1']['rotation']
  assert np.max(np.abs(other - rotation)) > 0.1  # one draw per block
  # Subnet: PyTorch-default uniform bounds; widths 2 * (ceil(C/2) + D) and 2 * floor(C/2).
  kernel_in = block['subnet']['dense_in']['kernel']
  assert kernel_in.shape == (12 + COND_DIM, 2 * (12 + COND_DIM))
  assert block['subnet']['dense_out']['kernel'].shape == (2 * (12 + COND_DIM), 24)
  bound = 1.0 / np.sqrt(12 + COND_DIM)
  assert np.max(np.abs(kernel_in)) <= bound
  assert np.max(np.abs(kernel_in)) > 0.9 * bound


@pytest.mark.parametrize('channels', [3, 24, 41])
def test_inverse_round_trip(channels):
  flow = flow_lib.NormalizingFlow(coupling_layers=8)
  x, cond = _inputs(channels, n=64)
  variables = flow.init(jax.random.key(channels), x, cond)
  z, logdet = flow.apply(variables, x, cond)
  x_back, logdet_back = flow.apply(variables, z, cond, reverse=True)
  np.testing.assert_allclose(x_back, x, atol=ROUND_TRIP_ATOL, rtol=TOL)
  np.testing.assert_allclose(logdet_back, -logdet, atol=TOL, rtol=TOL)


def _gathered(tables, indices):
  return jnp.concatenate([t[i] for t, i in zip(tables, indices)], axis=-1)


# One [7, 6] table, or a [7, 4] and a [3, 2] table (the factored positional
# condition's layout: each vector's condition is its rows of both, concatenated).
@pytest.mark.parametrize('widths,rows', [((6,), (7,)), ((4, 2), (7, 3))])
def test_indexed_condition_tables_equal_gathered_rows(widths, rows):
  # The table path projects each table row once; values and all gradients
  # (parameters and tables) must equal those of the [N, D] gathered rows.
  flow = flow_lib.NormalizingFlow(coupling_layers=3)
  x, cond = _inputs(9, n=40, cond_dim=sum(widths))
  rng = np.random.default_rng(3)
  tables, start = [], 0
  for width, count in zip(widths, rows):
    tables.append(jnp.asarray(cond[:count, start:start + width]))
    start += width
  indices = tuple(jnp.asarray(rng.integers(0, count, size=40), jnp.int32) for count in rows)
  variables = flow.init(jax.random.key(0), x, _gathered(tables, indices))

  def total(params, tables, indexed):
    if indexed:
      kwargs = (dict(cond=tables[0], cond_index=indices[0]) if len(tables) == 1
                else dict(cond=tuple(tables), cond_index=indices))
    else:
      kwargs = dict(cond=_gathered(tables, indices))
    z, logdet = flow.apply({**variables, 'params': params}, x, **kwargs)
    return jnp.sum(flow_lib.per_dim_log_likelihood(z, logdet) ** 2)

  grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1)), static_argnums=2)
  (value, (g_params, g_tables)) = grad(variables['params'], tables, True)
  (expected, (e_params, e_tables)) = grad(variables['params'], tables, False)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  for a, b in zip([*g_tables, *jax.tree.leaves(g_params)],
                  [*e_tables, *jax.tree.leaves(e_params)]):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(np.abs(b).max()))   # fp32 sums
  assert all(float(jnp.abs(g).max()) > 0 for g in g_tables)


def test_condition_tables_need_an_index_each():
  flow = flow_lib.NormalizingFlow(coupling_layers=1)
  x, cond = _inputs(4, n=6, cond_dim=4)
  with pytest.raises(ValueError, match='one index per table'):
    flow.init(jax.random.key(0), x, (cond[:, :2], cond[:, 2:]))


def test_first_layer_derivatives_equal_autodiff_of_one_matmul():
  # The custom JVP of the [x1, c] layer must give the derivatives of the plain
  # matmul: forward mode, and reverse mode for any subset of its inputs.
  rng = np.random.default_rng(5)
  x1, cond = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((9, 4), (9, 6)))
  kernel = jnp.asarray(rng.standard_normal((10, 7)), jnp.float32)
  plain = lambda a, c, k: jnp.dot(jnp.concatenate([a, c], axis=-1), k)
  ours = flow_lib._concat_dense
  tangents = tuple(jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
                   for v in (x1, cond, kernel))
  got = jax.jvp(ours, (x1, cond, kernel), tangents)
  want = jax.jvp(plain, (x1, cond, kernel), tangents)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.standard_normal((9, 7)), jnp.float32)
  for argnums in [(0, 1, 2), (2,), (0,), (1,)]:
    got = jax.grad(lambda *v: jnp.sum(weights * ours(*v)), argnums)(x1, cond, kernel)
    want = jax.grad(lambda *v: jnp.sum(weights * plain(*v)), argnums)(x1, cond, kernel)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_table_kernel_tangent_forms_transpose_alike():
  # CPU takes (table @ dK)[index] (its transpose sums the gradient per table
  # row), other platforms table[index] @ dK (a deterministic matmul): same
  # values and the same kernel gradient.
  rng = np.random.default_rng(6)
  table = jnp.asarray(rng.standard_normal((5, 6)), jnp.float32)
  index = jnp.asarray(rng.integers(0, 5, size=31), jnp.int32)
  d_kernel = jnp.asarray(rng.standard_normal((6, 8)), jnp.float32)
  grad = jnp.asarray(rng.standard_normal((31, 8)), jnp.float32)
  forms = [flow_lib._project_tangent_rows, flow_lib._gathered_tangent_rows]
  values = [form(table, index, d_kernel) for form in forms]
  np.testing.assert_allclose(values[0], values[1], rtol=1e-5, atol=1e-5)
  transposed = [jax.linear_transpose(lambda k, f=form: f(table, index, k), d_kernel)(grad)[0]
                for form in forms]
  np.testing.assert_allclose(transposed[0], transposed[1], rtol=1e-5, atol=1e-5)
  expected = np.asarray(table)[np.asarray(index)].T @ np.asarray(grad)
  np.testing.assert_allclose(transposed[0], expected, rtol=1e-5, atol=1e-5)


def test_indexed_condition_forward_mode_equals_gathered_rows():
  flow = flow_lib.NormalizingFlow(coupling_layers=2)
  x, table = _inputs(5, n=24, cond_dim=4)
  table = jnp.asarray(table[:6])
  index = jnp.asarray(np.arange(24) % 6, jnp.int32)
  variables = flow.init(jax.random.key(0), x, table[index])
  direction = jax.tree.map(lambda p: jnp.full_like(p, 0.01), variables['params'])

  def lp(params, indexed):
    kwargs = dict(cond=table, cond_index=index) if indexed else dict(cond=table[index])
    z, logdet = flow.apply({**variables, 'params': params}, x, **kwargs)
    return flow_lib.per_dim_log_likelihood(z, logdet)

  jvp = jax.jit(lambda indexed: jax.jvp(lambda p: lp(p, indexed), (variables['params'],),
                                        (direction,)), static_argnums=0)
  got, want = jvp(True), jvp(False)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(got[1]).max()) > 0


@pytest.mark.parametrize('conditional', [True, False])
def test_logdet_is_log_abs_det_jacobian(conditional):
  channels = 7
  flow = flow_lib.NormalizingFlow(coupling_layers=4)
  x, cond = _inputs(channels, n=5, cond_dim=12)
  cond = cond if conditional else None
  variables = flow.init(jax.random.key(1), x, cond)
  # Move parameters off their init so that the coupling is not near identity.
  leaves, treedef = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(2), len(leaves))
  leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  variables = {**variables, 'params': jax.tree.unflatten(treedef, leaves)}
  _, logdet = flow.apply(variables, x, cond)
  single = lambda v, c: flow.apply(variables, v[None], c)[0][0]
  jacobian = jax.jit(jax.jacfwd(single))   # one compile for all rows
  for i in range(x.shape[0]):
    c_i = None if cond is None else cond[i:i + 1]
    sign, logabsdet = np.linalg.slogdet(np.asarray(jacobian(jnp.asarray(x[i]), c_i), np.float64))
    assert sign > 0
    np.testing.assert_allclose(logdet[i], logabsdet, atol=1e-4, rtol=1e-5)


def test_log_likelihood_standard_normal():
  z = jnp.array([[0.0, 0.0], [1.0, -2.0]])
  logdet = jnp.array([0.0, 0.5])
  expected = np.array([-np.log(2 * np.pi), -np.log(2 * np.pi) - 2.5 + 0.5])
  np.testing.assert_allclose(flow_lib.log_likelihood(z, logdet), expected, rtol=1e-6)
  np.testing.assert_allclose(flow_lib.per_dim_log_likelihood(z, logdet), expected / 2,
                             rtol=1e-6)
