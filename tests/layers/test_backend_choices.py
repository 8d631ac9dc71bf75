"""Backend-aware fast paths (layers/masked_conv.FAST_PATHS), config.train.remat, and the CPU flags on import.

Each fast path's two forms must compute the same values and gradients; 'auto' must pick the CPU form on the CPU
backend and XLA's plain form elsewhere; remat must not change values or gradients.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ROOT, leaves, load_config
from jaxinpaint import configs_lib, tasks, xla_flags
from jaxinpaint.layers import masked_conv
from jaxinpaint.layers.masked_conv import FAST_PATHS, PartialConv, resolve, upsampled_conv3x3
from jaxinpaint.models import DeepFillV2Generator, InpaintingUNet
from jaxinpaint.models.unet import BLOCK_OUTPUT
from jaxinpaint.runs import jit_init

SMALL = dict(features=(8, 16), kernel_sizes=(5, 3))


def _inputs(size=16, batch=2, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  image = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, channels)), jnp.float32)
  valid = jnp.asarray(rng.uniform(size=(batch, size, size, 1)) > 0.3, jnp.float32)
  return image, valid


def test_auto_is_the_cpu_form_on_cpu_and_the_plain_form_elsewhere():
  assert jax.default_backend() == "cpu"
  for choice, (cpu_form, plain_form) in FAST_PATHS.items():
    assert resolve(choice, "auto") == cpu_form
    assert resolve(choice, "auto", backend="gpu") == plain_form
    assert resolve(choice, "auto", backend="tpu") == plain_form
    assert resolve(choice, plain_form) == plain_form
  with pytest.raises(ValueError, match="strided_grad must be 'auto' or one of"):
    resolve("strided_grad", "fast")


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (7, 2), (4, 3)])
def test_strided_grad_forms_give_the_same_values_and_gradients(kernel, stride):
  x, valid = _inputs(size=15, channels=4)
  convs = {
    form: PartialConv(6, (kernel, kernel), strides=(stride, stride), strided_grad=form)
    for form in FAST_PATHS["strided_grad"]
  }
  params = jit_init(convs["xla"].init)(jax.random.key(0), x, valid)
  cot = jax.random.normal(jax.random.key(1), convs["xla"].apply(params, x, valid)[0].shape)

  def loss(p, x, conv):
    return jnp.sum(conv.apply(p, x, valid)[0] * cot)

  out = {
    form: (conv.apply(params, x, valid)[0], jax.grad(loss, argnums=(0, 1))(params, x, conv))
    for form, conv in convs.items()
  }
  np.testing.assert_allclose(out["subpixel"][0], out["xla"][0], rtol=1e-5, atol=1e-5)
  for a, b in zip(leaves(out["subpixel"][1]), leaves(out["xla"][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pad_barrier_forms_give_the_same_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  cot = jax.random.normal(jax.random.key(2), (2, 10, 12, 4))
  results = {}
  for form in FAST_PATHS["pad_barrier"]:
    f = lambda x, k: jnp.sum(upsampled_conv3x3(x, k, form) * cot)
    results[form] = (upsampled_conv3x3(x, kernel, form), jax.grad(f, argnums=(0, 1))(x, kernel))
  np.testing.assert_allclose(results["on"][0], results["off"][0], rtol=1e-5, atol=1e-5)
  for a, b in zip(results["on"][1], results["off"][1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # the 'on' form really holds an optimisation barrier, the 'off' form none
  jaxprs = {form: str(jax.make_jaxpr(lambda x, k: upsampled_conv3x3(x, k, form))(x, kernel)) for form in results}
  assert "optimization_barrier" in jaxprs["on"] and "optimization_barrier" not in jaxprs["off"]


def _unet_jaxpr(image, valid, **choices):
  net = InpaintingUNet(conv="partial", depth=2, **SMALL, **choices)
  variables = jax.eval_shape(net.init, jax.random.key(0), image, valid)
  grad = jax.grad(lambda v: jnp.sum(net.apply(v, image, valid)))
  return str(jax.make_jaxpr(grad)(variables))


def test_unet_auto_traces_the_cpu_forms_on_cpu_and_the_plain_forms_on_gpu(monkeypatch):
  image, valid = _inputs()
  cpu = dict(decoder="subpixel", strided_grad="subpixel", pad_barrier="on")
  plain = dict(decoder="concat", strided_grad="xla", pad_barrier="off")
  auto = _unet_jaxpr(image, valid)
  assert auto == _unet_jaxpr(image, valid, **cpu) != _unet_jaxpr(image, valid, **plain)
  monkeypatch.setattr(masked_conv.jax, "default_backend", lambda: "gpu")
  assert _unet_jaxpr(image, valid) == _unet_jaxpr(image, valid, **plain)


def test_unet_all_cpu_forms_and_all_plain_forms_agree():
  image, valid = _inputs()
  results = {}
  for name, choices in (
    ("cpu", dict(decoder="subpixel", strided_grad="subpixel", pad_barrier="on")),
    ("plain", dict(decoder="concat", strided_grad="xla", pad_barrier="off")),
  ):
    net = InpaintingUNet(conv="partial", depth=2, **SMALL, **choices)
    variables = jit_init(net.init)(jax.random.key(0), image, valid)
    loss = lambda p: jnp.mean(net.apply({**variables, "params": p}, image, valid) ** 2)
    results[name] = jax.jit(jax.value_and_grad(loss))(variables["params"])
  np.testing.assert_allclose(results["cpu"][0], results["plain"][0], rtol=1e-5)
  for a, b in zip(leaves(results["cpu"][1]), leaves(results["plain"][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_fast_path_and_remat_names_fail_validation_in_one_line():
  config = load_config("pconv")
  config.model.strided_grad = "fast"
  with pytest.raises(ValueError, match=r"config.model.strided_grad must be 'auto' or one of \('subpixel', 'xla'\)"):
    configs_lib.validate_config(config)
  config = load_config("pconv")
  config.train.remat = "some"
  with pytest.raises(ValueError, match="config.train.remat must be one of"):
    configs_lib.validate_config(config)


def _loss_and_grads(config, batch):
  task = tasks.make_task(config)
  variables = dict(jit_init(task.init)(jax.random.key(0), batch))
  params = variables.pop("params")
  grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))
  (loss, (state, _)), grads = grad_fn(params, variables, batch, jax.random.key(1), jnp.zeros((), jnp.int32))
  return float(loss), leaves(grads), leaves(state), grad_fn


def test_remat_of_the_deepfill_generator_gives_the_same_values_and_gradients():
  """Through `tasks.base.remat` as DeepFillTask.losses calls it, at 16 px, cnum 4."""
  image, _ = _inputs(size=16, batch=1)
  valid = jnp.ones((1, 16, 16, 1)).at[:, 4:10, 5:12].set(0.0)
  net = DeepFillV2Generator(cnum=4)
  variables = jit_init(net.init)(jax.random.key(0), image, valid)
  config = load_config("gated")
  results = {}
  for remat in ("none", "blocks"):
    config.train.remat = remat
    apply = tasks.base.remat(config, net.apply)
    loss = lambda p: sum(jnp.mean(v**2) for k, v in apply({"params": p}, image, valid).items() if k != "offsets")
    results[remat] = jax.jit(jax.value_and_grad(loss))(variables["params"])
  np.testing.assert_allclose(results["blocks"][0], results["none"][0], rtol=1e-6)
  for a, b in zip(leaves(results["blocks"][1]), leaves(results["none"][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", ["lama", "dcgan"])
def test_remat_of_the_lama_and_dcgan_generators_gives_the_same_values_gradients_and_stats(family):
  """Through `tasks.base.remat` as LamaTask.losses / DCGANTask.adversarial_losses call it (train mode, BatchNorm
  statistics updated), on the :tiny configs (LaMa ngf 8, one FFC block, at 16 px; DCGAN 32 px); then the task's
  own gradient: a checkpoint over named block outputs with 'blocks', none with 'none'."""
  config = load_config(family)
  net = tasks.make_task(config).generator
  image, _ = _inputs(size=16 if family == "lama" else 32, batch=2)
  valid = jnp.ones_like(image[..., :1]).at[:, 4:10, 5:12].set(0.0)
  inputs = (image, valid) if family == "lama" else (jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 16))),)
  variables = jit_init(net.init)(jax.random.key(0), *inputs)  # jitted: eager init dispatches op by op
  results = {}
  for remat in tasks.base.REMAT_POLICIES:
    config.train.remat = remat
    apply = tasks.base.remat(config, functools.partial(net.apply, train=True, mutable=["batch_stats"]))

    def loss(params):
      out, new = apply({"params": params, "batch_stats": variables["batch_stats"]}, *inputs)
      return jnp.mean((out - 0.3) ** 2), new

    (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    results[remat] = float(value), leaves(grads), leaves(new)
  base_value, base_grads, base_stats = results["none"]
  for remat in ("blocks", "full"):
    value, grads, stats = results[remat]
    np.testing.assert_allclose(value, base_value, rtol=1e-6)
    for a, b in zip(grads, base_grads):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(stats, base_stats):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  batch = {"image": _inputs(size=32)[0], "valid": jnp.ones((2, 32, 32, 1)).at[:, 8:20, 10:24].set(0.0)}
  for remat in ("none", "blocks"):
    config.train.remat = remat
    task = tasks.make_task(config)
    state = dict(jax.eval_shape(task.init, jax.random.key(0), batch))
    params = state.pop("params")
    grad = jax.grad(lambda p, v: task.loss_fn(p, v, batch, jax.random.key(1), jnp.zeros((), jnp.int32))[0])
    jaxpr = str(jax.make_jaxpr(grad)(params, state))
    assert BLOCK_OUTPUT in jaxpr
    assert ("remat" in jaxpr or "checkpoint" in jaxpr) == (remat == "blocks"), remat  # jax.checkpoint: remat2


@pytest.mark.parametrize("name", ["pconv"])
def test_remat_gives_the_same_loss_gradients_and_state(name):
  image, _ = _inputs(size=32)
  valid = jnp.ones((2, 32, 32, 1)).at[:, 8:20, 10:24].set(0.0)  # a box hole: DeepFill's attention has patches
  batch = {"image": image, "valid": valid}
  results = {}
  for remat in tasks.base.REMAT_POLICIES:
    config = load_config(name)
    config.train.remat = remat
    results[remat] = _loss_and_grads(config, batch)
  base_loss, base_grads, base_state, base_fn = results["none"]
  for remat in ("blocks", "full"):
    loss, grads, state, fn = results[remat]
    np.testing.assert_allclose(loss, base_loss, rtol=1e-6)
    for a, b in zip(grads, base_grads):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(state, base_state):  # BatchNorm statistics / spectral-norm vectors
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # remat really recomputes: the rematted gradient's jaxpr holds a checkpoint, the plain one does not
  args = (jax.random.key(1), jnp.zeros((), jnp.int32))
  config = load_config(name)
  config.train.remat = "blocks"
  task = tasks.make_task(config)
  variables = dict(jax.eval_shape(task.init, jax.random.key(0), batch))
  params = variables.pop("params")
  grad = jax.grad(lambda p, v: task.loss_fn(p, v, batch, *args)[0])
  jaxpr = str(jax.make_jaxpr(grad)(params, variables))
  assert "checkpoint" in jaxpr or "remat" in jaxpr
  assert BLOCK_OUTPUT in jaxpr  # the generator's block outputs are named: 'blocks' has something to keep


def _python(code: str, **env) -> subprocess.CompletedProcess:
  full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
  full.update(env, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=full, timeout=120
  )


def test_import_sets_the_cpu_flags_before_the_backend_starts_without_importing_jax():
  proc = _python("import os, sys, jaxinpaint; print('jax' in sys.modules); print(os.environ['XLA_FLAGS'])")
  assert proc.returncode == 0, proc.stderr
  imported, flags = proc.stdout.splitlines()
  assert imported == "False" and xla_flags.CPU_FLAGS[0] in flags.split()
  assert "RuntimeWarning" not in proc.stderr
  # a flag of the same name the user set wins
  proc = _python(
    "import os, jaxinpaint; print(os.environ['XLA_FLAGS'])", XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=default"
  )
  assert proc.stdout.split() == ["--xla_cpu_experimental_ynn_fusion_type=default"]


def test_import_after_the_backend_started_warns_once_naming_the_flag():
  proc = _python("import jax; jax.devices(); import jaxinpaint, jaxinpaint.models, jaxinpaint.train")
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.count("RuntimeWarning") == 1
  assert xla_flags.CPU_FLAGS[0] in proc.stderr
  proc = _python("import jax; jax.devices(); import jaxinpaint", **{xla_flags.OPT_OUT: "0"})
  assert proc.returncode == 0 and "RuntimeWarning" not in proc.stderr
  proc = _python("import jax; jax.devices(); import jaxinpaint", XLA_FLAGS=xla_flags.CPU_FLAGS[0])
  assert proc.returncode == 0 and "RuntimeWarning" not in proc.stderr
