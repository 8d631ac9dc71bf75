"""The trainer: sharded == single-device, the loss falls, interrupted + resumed == uninterrupted (bit-exact),
TensorBoard scalars and sample grids written, non-finite losses stop the run, bad input fails in one line."""

import glob
import os
import signal

import jax
import numpy as np
import pytest

from jaxinpaint import checkpointing, sharding, train
from jaxinpaint import runs as runs_lib
from jaxinpaint.data import pipeline
from helpers import cli_env, leaves, load_config, sharded_and_single  # tests/helpers.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_step_equals_single_device_step():
  config = load_config()
  # Adam's first steps move every parameter by ~lr * sign(grad); conv biases in front of BatchNorm have a true
  # gradient of 0, so their sign is float noise and differs with the reduction order. A large eps makes the
  # update proportional to the gradient, so the comparison checks the maths, not the noise's sign.
  config.optim.eps = 1.0
  runs = sharded_and_single(config)
  losses = {name: m["loss"] for name, (m, _) in runs.items()}
  params = {name: p for name, (_, p) in runs.items()}
  assert losses["sharded"] == pytest.approx(losses["single"], rel=1e-5)
  assert len(params["sharded"]) == len(params["single"])
  for a, b in zip(params["sharded"], params["single"]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_diffusion_fill_sharded_step_equals_single_device_step():
  """The learned diffusion fill (configs/diffusion.py, dead-leaves crops) through the same sharded step."""
  config = load_config("diffusion")
  config.optim.eps = 1.0
  runs = sharded_and_single(config)
  # the loss's SSIM term is weighted 100x, so float32 rounding in its per-device sums shows at ~1e-5
  assert runs["sharded"][0]["loss"] == pytest.approx(runs["single"][0]["loss"], abs=1e-4)
  for a, b in zip(runs["sharded"][1], runs["single"][1]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert any(np.any(p != 0) for p in runs["single"][1][1::2])  # influence weights moved off zero


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same :tiny config trained 20 steps straight, and 10 + 10 steps with a restart in between."""
  config = load_config()
  full_dir = str(tmp_path_factory.mktemp("full"))
  split_dir = str(tmp_path_factory.mktemp("split"))
  full = train.train_and_evaluate(config, full_dir)
  first = train.train_and_evaluate(config, split_dir, stop_at=10)
  second = train.train_and_evaluate(config, split_dir)
  return dict(config=config, full=full, full_dir=full_dir, first=first, second=second, split_dir=split_dir)


def test_loss_falls_and_psnr_beats_the_masked_input(runs):
  history = runs["full"]["history"]
  steps = sorted(history)
  assert steps == [5, 10, 15, 20]
  assert history[steps[-1]]["loss"] < 0.7 * history[steps[0]]["loss"]
  assert runs["full"]["eval"]["psnr"] > runs["full"]["baseline"]["psnr"]
  assert all(np.isfinite(v) for v in runs["full"]["eval"].values())


def test_interrupted_and_resumed_run_is_bit_exact(runs):
  assert runs["first"]["step"] == 10 and runs["second"]["step"] == 20
  a, b = runs["full"]["state"], runs["second"]["state"]
  assert int(a.step) == int(b.step) == 20
  for x, y in zip(leaves((a.params, a.model_state, a.opt_state)), leaves((b.params, b.model_state, b.opt_state))):
    np.testing.assert_array_equal(x, y)
  # the second half saw exactly the batches the uninterrupted run saw
  assert runs["second"]["history"][20] == pytest.approx(runs["full"]["history"][20], abs=0)


def test_workdir_has_checkpoints_events_and_samples(runs):
  workdir = runs["full_dir"]
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*")))
  assert steps == [10, 20]
  samples = sorted(glob.glob(os.path.join(workdir, "samples", "*.png")))
  assert [os.path.basename(p) for p in samples] == ["step_0000010.png", "step_0000020.png"]
  from PIL import Image

  grid = np.asarray(Image.open(samples[-1]))
  # 6 columns (target | mask | input | output | composite | error) of 32 px tiles with 2 px padding
  assert grid.shape == (min(6, 8) * 36, 6 * 36, 3)

  from tensorboard.backend.event_processing import event_accumulator

  events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert len(events) == 1
  acc = event_accumulator.EventAccumulator(events[0], size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  for name in ("psnr", "ssim", "l1", "l2", "tv"):
    assert f"eval/{name}" in tags, tags
  for name in ("loss", "valid_l1", "hole_l1", "tv", "learning_rate", "grad_norm"):
    assert f"train/{name}" in tags, tags
  assert "eval_masked_input/psnr" in tags
  assert "samples" in set(acc.Tags()["tensors"]) | set(acc.Tags()["images"])


def test_restart_after_the_end_does_nothing_more(runs, tmp_path):
  again = train.train_and_evaluate(runs["config"], runs["split_dir"])
  assert again["step"] == 20 and again["history"] == {}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = load_config()
  config.num_train_steps = 20
  config.optim.learning_rate = 1e30  # parameters blow up within a few steps
  config.optim.end_learning_rate = 1e30
  config.optim.schedule = "constant"
  config.train.checkpoint_every = 1
  # whichever comes first: a non-finite loss, or a non-finite state about to be saved
  with pytest.raises(
    train.NonFiniteLossError,
    match=r"non-finite (loss .* at|values in the train state after) "
    r"step (\d+)",
  ) as info:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(info.value.args[0].split("step ")[1].split(" ")[0].rstrip(";"))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  latest = ckpt.latest_step()
  assert latest is not None and latest < bad_step
  trainer = train.Trainer(config)
  target = checkpointing.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  _, state = ckpt.restore_state_only(target)
  assert all(np.isfinite(x).all() for x in leaves(state.params))
  ckpt.close()


def test_bad_input_fails_with_one_clear_line(tmp_path):
  config = load_config()
  config.batch_size = 12
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices"):
    train.Trainer(config)
  config = load_config()
  config.model.conv = "partal"
  with pytest.raises(ValueError, match="partal"):
    train.Trainer(config)
  config = load_config()
  config.data.image_size = 48
  with pytest.raises(ValueError, match=r"image_size=48 is not divisible by 2\*\*model.depth=32"):
    train.Trainer(config)
  config = load_config()
  config.data.source, config.data.path = "folder", str(tmp_path)
  with pytest.raises(ValueError, match=str(tmp_path)):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config = load_config()
  config.data.source, config.data.name, config.data.path = "tfds", "celeb_a", str(tmp_path)
  with pytest.raises(Exception, match="tfds build celeb_a"):
    train.train_and_evaluate(config, str(tmp_path / "run2"))
  config = load_config()
  config.masks.kind = "freeform"
  with pytest.raises(ValueError, match="freeform"):
    train.Trainer(config)
  with pytest.raises(ValueError, match="unknown config variant 'demoo'"):
    load_config(variant="demoo")


def test_preemption_flag_is_set_by_sigterm():
  flag = checkpointing.PreemptionFlag().install()
  try:
    assert not flag.is_set()
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.is_set()
  finally:
    flag.uninstall()


def test_pconv_finetune_stage_freezes_encoder_statistics(tmp_path):
  config = load_config("pconv")
  assert config.optim.schedule == "finetune" and config.optim.finetune_step == 15
  config.train.checkpoint_every = 5
  train.train_and_evaluate(config, str(tmp_path))
  trainer = train.Trainer(config)
  target = checkpointing.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  stats = {s: ckpt.restore_state_only(target, s)[1].model_state["batch_stats"] for s in (15, 20)}
  ckpt.close()
  for name in stats[15]:
    same = all(np.array_equal(a, b) for a, b in zip(leaves(stats[15][name]), leaves(stats[20][name])))
    assert same == name.startswith("enc"), name
  schedule = trainer.schedule
  assert float(schedule(14)) == pytest.approx(config.optim.learning_rate)
  assert float(schedule(15)) == pytest.approx(config.optim.finetune_learning_rate)


def test_ema_follows_its_formula():
  config = load_config()
  config.train.ema_decay = 0.75
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.initial_state()
  p0 = leaves(state.params)
  batch = sharding.to_global(next(pipeline.make_train_iterator(config)), trainer.mesh)
  step = trainer.compile_step(trainer.task, state)
  state, _ = step(state, batch)
  for e, a, b in zip(leaves(state.ema_params), p0, leaves(state.params)):
    np.testing.assert_allclose(e, 0.75 * a + 0.25 * b, rtol=1e-6, atol=1e-7)


def test_bf16_activations_train_with_f32_params(tmp_path):
  config = load_config()
  config.train.activation_dtype = "bfloat16"
  result = train.train_and_evaluate(config, str(tmp_path))
  assert all(x.dtype == np.float32 for x in leaves(result["state"].params))
  history = result["history"]
  assert history[20]["loss"] < 0.8 * history[5]["loss"]


def _run_main(args, tmp_path, timeout=300):
  import subprocess
  import sys

  env = cli_env()
  return subprocess.run(
    [sys.executable, "-m", "jaxinpaint.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )


def test_main_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  proc = _run_main(
    [
      "--config=configs/plain.py:tiny",
      f"--workdir={workdir}",
      "--config.num_train_steps=4",
      "--config.train.eval_every=4",
      "--config.train.checkpoint_every=4",
    ],
    tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.isdir(workdir / "checkpoints" / "4")
  assert os.path.isfile(workdir / "samples" / "step_0000004.png")
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  assert "8 global devices" in proc.stderr


def test_main_bad_input_is_one_line(tmp_path):
  proc = _run_main(["--config=configs/wconv.py:tiny", f"--workdir={tmp_path}", "--config.batch_size=12"], tmp_path)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
    "error: config.batch_size=12 is not divisible by the 8 devices of the mesh; use a multiple of 8 (e.g. 8)."
  )
  assert "Traceback" not in proc.stderr
  for args, expected in (
    (
      ["--config=configs/wconv.py:tiny", "--config.data.sorce=x"],
      """error: bad --config override: 'sorce' Did you mean "source" instead of "sorce"?""",
    ),
    (
      ["--config=configs/wconv.py:tiny", "--config.batch_size=abc"],
      "error: flag --config.batch_size=abc: invalid literal for int() with base 10: 'abc'",
    ),
    (["--config=configs/wconv.py:tinyy"], "error: ValueError: unknown config variant 'tinyy'; variants: demo, tiny"),
    (
      ["--config=configs/nope.py"],
      "error: Configuration is not available because of an earlier failure to load: "
      "Failed loading config file config_config Attempted [Relative path]: "
      "configs/nope.py [Errno 2] No such file or directory: 'configs/nope.py'",
    ),
  ):
    proc = _run_main([*args, f"--workdir={tmp_path}"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in proc.stderr


def test_config_saved_and_loaded_from_the_workdir(runs):
  loaded = runs_lib.load_config(runs["full_dir"])
  assert loaded.to_dict() == runs["config"].to_dict()
  with pytest.raises(FileNotFoundError, match="not a jaxinpaint run directory"):
    runs_lib.load_config(os.path.dirname(runs["full_dir"]))
