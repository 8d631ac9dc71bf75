"""Evaluation: deterministic, the same images and masks for every method, a perfect model at the PSNR cap with
SSIM 1, means that equal an independent per-example computation, the trainer's own eval reproduced, the classical
rows present, outputs on disk and in TensorBoard, and one-line errors."""

import glob
import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxinpaint import baselines, evaluate, metrics, runs, train
from jaxinpaint.data import mask_packs, masks, pipeline, sources
from jaxinpaint.eval import harness, mask_sets, tables

from helpers import ROOT, cli_env, load_config, make_run  # tests/helpers.py

KINDS = "centre,free_form,hole_20-30"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config, trainer, state = make_run(workdir)
  return dict(workdir=workdir, config=config, trainer=trainer, state=state)


def eval_config(config, examples=10):
  config = runs.with_defaults(config)
  config.eval.masks, config.eval.examples = KINDS, examples
  return config


def test_mask_kinds_parse_and_fail_in_one_line():
  assert mask_sets.parse_mask_kinds("centre, buckets,centre") == ["centre", *mask_sets.BUCKET_KINDS]
  assert mask_sets.BUCKET_KINDS[0] == "hole_0-10" and mask_sets.BUCKET_KINDS[-1] == "hole_50-60"
  with pytest.raises(ValueError, match="unknown mask kind 'centr'"):
    mask_sets.parse_mask_kinds("centre,centr")
  with pytest.raises(ValueError, match="hole_<low>-<high>"):
    mask_sets.parse_mask_kinds("hole_ten")
  with pytest.raises(ValueError, match="names no mask kind"):
    mask_sets.parse_mask_kinds(" , ")


def test_eval_set_is_seeded_and_shares_images_across_kinds():
  config = eval_config(load_config())
  eval_set = mask_sets.EvalSet.from_config(config, jax.device_count())
  assert eval_set.batch_size == 8 and eval_set.num_batches == 2  # 10 examples: one full batch, one padded
  source = sources.make_source(config.data, "eval")
  by_kind = {k: list(eval_set.batches(k, source)) for k in eval_set.kinds}
  again = list(eval_set.batches("hole_20-30", source))
  for a, b in zip(by_kind["hole_20-30"], again):
    np.testing.assert_array_equal(a["valid"], b["valid"])
  for kind, batches in by_kind.items():
    np.testing.assert_array_equal(batches[1]["weight"], [1, 1] + [0] * 6)
    np.testing.assert_array_equal(batches[0]["image"], by_kind["centre"][0]["image"])  # same crops
  ratios = [masks.hole_ratio(v) for b in by_kind["hole_20-30"] for v in b["valid"]]
  assert all(0.2 <= r < 0.3 for r in ratios)
  assert all(masks.hole_ratio(v) == 0.25 for v in by_kind["centre"][0]["valid"])
  # the training eval set's first examples, with the same free-form masks
  train_eval = pipeline.make_eval_batches(config)[0]
  np.testing.assert_array_equal(train_eval["image"], by_kind["free_form"][0]["image"])
  np.testing.assert_array_equal(train_eval["valid"], by_kind["free_form"][0]["valid"])


def test_perfect_model_scores_the_psnr_cap_and_ssim_one(tmp_path):
  config = eval_config(load_config())
  eval_set = mask_sets.EvalSet.from_config(config, jax.device_count())
  source = sources.make_source(config.data, "eval")
  truth = {k: [b["image"] for b in eval_set.batches(k, source)] for k in eval_set.kinds}
  calls = []

  def oracle(image, valid):  # knows the answers from outside the harness, in the harness's batch order
    assert np.all(image[np.broadcast_to(valid, image.shape) < 0.5] == 0)  # holes arrive zeroed
    kind = eval_set.kinds[len(calls) // eval_set.num_batches]
    calls.append(kind)
    return truth[kind][(len(calls) - 1) % eval_set.num_batches]

  methods = {"oracle": harness.Method(oracle, on_host=True), **harness.baseline_methods(["mean_fill"])}
  results = harness.evaluate_methods(methods, eval_set, source=source, progress=False)
  for kind in eval_set.kinds:
    row = {m: results.value("oracle", kind, m) for m in ("l1", "l2", "psnr", "psnr_full", "ssim")}
    assert row["l1"] == 0 and row["l2"] == 0
    assert row["psnr"] == pytest.approx(metrics.PSNR_CAP_DB) and row["psnr_full"] == pytest.approx(100.0)
    assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert results.value("oracle", kind, "tv") == pytest.approx(results.kinds[kind]["target_tv"], rel=1e-5)
    assert results.value("Mean colour fill", kind, "psnr") < 30
  paths = tables.write_results(results, str(tmp_path))
  data = json.load(open(paths["json"]))  # allow_nan=False when written: every number finite
  assert {r["method"] for r in data["results"]} == {"oracle", "Mean colour fill"}
  table = open(paths["md"]).read()
  assert "| oracle | **0.000** | **0.000** | **" in table  # best L1, L2, TV (= the ground truth's own TV)


def test_means_equal_an_independent_per_example_computation():
  config = eval_config(load_config(), examples=10)
  config.eval.masks = "free_form"
  eval_set = mask_sets.EvalSet.from_config(config, jax.device_count())
  source = sources.make_source(config.data, "eval")
  results = harness.evaluate_methods(harness.baseline_methods(["telea"]), eval_set, source=source, progress=False)
  score = jax.jit(lambda t, o, v: metrics.inpainting_metrics((t + 1) / 2, (o + 1) / 2, v))
  per_example = []
  for batch in eval_set.batches("free_form", source):
    out = baselines.inpaint_batch("telea", batch["image"], batch["valid"])
    for i in np.flatnonzero(batch["weight"]):
      value = score(batch["image"][i : i + 1], out[i : i + 1], batch["valid"][i : i + 1])
      per_example.append({k: float(v[0]) for k, v in value.items()})
  assert len(per_example) == 10 and results.rows[0]["n"] == 10
  for key in ("l1", "l2", "tv", "psnr", "ssim"):
    assert results.value("OpenCV Telea", "free_form", key) == pytest.approx(
      np.mean([e[key] for e in per_example]), rel=1e-5
    )


def test_model_scores_match_the_trainers_own_eval(run):
  config = eval_config(run["config"], examples=8)
  config.eval.masks, config.eval.baselines = "free_form", "none"
  results = evaluate.evaluate(config, run["workdir"], progress=False)
  trainer_eval, _ = run["trainer"].evaluate(run["state"], pipeline.make_eval_batches(run["config"]))
  label = os.path.basename(run["workdir"])
  for key in ("l1", "l2", "tv", "psnr", "ssim"):
    assert results.value(label, "free_form", key) == pytest.approx(trainer_eval[key], rel=1e-4, abs=1e-5)


def test_evaluation_is_deterministic_and_writes_every_output(run):
  config = eval_config(run["config"], examples=8)
  config.eval.masks = "centre,hole_20-30"
  outputs = []
  for _ in range(2):
    evaluate.evaluate(config, run["workdir"], progress=False)
    outputs.append({name: open(os.path.join(run["workdir"], name)).read() for name in tables.RESULT_FILES})
  assert outputs[0] == outputs[1]
  data = json.loads(outputs[0]["eval_results.json"])
  label = os.path.basename(run["workdir"])
  methods = [label] + [baselines.LABELS[n] for n in baselines.BASELINES]
  assert [(r["method"], r["kind"]) for r in data["results"]] == [
    (m, k) for k in ("centre", "hole_20-30") for m in methods
  ]
  assert all(r["n"] == 8 for r in data["results"]) and data["info"]["step"] == run["config"].num_train_steps
  assert len(outputs[0]["eval_results.csv"].strip().splitlines()) == 1 + 2 * len(methods)
  # the loss that trained the run, in every output (no VGG16 weights file here)
  assert {r["method"]: r["loss"] for r in data["results"]}[label] == "loss: L1+TV only (no VGG weights)"
  assert data["info"]["losses"][label] == harness.NO_VGG_LOSS
  assert all(r["loss"] == harness.CLASSICAL_LOSS for r in data["results"] if r["classical"])
  assert f",{harness.NO_VGG_LOSS}," in outputs[0]["eval_results.csv"]
  assert f"| {label} (loss: L1+TV only (no VGG weights)) |" in outputs[0]["eval_results.md"]
  table = outputs[0]["eval_results.md"]
  assert "Centre PSNR ↑" in table and "PSNR ↑ by hole ratio" in table and "FID left out" in table
  from tensorboard.backend.event_processing import event_accumulator

  tags = set()
  for events in glob.glob(os.path.join(run["workdir"], "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0})
    acc.Reload()
    tags |= set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
  assert {"eval_centre/psnr", "eval_hole_20-30/ssim", "eval_table"} <= tags


def test_missing_checkpoint_and_bad_config_fail_in_one_line(tmp_path, run):
  config = eval_config(run["config"])
  with pytest.raises(FileNotFoundError, match="run directory .*nowhere does not exist"):
    evaluate.evaluate(config, str(tmp_path / "nowhere"))
  train.save_config(run["config"], str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint found in .*empty/checkpoints"):
    evaluate.evaluate(config, str(tmp_path / "empty"))
  config.eval.masks = "centre,boxes"
  with pytest.raises(ValueError, match="unknown mask kind 'boxes'"):
    evaluate.evaluate(config, run["workdir"])
  old = runs.with_defaults(run["config"])
  with old.unlocked():
    del old["eval"]  # a run saved before config.eval existed
    old.model = {"name": "deepfill_v2", "cnum": 8}  # another family's model section
  filled = runs.with_defaults(old)
  assert filled.eval.masks == "centre,free_form,buckets" and filled.model.to_dict() == old.model.to_dict()
  with filled.unlocked():
    del filled.eval["lpips_weights"]  # a key added to eval later
  assert runs.with_defaults(filled).eval.lpips_weights == ""


def test_cli_overrides_and_errors(run, tmp_path):
  env = cli_env()
  cmd = [
    sys.executable,
    "-m",
    "jaxinpaint.evaluate",
    f"--workdir={run['workdir']}",
    "--config.eval.masks=centre",
    "--config.eval.examples=8",
    "--config.eval.baselines=mean_fill",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.load(open(os.path.join(run["workdir"], "eval_results.json")))
  assert data["info"]["kinds"] == ["centre"] and len(data["results"]) == 2
  with pytest.raises(SystemExit) as exit_info:  # fails before defining any flag, so it can run in-process
    evaluate.main(["evaluate", f"--workdir={tmp_path}/none"])
  assert exit_info.value.code == (
    f"error: {tmp_path}/none/config.json not found: {tmp_path}/none is not a jaxinpaint run directory"
  )


def test_eval_on_a_pack_equals_eval_on_the_same_masks_drawn_in_pipeline(tmp_path):
  config = eval_config(load_config(), examples=10)
  (ff,) = mask_packs.make_pack("free_form", 32, 10, 0, str(tmp_path / "ff"))
  buckets = mask_packs.make_pack("buckets", 32, 10, 0, str(tmp_path / "buckets"))  # a folder of six packs
  config.eval.masks = f"free_form,hole_20-30,pack:{tmp_path / 'ff'},pack:{tmp_path / 'buckets'}"
  eval_set = mask_sets.EvalSet.from_config(config, jax.device_count())
  kinds = ["free_form", "hole_20-30", f"pack_{ff['pack_id']}"] + [f"pack_{m['pack_id']}" for m in buckets]
  assert list(eval_set.kinds) == kinds
  results = harness.evaluate_methods(
    harness.baseline_methods(["telea", "mean_fill"]),
    eval_set,
    source=sources.make_source(config.data, "eval"),
    progress=False,
  )
  for method in results.methods:
    for drawn, packed in (("free_form", kinds[2]), ("hole_20-30", kinds[5])):
      for metric in results.metric_names:
        assert results.value(method, packed, metric) == results.value(method, drawn, metric), (method, metric)
  paths = tables.write_results(results, str(tmp_path / "out"))
  data = json.load(open(paths["json"]))
  assert data["info"]["packs"][kinds[2]]["pack_id"] == ff["pack_id"]
  assert {r["pack_id"] for r in data["results"] if r["kind"] == kinds[2]} == {ff["pack_id"]}
  table = open(paths["md"]).read()
  assert f"Mask pack {ff['pack_id']} (free_form, seed 0, 10 masks of 32x32" in table
  assert f"Pack free_form [{ff['pack_id']}] L1 ↓" in table
  assert ff["pack_id"] in open(paths["csv"]).read()


def test_bad_packs_are_refused_in_one_line(tmp_path):
  config = eval_config(load_config())
  mask_packs.make_pack("centre", 64, 2, 0, str(tmp_path / "big"))
  config.eval.masks = f"centre,pack:{tmp_path / 'big'}"
  with pytest.raises(ValueError, match=r"holds 64x64 masks but the eval images are 32x32; make a pack of that size"):
    mask_sets.EvalSet.from_config(config, jax.device_count())
  mask_packs.make_pack("random_box", 32, 3, 0, str(tmp_path / "ok"))
  with open(tmp_path / "ok" / "000001.png", "ab") as f:
    f.write(b"\0")  # one byte appended: the file no longer matches its manifest
  config.eval.masks = f"pack:{tmp_path / 'ok'}"
  with pytest.raises(ValueError, match=r"ok: 000001.png does not match its manifest"):
    mask_sets.EvalSet.from_config(config, jax.device_count())


def test_loss_label_names_the_vgg_weights_or_their_absence(tmp_path):
  config = load_config()
  assert harness.loss_label(config) == "loss: L1+TV only (no VGG weights)"
  weights = tmp_path / "vgg16.npz"
  weights.write_bytes(b"weights")
  config.loss.vgg_weights = str(weights)
  assert harness.loss_label(config) == (
    f"loss: L1+TV+perceptual+style (VGG16 weights sha256 {hashlib.sha256(b'weights').hexdigest()})"
  )
  config.loss.vgg_weights = str(tmp_path / "gone.npz")
  assert harness.loss_label(config) == f"loss: L1+TV only (VGG weights {tmp_path / 'gone.npz'} not found)"
  config.loss.name = "mse"
  assert harness.loss_label(config) == "loss: MSE (no VGG term)"
  gated = load_config("gated")
  assert harness.loss_label(gated) == "loss: hinge adversarial + l1 (no VGG term)"


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
  import io

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  config = eval_config(load_config(), examples=8)
  config.eval.masks = "centre"
  eval_set = mask_sets.EvalSet.from_config(config, jax.device_count())
  source = sources.make_source(config.data, "eval")
  methods = harness.baseline_methods(["mean_fill"])
  harness.evaluate_methods(methods, eval_set, source=source)  # stderr is captured here: not a terminal
  assert "centre: Mean colour fill" not in capsys.readouterr().err
  terminal = Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  harness.evaluate_methods(methods, eval_set, source=source)
  assert "centre: Mean colour fill" in terminal.getvalue() and "1/1 [" in terminal.getvalue()
