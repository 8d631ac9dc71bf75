"""jaxinpaint.runs: config save/load, the abstract state, and restore (EMA choice, fallback) without a Trainer."""

import os

import jax
import numpy as np
import pytest

from helpers import leaves, load_config
from jaxinpaint import checkpointing, runs, train


def _save_run(workdir, config, steps, shift=1.0):
  """A run directory holding the initial state at `steps`, its EMA params `shift` above its params."""
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  if state.ema_params is not None:
    state = state.replace(ema_params=jax.tree.map(lambda p: p + shift, state.params))
  runs.save_config(config, workdir)
  ckpt = checkpointing.Checkpointer(workdir, async_save=False)
  for step in steps:
    ckpt.save(step, state, None, force=True)
  ckpt.close()
  return trainer, state


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
  config = runs.with_defaults(load_config("wconv"))
  config.train.ema_decay = 0.5
  workdir = str(tmp_path_factory.mktemp("ema_run"))
  trainer, state = _save_run(workdir, config, (3, 7))
  return config, workdir, trainer, state


def test_config_round_trip_keeps_tuples(tmp_path):
  config = load_config("wconv")
  path = runs.save_config(config, str(tmp_path))
  assert path == os.path.join(str(tmp_path), runs.CONFIG_FILE) and not os.path.exists(path + ".tmp")
  loaded = runs.load_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()
  with pytest.raises(FileNotFoundError, match="not a jaxinpaint run directory"):
    runs.load_config(str(tmp_path / "missing"))


def test_abstract_state_is_the_trainers(ema_run):
  """The restore target runs builds is the checkpointed tree: same structure, shapes and dtypes as training's."""
  config, _, trainer, _ = ema_run
  tx, _ = trainer.task.make_optimizer(config.num_train_steps)
  abstract = runs.abstract_state(config, trainer.task, tx)
  assert jax.tree.structure(abstract) == jax.tree.structure(trainer.abstract_state)
  assert [(x.shape, x.dtype) for x in jax.tree.leaves(abstract)] == [
    (x.shape, x.dtype) for x in jax.tree.leaves(trainer.abstract_state)
  ]


def test_restore_takes_the_ema_params_of_the_newest_step(ema_run):
  config, workdir, _, state = ema_run
  run = runs.restore(workdir, devices=jax.devices()[:1], batch_size=1)
  assert run.step == 7 and run.config.batch_size == 1 and run.mesh.devices.size == 1
  for got, want in zip(leaves(run.params), leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  assert run.task.config.task == config.task


def test_restore_without_ema_takes_the_params_and_falls_back_past_a_damaged_step(tmp_path):
  config = runs.with_defaults(load_config("wconv"))
  config.train.ema_decay = 0.0
  _, state = _save_run(str(tmp_path), config, (2, 4))
  for root, _, names in os.walk(tmp_path / "checkpoints" / "4"):
    for name in names:  # damage every file of the newest step
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  run = runs.restore(str(tmp_path), devices=jax.devices()[:1], batch_size=1)
  assert run.step == 2
  for got, want in zip(leaves(run.params), leaves(state.params)):
    np.testing.assert_array_equal(got, want)
  assert os.path.isdir(tmp_path / "checkpoints" / "4")  # opening a run for reading moves nothing


def test_restore_names_a_missing_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    runs.restore(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="not a jaxinpaint run directory"):
    runs.restore(str(tmp_path))


def test_jit_init_compiles_at_the_level_the_variable_names_and_refuses_a_bad_one(monkeypatch):
  """JAXINPAINT_INIT_OPT_LEVEL unset: exactly `jax.jit` (whatever XLA_FLAGS say; the tests' say -O0). At 0 and at
  2: the same values up to float rounding, and not bit-identical ones (each level reached XLA: -O0 rounds
  lecun-normal's maths differently in a few per cent of the entries). A bad value is one line naming the variable."""
  init = jax.nn.initializers.lecun_normal()
  fn = lambda key: [init(key, (3, 3, 32, 64))]
  key = jax.random.key(0)
  monkeypatch.delenv(runs.INIT_OPT_LEVEL, raising=False)
  for a, b in zip(leaves(runs.jit_init(fn)(key)), leaves(jax.jit(fn)(key))):
    np.testing.assert_array_equal(a, b)
  at = {}
  for level in ("0", "2"):
    monkeypatch.setenv(runs.INIT_OPT_LEVEL, level)
    at[level] = leaves(runs.jit_init(fn)(key))
  for a, b in zip(at["0"], at["2"]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(not np.array_equal(a, b) for a, b in zip(at["0"], at["2"]))
  monkeypatch.setenv(runs.INIT_OPT_LEVEL, "fast")
  with pytest.raises(ValueError, match=r"^JAXINPAINT_INIT_OPT_LEVEL must be one of 0, 1, 2, 3 .*got 'fast'$"):
    runs.jit_init(fn)
