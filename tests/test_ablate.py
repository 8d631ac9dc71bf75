"""Ablation driver: trains what is missing (through train.train_and_evaluate), reuses finished runs of the same
config and refuses other configs' runs, scores runs and classical peers on the same examples, writes the
Table-I-shaped Markdown (best per column in bold), CSV, JSON, a bar chart and an image grid; overrides are typed."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import ablate, train

from helpers import ROOT  # tests/helpers.py

CONFIGS = [os.path.join(ROOT, "configs", "wconv.py"), os.path.join(ROOT, "configs", "plain.py")]
OVERRIDES = ["eval.masks=centre,free_form", "eval.examples=8", "eval.baselines=telea,mean_fill"]


@pytest.fixture
def fake_training(monkeypatch):
  """train.train_and_evaluate replaced by writing the finished run's config and a checkpoint (the trainer has
  its own tests); records what it was asked to train."""
  calls = []

  def fake(config, workdir, **kwargs):
    calls.append((os.path.basename(workdir), config))
    trainer = train.Trainer(config)
    from jaxinpaint import checkpointing

    train.save_config(config, workdir)
    ckpt = checkpointing.Checkpointer(workdir, async_save=False)
    ckpt.save(config.num_train_steps, trainer.initial_state(), None, force=True)
    ckpt.close()

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  return calls


def test_ablation_trains_reuses_and_writes_the_table(tmp_path, fake_training):
  results = ablate.ablate(CONFIGS, str(tmp_path), variant="tiny", overrides=OVERRIDES, progress=False)
  assert [name for name, _ in fake_training] == ["wconv", "plain"]
  assert fake_training[0][1].model.conv == "weighted" and fake_training[1][1].model.conv == "plain"
  assert results.info["runs"] == {"wconv": "trained", "plain": "trained"}
  methods = ["WConv", "Plain conv", "OpenCV Telea", "Mean colour fill"]
  assert results.methods == methods
  table = open(tmp_path / "ablation.md").read()
  header = next(line for line in table.splitlines() if line.startswith("| method"))
  assert header.count("Centre") == 5 and header.count("Free-form") == 5  # L1 L2 TV SSIM PSNR per mask kind
  rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
  no_vgg = "(loss: L1+TV only (no VGG weights))"  # both U-Nets trained without the perceptual/style terms
  assert [r.split(" | ")[0][2:] for r in rows] == [f"WConv {no_vgg}", f"Plain conv {no_vgg}", *methods[2:]]
  for col in range(1, 11):  # every column has its best marked
    assert any(re.fullmatch(r"\*\*[\d.]+\*\*", r.strip(" |").split(" | ")[col]) for r in rows), col
  data = json.load(open(tmp_path / "ablation.json"))
  assert len(data["results"]) == 8 and data["info"]["variant"] == "tiny"
  assert [r["loss"] for r in data["results"][:4]] == [no_vgg[1:-1]] * 2 + ["none (classical method)"] * 2
  assert open(tmp_path / "ablation.csv").read().count(no_vgg[1:-1]) == 4  # 2 runs x 2 mask kinds
  for name in ("ablation_bars.png", "ablation_grid.png"):
    image = np.asarray(Image.open(tmp_path / name))
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 10
  # the grid's examples: every method's composite keeps the same known pixels
  sample = results.samples["free_form"]
  known = np.broadcast_to(sample["valid"] > 0.5, sample["image"].shape)
  for method in methods:
    np.testing.assert_allclose(sample["outputs"][method][known], sample["image"][known], atol=1e-6)

  with pytest.raises(ValueError, match=r"wconv holds a run of another config \(differs in optim.learning_rate\)"):
    ablate.ablate(CONFIGS, str(tmp_path), variant="tiny", overrides=OVERRIDES + ["optim.learning_rate=0.5"])

  # the CLI, in a fresh process (no fake trainer there): finished runs are reused, the numbers are the same
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  cmd = [
    sys.executable,
    "-m",
    "jaxinpaint.ablate",
    f"--configs={','.join(CONFIGS)}",
    "--variant=tiny",
    f"--workdir={tmp_path}",
    *[f"--override={o}" for o in OVERRIDES],
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"| WConv {no_vgg} |" in proc.stdout and len(fake_training) == 2
  again = json.load(open(tmp_path / "ablation.json"))
  assert again["info"]["runs"] == {"wconv": "reused", "plain": "reused"}
  assert again["results"] == data["results"]


def test_overrides_are_typed_like_the_config():
  config = ablate.load_config_file(CONFIGS[0], "tiny")
  for item in (
    "num_train_steps=7",
    "optim.learning_rate=1",
    "data.random_flip=False",
    "model.features=(4, 8, 8, 8)",
    "eval.masks=centre,free_form",
    "data.resize=(40, 40)",
  ):
    ablate.apply_override(config, item)
  assert config.num_train_steps == 7 and config.optim.learning_rate == 1.0
  assert isinstance(config.optim.learning_rate, float) and config.data.random_flip is False
  assert config.model.features == (4, 8, 8, 8) and config.eval.masks == "centre,free_form"
  assert config.data.resize == (40, 40)
  with pytest.raises(ValueError, match="config has no key 'optim.lr'"):
    ablate.apply_override(config, "optim.lr=1")
  with pytest.raises(ValueError, match="expected int, got 2.5"):
    ablate.apply_override(config, "num_train_steps=2.5")
  with pytest.raises(ValueError, match="write key=value"):
    ablate.apply_override(config, "num_train_steps")
  assert ablate.load_config_file(CONFIGS[1] + ":tiny").data.image_size == 32
  assert ablate.run_names(["configs/wconv.py", "other/wconv.py:demo", "configs/pconv.py"]) == [
    "wconv_1",
    "wconv_2",
    "pconv",
  ]


def test_configs_must_share_their_held_out_data(tmp_path):
  with pytest.raises(ValueError, match=r"configs wconv and pconv differ in data.image_size \(32 vs 64\)"):
    ablate.ablate([CONFIGS[0], CONFIGS[0].replace("wconv", "pconv") + ":demo"], str(tmp_path), variant="tiny")
  with pytest.raises(ValueError, match="config file 'configs/nope.py' does not exist"):
    ablate.ablate(["configs/nope.py"], str(tmp_path))
  with pytest.raises(ValueError, match="unknown mask kind 'center'"):
    ablate.ablate(CONFIGS, str(tmp_path), variant="tiny", overrides=["eval.masks=center"])
  assert not os.listdir(tmp_path)  # nothing trained before the request was checked


def test_layout_keys_do_not_make_another_run():
  saved = ablate.load_config_file(CONFIGS[0], "tiny")
  wanted = ablate.load_config_file(CONFIGS[0], "tiny")
  wanted.mesh, wanted.fsdp_min_size, wanted.eval.masks = "data=-1,fsdp=2", 4096, "centre"
  wanted.model.decoder = "concat"
  assert ablate._same_config(saved, wanted) == []
  wanted.optim.learning_rate = 0.5
  del saved.mesh, saved.model.decoder  # runs saved before these keys existed still compare
  assert ablate._same_config(saved, wanted) == ["optim.learning_rate"]
