"""Ablation driver: trains what is missing (through train.train_and_evaluate), reuses finished runs of the same
config and refuses other configs' runs, scores runs and classical peers on the same examples, writes the
Table-I-shaped Markdown (best per column in bold), CSV, JSON, a bar chart and an image grid; overrides are typed."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import ablate, runs, train

from helpers import ROOT, cli_env, save_run  # tests/helpers.py

CONFIGS = [os.path.join(ROOT, "configs", "wconv.py"), os.path.join(ROOT, "configs", "plain.py")]
OVERRIDES = ["eval.masks=centre,free_form", "eval.examples=8", "eval.baselines=telea,mean_fill"]


@pytest.fixture
def fake_training(monkeypatch):
  """train.train_and_evaluate replaced by writing the finished run's config and a checkpoint (the trainer has
  its own tests) of the state initialised from `config.seed`, so runs of different seeds score differently;
  records what it was asked to train."""
  calls = []

  def fake(config, workdir, **kwargs):
    calls.append((os.path.basename(workdir), config))
    save_run(config, workdir)

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
  env = cli_env()
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
  # one seed (the default) is the layout and tables of before --seeds: no seed dirs, no std, no per-seed file
  assert os.path.isfile(tmp_path / "wconv" / "config.json")
  assert not any(name.startswith("seed") for name in os.listdir(tmp_path / "wconv"))
  assert "±" not in table and "seeds" not in data["info"] and "seed_results" not in data
  assert not any(key.endswith("_std") or key == "seeds" for key in data["results"][0])
  assert not os.path.exists(tmp_path / "ablation_seeds.csv")


SEED_OVERRIDES = ["eval.masks=centre,hole_10-20", "eval.examples=8", "eval.baselines=telea"]
SEED_METRICS = ("l1", "l2", "tv", "ssim", "psnr", "psnr_full")
COLUMN_METRICS = {"L1": "l1", "L2": "l2", "TV": "tv", "SSIM": "ssim", "PSNR": "psnr"}


def test_seeds_train_each_config_n_times_and_cells_read_mean_and_std(tmp_path, fake_training):
  results = ablate.ablate(CONFIGS, str(tmp_path), variant="tiny", overrides=SEED_OVERRIDES, seeds=2, progress=False)
  # seed k of each config in <name>/seed<k>, with the config's seed + k, through ensure_trained
  assert [(name, c.model.conv, c.seed) for name, c in fake_training] == [
    ("seed0", "weighted", 0),
    ("seed1", "weighted", 1),
    ("seed0", "plain", 0),
    ("seed1", "plain", 1),
  ]
  assert results.info["runs"] == {f"{n}/seed{k}": "trained" for n in ("wconv", "plain") for k in (0, 1)}
  for name in ("wconv", "plain"):
    assert sorted(os.listdir(tmp_path / name)) == ["seed0", "seed1"]
    assert [runs.load_config(str(tmp_path / name / f"seed{k}")).seed for k in (0, 1)] == [0, 1]

  data = json.load(open(tmp_path / "ablation.json"))
  per_seed = data["seed_results"]
  assert len(per_seed) == 2 * 2 * 2  # trained methods x seeds x kinds
  with open(tmp_path / "ablation_seeds.csv") as f:
    csv_rows = list(csv.DictReader(f))
  assert [(r["method"], r["kind"], int(r["seed"]), r["run"]) for r in csv_rows] == [
    (r["method"], r["kind"], r["seed"], r["run"]) for r in per_seed
  ]
  assert all(float(c["psnr"]) == r["psnr"] for c, r in zip(csv_rows, per_seed))
  assert [(r["method"], r["kind"]) for r in data["results"]] == [
    (m, k) for k in ("centre", "hole_10-20") for m in ("WConv", "Plain conv", "OpenCV Telea")
  ]
  for row in data["results"]:
    if row["classical"]:  # deterministic: scored once
      assert row["seeds"] == 1 and all(row[f"{m}_std"] == 0.0 for m in SEED_METRICS)
      continue
    mine = [r for r in per_seed if (r["method"], r["kind"]) == (row["method"], row["kind"])]
    assert row["seeds"] == 2 and [r["seed"] for r in mine] == [0, 1]
    for m in SEED_METRICS:
      values = np.asarray([r[m] for r in mine])
      np.testing.assert_allclose(row[m], values.mean(), rtol=1e-12)
      np.testing.assert_allclose(row[f"{m}_std"], values.std(ddof=1), rtol=1e-12)
      assert row[f"{m}_std"] > 0, (row["method"], m)  # the two seeds' models differ

  lines = open(tmp_path / "ablation.md").read().splitlines()
  assert lines[0] == "## Ablation: WConv (20 steps, 2 seeds), Plain conv (20 steps, 2 seeds)"
  note = "Model cells: mean ± sample std over 2 seeds (seeds 0..1); best in bold by the mean."
  assert lines.count(note) == 4  # under the headline table and the three hole-ratio tables
  header = next(line for line in lines if line.startswith("| method | Centre"))
  columns = [c.split()[1] for c in header.strip("| ").split(" | ")[1:]]
  table_rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and "method" not in line]
  headline = table_rows[:3]
  by_method = {r["method"]: r for r in data["results"] if r["kind"] == "centre"}
  target_tv = data["kinds"]["centre"]["target_tv"]
  for j, column in enumerate(columns, start=1):
    m = COLUMN_METRICS[column]
    for cells, method in zip(headline, by_method):
      row = by_method[method]
      text = cells[j].strip("*")
      if row["classical"]:
        assert "±" not in text
      else:
        digits = 2 if m == "psnr" else 3
        assert text == f"{row[m]:.{digits}f} ± {row[f'{m}_std']:.{digits}f}", (method, column)

    def badness(method, m=m):
      value = by_method[method][m]
      return abs(value - target_tv) if m == "tv" else -value if m in ("ssim", "psnr") else value

    best = min(by_method, key=badness)  # by the mean
    assert [cells[j].startswith("**") for cells in headline] == [method == best for method in by_method], column
  for cells in table_rows[3:]:  # the hole-ratio tables: models mean ± std, the peer a plain number
    assert ("±" in cells[1]) == (not cells[0].startswith("OpenCV"))

  # the ordering lines: difference of the means, in pooled stds
  for kind, label in (("centre", "Centre"),):
    a, b = (next(r for r in data["results"] if (r["method"], r["kind"]) == (m, kind)) for m in ("WConv", "Plain conv"))
    parts = []
    for m, unit, digits in (("psnr", "dB PSNR", 2), ("ssim", "SSIM", 3)):
      diff = a[m] - b[m]
      sigmas = abs(diff) / np.sqrt((a[f"{m}_std"] ** 2 + b[f"{m}_std"] ** 2) / 2)
      parts.append(f"{'−' if diff < 0 else '+'}{abs(diff):.{digits}f} {unit} ({sigmas:.1f} σ)")
    assert f"- {label}, WConv − Plain conv: {', '.join(parts)}" in lines
  assert len(data["info"]["orderings"]) == 2  # one kind outside the buckets x PSNR, SSIM x one pair
  image = np.asarray(Image.open(tmp_path / "ablation_bars.png"))
  assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 10

  # seed 0 of --seeds=2 is the same run as --seeds=1 of the same config: the same numbers
  one = ablate.ablate(CONFIGS, str(tmp_path / "one"), variant="tiny", overrides=SEED_OVERRIDES, progress=False)
  assert sorted(os.listdir(tmp_path / "one" / "wconv")) == sorted(os.listdir(tmp_path / "wconv" / "seed0"))
  for row in one.rows:
    same = per_seed if not row["classical"] else data["results"]  # a peer's row is its one measurement
    seed0 = next(r for r in same if (r["method"], r["kind"], r.get("seed", 0)) == (row["method"], row["kind"], 0))
    assert all(seed0[m] == row[m] for m in SEED_METRICS), row["method"]


def test_seeds_must_be_a_positive_count(tmp_path):
  for seeds in (0, -1, True, 1.5):
    with pytest.raises(ValueError, match=r"--seeds must be a whole number of runs per config, at least 1; got "):
      ablate.ablate(CONFIGS, str(tmp_path), variant="tiny", seeds=seeds)
  assert not os.listdir(tmp_path)
  env = cli_env()
  workdir = tmp_path / "runs"
  cmd = [sys.executable, "-m", "jaxinpaint.ablate", f"--configs={CONFIGS[0]}", f"--workdir={workdir}", "--seeds=0"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
    "error: --seeds must be a whole number of runs per config, at least 1; got 0"
  )
  assert not workdir.exists()


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
