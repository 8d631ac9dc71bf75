"""Nothing lost, whatever the user does: one writer per workdir, keep_checkpoints=0 keeps all, a restart with
another config refused (or forked), no non-finite state ever saved, optimiser values checked, unreadable
checkpoints skipped, grain workers dying with a SIGKILLed trainer, SIGTERM -> status 143 (and the SLURM
requeue), bad data failing before anything is written, and every failure one `error:` line."""

import errno
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import checkpointing, configs_lib, evaluate, runs, train, workdir_lock
from helpers import cli_env, leaves, load_config  # tests/helpers.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return cli_env(PYTHONPATH=ROOT)


def _short_config(steps=6, every=2):
  config = load_config()
  config.num_train_steps = steps
  config.train.update(log_every=every, eval_every=steps, checkpoint_every=every, keep_checkpoints=0)
  return config


def _saved_steps(workdir):
  return sorted(
    int(os.path.basename(p))
    for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
    if os.path.basename(p).isdigit()
  )


def _restore(config, workdir, step=None):
  trainer = train.Trainer(config)
  target = checkpointing.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    return ckpt.restore_state_only(target, step)
  finally:
    ckpt.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """:tiny for 6 steps, a checkpoint every 2, keep_checkpoints=0."""
  config = _short_config()
  workdir = str(tmp_path_factory.mktemp("run"))
  result = train.train_and_evaluate(config, workdir)
  return dict(config=config, workdir=workdir, result=result)


# ------------------------------------------------------------------------------------------ workdir lock

HOLDER = """
import sys, time
from jaxinpaint import workdir_lock
workdir_lock.WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], env=_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(
      workdir_lock.WorkdirBusyError,
      match=rf"in use by another run: pid {holder.pid} on host {socket.gethostname()} \(since ",
    ):
      train.train_and_evaluate(_short_config(), workdir)
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written by the refused run
    # other modes write into the workdir too (eval results): refused by the CLI in one last line
    proc = subprocess.run(
      [
        sys.executable,
        "-m",
        "jaxinpaint.main",
        "--mode=eval",
        "--config=configs/wconv.py:tiny",
        f"--workdir={workdir}",
      ],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 1
    assert (
      proc.stderr.strip()
      .splitlines()[-1]
      .startswith(f"error: {workdir} is in use by another run: pid {holder.pid} on host ")
    )
  finally:
    holder.kill()
    holder.wait()
  caplog.set_level("WARNING")
  with workdir_lock.WorkdirLock(workdir):
    with workdir_lock.WorkdirLock(workdir):  # nested use by the holder is counted, not refused
      pass
    assert f"left by pid {holder.pid} on host {socket.gethostname()}" in caplog.text
    assert "no longer running" in caplog.text
    info = json.load(open(os.path.join(workdir, ".lock")))
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
  assert open(os.path.join(workdir, ".lock")).read() == ""  # a clean release: the next taker warns about nothing


# ------------------------------------------------------------------------------------------ checkpoints kept


def test_keep_checkpoints_zero_keeps_all_and_negative_is_one_line(run):
  assert _saved_steps(run["workdir"]) == [2, 4, 6]
  config = _short_config()
  config.train.keep_checkpoints = -1
  with pytest.raises(ValueError, match=r"^config.train.keep_checkpoints must be >= 0 \(0 = keep all\); got -1$"):
    configs_lib.validate_config(config)


# ------------------------------------------------------------------------------------------ another config


def test_restart_with_another_config_is_refused_before_config_json_changes(run, tmp_path):
  workdir = run["workdir"]
  before = open(os.path.join(workdir, runs.CONFIG_FILE)).read()
  pconv = load_config("pconv")  # the same shapes: resuming would silently relabel the weights
  pconv.num_train_steps, pconv.train.keep_checkpoints = 6, 0
  with pytest.raises(
    ValueError,
    match=r"holds checkpoints of another config \(differs in .*model.conv.*\); .*"
    r"--fork_to=NEWDIR",
  ):
    train.train_and_evaluate(pconv, workdir)
  deeper = _short_config()
  deeper.model.depth = 4  # other shapes
  with pytest.raises(ValueError, match=r"differs in model.depth\)"):
    train.train_and_evaluate(deeper, workdir)
  assert open(os.path.join(workdir, runs.CONFIG_FILE)).read() == before
  # --mode=eval with another model config: one line, before any restore
  with pytest.raises(ValueError, match=r"differs in .*model.conv.*pass the --config the run was trained with"):
    evaluate.evaluate(pconv, workdir, progress=False)
  # run length, cadence and evaluation settings may change
  longer = _short_config(steps=8)
  longer.train.log_every, longer.eval.masks = 4, "centre"
  longer.data.eval_split = "other_package"  # which held-out set scores it, not what it learned
  assert configs_lib.run_differences(runs.load_config(workdir), longer) == []
  longer.data.train_split = "eval"
  assert configs_lib.run_differences(runs.load_config(workdir), longer) == ["data.train_split"]
  # a run saved before model.fill existed corrected push-pull: it equals a config asking for push-pull only
  before_fill, wanted = load_config("wconv", "demo"), load_config("wconv", "demo")
  del before_fill.model.fill
  assert configs_lib.run_differences(before_fill, wanted) == []
  wanted.model.fill = "biharmonic"
  assert configs_lib.run_differences(before_fill, wanted) == ["model.fill"]
  # likewise the data keys added later: no extra training photos, no dead-leaves crops
  before_data, wanted = load_config("wconv", "demo"), load_config("wconv", "demo")
  del before_data.data.extra_train_path, before_data.data.dead_leaves
  assert configs_lib.run_differences(before_data, wanted) == []
  wanted.data.dead_leaves = 0.5
  assert configs_lib.run_differences(before_data, wanted) == ["data.dead_leaves"]
  # so may the latent-completion settings of a DCGAN run (scripts/dcgan_loss_table.py re-completes in place)
  dcgan_saved, dcgan = load_config("dcgan"), load_config("dcgan")
  dcgan.completion.discriminator_stats, dcgan.completion.iterations = "running", 7
  assert configs_lib.run_differences(dcgan_saved, dcgan) == []


def test_fork_starts_a_new_run_from_the_old_checkpoint(run, tmp_path):
  config = _short_config(steps=8)
  config.optim.learning_rate = 1e-4  # another optimiser config: refused in place, allowed as a fork
  with pytest.raises(ValueError, match=r"differs in optim.learning_rate\)"):
    train.train_and_evaluate(config, run["workdir"])
  forked_dir = str(tmp_path / "fork")
  result = train.train_and_evaluate(config, forked_dir, fork_from=run["workdir"], restore_step=4)
  assert _saved_steps(forked_dir) == [6, 8] and result["step"] == 8
  assert runs.load_config(forked_dir).optim.learning_rate == 1e-4
  assert _saved_steps(run["workdir"]) == [2, 4, 6]  # the original run is untouched


# ------------------------------------------------------------------------------------------ unreadable checkpoints


def test_unreadable_newest_checkpoint_falls_back_and_restore_step_picks_one(run, tmp_path, caplog):
  workdir = str(tmp_path / "copy")
  shutil.copytree(run["workdir"], workdir)
  os.remove(os.path.join(workdir, ".lock"))
  state_dir = os.path.join(workdir, "checkpoints", "6", "state")
  for path in glob.glob(os.path.join(state_dir, "**", "*"), recursive=True):
    if os.path.isfile(path) and "metadata" not in os.path.basename(path):
      with open(path, "wb") as f:  # damaged after the save: same names, garbage bytes
        f.write(b"\0garbage")
  caplog.set_level("WARNING")
  result = train.train_and_evaluate(run["config"], workdir)  # resumes from 4, trains 5..6 and saves 6 again
  assert "checkpoint step 6" in caplog.text and "cannot be read" in caplog.text
  assert result["step"] == 6 and _saved_steps(workdir) == [2, 4, 6]
  assert os.path.isdir(os.path.join(workdir, "unreadable_checkpoints", "6"))
  for a, b in zip(leaves(result["state"].params), leaves(run["result"]["state"].params)):
    np.testing.assert_array_equal(a, b)  # 4 -> 6 again gives the same state: resume is exact
  step, _ = _restore(run["config"], workdir, step=2)
  assert step == 2
  with pytest.raises(ValueError, match=r"--restore_step=3: no such checkpoint in .*; steps: 2, 4, 6"):
    train.train_and_evaluate(run["config"], workdir, restore_step=3)


# ------------------------------------------------------------------------------------------ NaN guard


@jax.custom_vjp
def _poison(x, bad):
  """0 forward; a NaN gradient for `x` when `bad`: a finite loss whose update makes the params non-finite."""
  return jnp.zeros((), x.dtype)


def _poison_fwd(x, bad):
  return _poison(x, bad), (jnp.zeros_like(x), bad)


def _poison_bwd(res, g):
  zeros, bad = res
  return zeros + jnp.where(bad, jnp.nan, 0.0) * g, None


_poison.defvjp(_poison_fwd, _poison_bwd)


class _PoisonedTask:
  """The configured task, whose gradient is NaN at step `bad_step` (0-based) while its loss stays finite."""

  def __init__(self, task, bad_step):
    self._task, self._bad_step = task, bad_step

  def __getattr__(self, name):
    return getattr(self._task, name)

  def for_stage(self, stage):  # the trainer compiles the task of each stage: poison that one too
    return _PoisonedTask(self._task.for_stage(stage), self._bad_step)

  def loss_fn(self, params, model_state, batch, rng, step):
    loss, aux = self._task.loss_fn(params, model_state, batch, rng, step)
    return loss + _poison(jax.tree.leaves(params)[0], step == self._bad_step), aux


@pytest.mark.parametrize("bad_step,latest", [(3, 3), (0, None)])
def test_non_finite_update_is_never_saved(tmp_path, monkeypatch, bad_step, latest):
  make_task = train.make_task
  monkeypatch.setattr(train, "make_task", lambda config, **kw: _PoisonedTask(make_task(config, **kw), bad_step))
  config = _short_config()
  config.train.update(checkpoint_every=1, log_every=6)  # the loss of the poisoned step itself is finite
  note = "the latest checkpoint is step 3" if latest else "no checkpoint of this run was written"
  with pytest.raises(
    train.NonFiniteLossError, match=rf"non-finite values in the train state after step {bad_step + 1} .* {note}"
  ):
    train.train_and_evaluate(config, str(tmp_path))
  assert _saved_steps(str(tmp_path)) == list(range(1, bad_step + 1))
  for step in _saved_steps(str(tmp_path)):
    _, state = _restore(config, str(tmp_path), step)
    assert all(np.isfinite(x).all() for x in leaves((state.params, state.opt_state, state.model_state)))


# ------------------------------------------------------------------------------------------ optimiser, loss spikes


@pytest.mark.parametrize(
  "key,value,expected",
  [
    ("learning_rate", -1e-3, "config.optim.learning_rate must be a finite number > 0; got -0.001"),
    ("learning_rate", 0.0, "config.optim.learning_rate must be a finite number > 0; got 0.0"),
    ("learning_rate", float("nan"), "config.optim.learning_rate must be a finite number > 0; got nan"),
    ("end_learning_rate", -1.0, "config.optim.end_learning_rate must be a finite number >= 0; got -1.0"),
    ("b1", 1.0, "config.optim.b1 must be in [0, 1); got 1.0"),
    ("b2", -0.5, "config.optim.b2 must be in [0, 1); got -0.5"),
    ("eps", 0.0, "config.optim.eps must be a finite number > 0; got 0.0"),
  ],
)
def test_bad_optimiser_values_are_one_line(key, value, expected):
  config = load_config()
  config.optim[key] = value
  with pytest.raises(ValueError) as info:
    configs_lib.validate_config(config)
  assert str(info.value) == expected
  gated = load_config("gated")
  gated.d_optim.learning_rate = -1.0
  with pytest.raises(ValueError, match=r"^config.d_optim.learning_rate must be"):
    configs_lib.validate_config(gated)


def test_loss_spike_is_warned_about_and_stops_the_run_when_asked(caplog):
  losses = [(s, jnp.float32(1.0 + 0.01 * (s % 3))) for s in range(1, 31)] + [(31, jnp.float32(1e13))]
  caplog.set_level("WARNING")
  train.LossGuard(factor=100.0, stop=False).check(list(losses), latest=30)
  assert "loss 1e+13 at step 31 is" in caplog.text and "running median 1.01" in caplog.text
  with pytest.raises(train.LossSpikeError, match=r"at step 31 .*the latest checkpoint is step 30"):
    train.LossGuard(factor=100.0, stop=True).check(list(losses), latest=30)
  train.LossGuard(factor=100.0, stop=True).check(losses[:30], latest=30)  # no spike: nothing raised
  # Negative losses (log-MSE, WGAN critics) are compared by magnitude: steady ones never trip the guard,
  # an explosion in either direction does.
  negative = [(s, jnp.float32(-5.0 - 0.01 * (s % 3))) for s in range(1, 31)]
  train.LossGuard(factor=100.0, stop=True).check(list(negative), latest=30)
  with pytest.raises(train.LossSpikeError, match="at step 31"):
    train.LossGuard(factor=100.0, stop=True).check(negative + [(31, jnp.float32(-1e13))], latest=30)
  config = load_config()
  config.train.loss_spike_factor = 0.5
  with pytest.raises(ValueError, match="loss_spike_factor must be 0 \\(off\\) or a finite number > 1; got 0.5"):
    configs_lib.validate_config(config)


# ------------------------------------------------------------------------------------------ workdir, data checks


def test_workdir_that_is_a_file_and_bad_data_leave_nothing_behind(tmp_path):
  file = tmp_path / "file"
  file.write_text("x")
  with pytest.raises(ValueError, match=r"^--workdir .*file is a file, not a directory$"):
    train.train_and_evaluate(_short_config(), str(file))
  with pytest.raises(ValueError, match=r"^--workdir .*file/run cannot be created: .*file is a file$"):
    train.train_and_evaluate(_short_config(), str(file / "run"))
  config = _short_config()
  config.data.source, config.data.path = "folder", str(tmp_path / "empty")
  os.makedirs(config.data.path)
  with pytest.raises(ValueError, match="empty"):
    train.train_and_evaluate(config, str(tmp_path / "run1"))
  config = _short_config()
  config.data.shorter_side = 16  # found only when a batch is built: before, config.json and events were written
  with pytest.raises(ValueError, match=r"config.data.shorter_side=16 is smaller than image_size=32"):
    train.train_and_evaluate(config, str(tmp_path / "run2"))
  assert not os.path.exists(tmp_path / "run1") and not os.path.exists(tmp_path / "run2")


# ------------------------------------------------------------------------------------------ processes


WORKERS = """
import os, sys, time
from absl import flags
flags.FLAGS(sys.argv[:1])
import helpers  # tests/helpers.py, on the PYTHONPATH the test gives this process
from jaxinpaint.data import pipeline
config = helpers.load_config()
config.data.num_workers = 2
it = pipeline.make_train_iterator(config)
next(it)
print("ready", flush=True)
time.sleep(120)
"""


def _children(pid):
  out = []
  for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
      fields = open(stat).read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid:
      out.append(int(os.path.basename(os.path.dirname(stat))))
  return out


def _alive(pid):
  try:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def test_grain_workers_die_with_a_sigkilled_trainer():
  proc = subprocess.Popen(
    [sys.executable, "-c", WORKERS],
    env=dict(_env(), PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])),
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert proc.stdout.readline().strip() == "ready"
    workers = [p for p in _children(proc.pid) if _alive(p)]
    assert len(workers) >= 2, workers
  finally:
    proc.kill()
    proc.wait()
  deadline = time.time() + 15
  while time.time() < deadline and any(_alive(p) for p in workers):
    time.sleep(0.2)
  assert not [p for p in workers if _alive(p)], "grain workers outlived their SIGKILLed trainer"


def _main(args, **kw):
  return subprocess.Popen([sys.executable, "-m", "jaxinpaint.main", *args], cwd=ROOT, env=_env(), text=True, **kw)


def test_sigterm_saves_and_exits_143_and_a_second_run_is_refused(tmp_path):
  workdir = tmp_path / "run"
  log = open(tmp_path / "first.log", "w+")
  first = _main(
    [
      "--config=configs/plain.py:tiny",
      f"--workdir={workdir}",
      "--config.num_train_steps=100000",
      "--config.train.eval_every=100000",
      "--config.train.checkpoint_every=100000",
      "--config.train.log_every=1000",
    ],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  try:
    deadline = time.time() + 300
    while "training unet from step 0" not in open(tmp_path / "first.log").read():
      assert first.poll() is None and time.time() < deadline, open(tmp_path / "first.log").read()[-3000:]
      time.sleep(0.5)
    second = _main(["--config=configs/plain.py:tiny", f"--workdir={workdir}"], stderr=subprocess.PIPE)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 1
    assert (
      err.strip()
      .splitlines()[-1]
      .startswith(f"error: {workdir} is in use by another run: pid {first.pid} on host {socket.gethostname()} (since ")
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143, open(tmp_path / "first.log").read()[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
  assert _saved_steps(str(workdir)), "no checkpoint saved on SIGTERM"


ENOSPC_MAIN = """
import errno, sys
import orbax.checkpoint as ocp
path = sys.argv[1]
def save(*args, **kwargs):  # what a full disk raises from the checkpoint writer
  raise OSError(errno.ENOSPC, "No space left on device", path)
ocp.CheckpointManager.save = save
from jaxinpaint import main
main.main(["jaxinpaint.main", *sys.argv[2:]])
"""


def test_full_disk_ends_with_one_error_line_last(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      ENOSPC_MAIN,
      str(workdir / "checkpoints"),
      "--config=configs/plain.py:tiny",
      f"--workdir={workdir}",
      "--config.num_train_steps=2",
      "--config.train.eval_every=2",
      "--config.train.checkpoint_every=2",
    ],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
    f"error: [Errno {errno.ENOSPC}] no space left on the device holding {workdir / 'checkpoints'}; the checkpoint "
    "was not written. Free space and start the same command again (no checkpoint of this run exists yet)"
  )
  assert proc.stdout.strip() == "" and "Traceback" not in proc.stderr


SBATCH_STUBS = {"srun": "#!/bin/bash\n{body}\n", "scontrol": '#!/bin/bash\necho "$@" >> "$STUB_LOG"\n'}


def _sbatch(tmp_path, srun_body, signal_after=None):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(parents=True)
  for name, text in SBATCH_STUBS.items():
    (bin_dir / name).write_text(text.format(body=srun_body))
    (bin_dir / name).chmod(0o755)
  env = dict(
    os.environ,
    PATH=f"{bin_dir}:{os.environ['PATH']}",
    STUB_LOG=str(tmp_path / "scontrol.log"),
    SLURM_JOB_ID="42",
    SLURM_JOB_NAME="t",
    WORKDIR=str(tmp_path / "w"),
  )
  proc = subprocess.Popen(
    ["bash", os.path.join(ROOT, "launch", "slurm.sbatch")],
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  if signal_after is not None:
    time.sleep(signal_after)
    proc.send_signal(signal.SIGUSR1)
  out, _ = proc.communicate(timeout=60)
  log = tmp_path / "scontrol.log"
  return proc.returncode, out, log.read_text() if log.exists() else ""


def test_slurm_script_requeues_on_143_only(tmp_path):
  # the trainer stub exits 143 on SIGTERM, as jaxinpaint.main does after saving
  # (the trap also stops its sleep, which would otherwise hold the output pipe open for 30 s)
  code, out, requeues = _sbatch(tmp_path, "trap 'kill $!; exit 143' TERM\nsleep 30 & wait $!", signal_after=1.0)
  assert (code, requeues) == (0, "requeue 42\n"), out
  code, out, requeues = _sbatch(tmp_path / "a", "exit 143")
  assert (code, requeues) == (0, "requeue 42\n"), out  # SIGTERM from the scheduler: also a requeue
  code, out, requeues = _sbatch(tmp_path / "b", "exit 3")
  assert (code, requeues) == (3, ""), out  # a failure stays a failure
  code, out, requeues = _sbatch(tmp_path / "c", "exit 0")
  assert (code, requeues) == (0, ""), out


@pytest.mark.parametrize(
  "path,value,expected",
  [
    ("loss.ssim_weight", -1.0, "config.loss.ssim_weight must be a finite number >= 0; got -1.0"),
    ("loss.ssim_weight", float("inf"), "config.loss.ssim_weight must be a finite number >= 0; got inf"),
    ("model.kernel_size", 4, "config.model.kernel_size must be odd; got 4"),
    ("model.centres", 1, "config.model.centres must be >= 2; got 1"),
    ("model.radius", 0.0, "config.model.radius must be positive; got 0.0"),
  ],
)
def test_bad_diffusion_values_are_one_line(path, value, expected):
  config = load_config("diffusion")
  group, key = path.split(".")
  config[group][key] = value
  with pytest.raises(ValueError) as info:
    configs_lib.validate_config(config)
  assert str(info.value) == expected
