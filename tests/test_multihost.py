"""Multi-host training proven with real JAX machinery on one machine: `launch/local.sh` starts 2 processes x 4 CPU
devices joined by `jax.distributed` (gloo collectives); each trains `configs/wconv.py:tiny` for a few steps through
`train.train_and_evaluate`. Both processes must end with identical params, equal to the single-process 8-device
run; each must have fed only its share of the global batch; only process 0 writes metrics; the checkpoint written
cooperatively must restore to those params.

Run as a script (`python tests/test_multihost.py WORKDIR`), this file is the per-process worker.
"""

import glob
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


def multihost_config():
  import helpers  # tests/helpers.py; imported here, as the worker defers its jax imports

  config = helpers.load_config("wconv", "tiny")
  config.num_train_steps = STEPS
  config.model.depth = 3  # :tiny minus two levels: the same machinery, half the compile time
  config.train.update(log_every=STEPS, eval_every=STEPS, checkpoint_every=STEPS)
  # Adam's first steps move each param by ~lr * sign(grad); for grads that are float noise (biases before a
  # norm) the sign depends on the reduction order. A large eps makes the update linear in the gradient.
  config.optim.eps = 1.0
  return config


def flat_params(tree) -> dict[str, np.ndarray]:
  """{'enc1/kernel': local copy, ...} of a replicated pytree of global arrays."""
  import jax

  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    key = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
    out[key] = np.asarray(leaf.addressable_data(0))
  return out


def worker(workdir: str) -> None:
  """One process of the run: join, train, then dump this process's params and its first local batch."""
  from absl import flags, logging

  flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()  # timestamped INFO lines in launch/local.sh's per-process logs
  logging.set_verbosity(logging.INFO)
  import jax

  from jaxinpaint import sharding, train
  from jaxinpaint.data import pipeline

  sharding.initialize_distributed()
  pidx, pcount = jax.process_index(), jax.process_count()
  assert (pcount, jax.local_device_count(), jax.device_count()) == (2, 4, 8)
  config = multihost_config()
  result = train.train_and_evaluate(config, workdir)
  first = next(pipeline.make_train_iterator(config, process_index=pidx, process_count=pcount))
  dump = {f"params/{k}": v for k, v in flat_params(result["state"].params).items()}
  dump.update({f"model_state/{k}": v for k, v in flat_params(result["state"].model_state).items()})
  dump.update({"first_batch/image": first["image"], "first_batch/valid": first["valid"]})
  np.savez(os.path.join(workdir, f"process_{pidx}.npz"), **dump)
  jax.distributed.shutdown()


def test_two_processes_train_like_one(tmp_path):
  import jax

  from jaxinpaint import checkpointing, sharding, train
  from jaxinpaint.data import pipeline

  workdir = str(tmp_path / "run")
  # No persistent compilation cache in the workers: a cache hit in one process and a compile in the other put
  # them minutes apart under load, past gloo's fixed 30 s rendezvous timeout for the first collective.
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    LOG_DIR=str(tmp_path / "logs"),
    PYTHONPATH=ROOT,
    JAX_ENABLE_COMPILATION_CACHE="false",
  )
  proc = subprocess.run(
    [os.path.join(ROOT, "launch", "local.sh"), "2", "4", sys.executable, __file__, workdir],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  logs = "".join(open(p).read()[-3000:] for p in sorted(glob.glob(str(tmp_path / "logs" / "*.log"))))
  assert proc.returncode == 0, proc.stderr[-2000:] + logs

  dumps = [dict(np.load(os.path.join(workdir, f"process_{i}.npz"))) for i in range(2)]
  assert dumps[0].keys() == dumps[1].keys()
  states = [{k: v for k, v in d.items() if not k.startswith("first_batch/")} for d in dumps]
  for key in states[0]:  # the replicated state is bit-identical on both processes
    np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)

  # the single-process, 8-device run of the same config, batch for batch
  config = multihost_config()
  trainer = train.Trainer(config, jax.devices())
  it = pipeline.make_train_iterator(config)
  batches = [next(it) for _ in range(STEPS)]
  for p in range(2):  # process p fed global examples p, p + 2, ... of each batch, and nothing else
    np.testing.assert_array_equal(dumps[p]["first_batch/image"], batches[0]["image"][p::2])
    np.testing.assert_array_equal(dumps[p]["first_batch/valid"], batches[0]["valid"][p::2])
  state = trainer.initial_state()
  step = trainer.compile_step(trainer.task, state)
  for batch in batches:
    state, _ = step(state, sharding.to_global(batch, trainer.mesh))
  single = {f"params/{k}": v for k, v in flat_params(state.params).items()}
  single.update({f"model_state/{k}": v for k, v in flat_params(state.model_state).items()})
  assert single.keys() == states[0].keys()
  moved = 0
  initial = flat_params(trainer.initial_state().params)
  for key, value in single.items():
    np.testing.assert_allclose(states[0][key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    if key.startswith("params/"):
      moved += not np.allclose(value, initial[key[len("params/") :]], atol=1e-6)
  assert moved > len(initial) // 2  # training really changed the params being compared

  # the checkpoint both processes wrote together restores to exactly those params
  ckpt = checkpointing.Checkpointer(workdir)
  target = checkpointing.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  restored_step, restored = ckpt.restore_state_only(target)
  ckpt.close()
  assert restored_step == STEPS and int(restored.step) == STEPS
  for key, value in flat_params(restored.params).items():
    np.testing.assert_array_equal(value, states[0][f"params/{key}"], err_msg=key)

  # metrics and samples come from process 0 only
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 1
  assert os.path.isfile(os.path.join(workdir, "samples", f"step_{STEPS:07d}.png"))


if __name__ == "__main__":
  worker(sys.argv[1])
