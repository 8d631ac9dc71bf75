"""bench/cost_model.py (compile-only costs, memory lines, roofline) and bench/device_check.sh at CI size."""

import json
import os
import subprocess

import pytest

import cost_model  # bench/cost_model.py: bench/ is on pytest's pythonpath (pyproject.toml)

from helpers import ROOT


def test_line_and_max_batch_invert_a_linear_memory():
  intercept, slope = cost_model.line(7.0e9, 9.5e9)
  assert (intercept, slope) == (4.5e9, 2.5e9)
  assert cost_model.max_batch(intercept, slope, 80e9) == 30  # 4.5 + 2.5 * 30 = 79.5 <= 80 < 82
  assert cost_model.max_batch(90e9, slope, 80e9) == 0
  assert cost_model.max_batch(intercept, 0.0, 80e9) == 0


def test_roofline_is_the_larger_of_compute_and_memory_time():
  a100 = cost_model.GPUS["A100"]
  flops, nbytes = 312e12, 2.039e12 / 2  # 1 s of bf16 compute, 0.5 s of HBM traffic on an A100
  out = cost_model.roofline(flops, nbytes, "bfloat16")
  assert out["A100"] == {"step_s": pytest.approx(flops / a100["bfloat16"]), "bound": "compute"}
  out = cost_model.roofline(1e9, 2.039e12, "float32")
  assert out["A100"]["bound"] == "memory" and out["A100"]["step_s"] == pytest.approx(1.0)
  assert out["H100"]["step_s"] == pytest.approx(2.039 / 3.35)


@pytest.mark.parametrize("size,levels", [(64, 4), (256, 6), (512, 7)])
def test_dcgan_is_scaled_to_the_requested_size(size, levels):
  from jaxinpaint import tasks

  config = cost_model.family_config("dcgan", size, 2)
  assert len(config.model.generator_features) == levels
  assert tasks.make_task(config).generator.image_size == size


def test_gpu_forms_are_set_for_the_cost_model_and_auto_is_kept_otherwise():
  config = cost_model.family_config("unet_pconv", 256, 2, "bfloat16", "blocks")
  assert (config.model.decoder, config.model.strided_grad, config.model.pad_barrier) == ("concat", "xla", "off")
  assert (config.train.activation_dtype, config.train.remat, config.model.depth) == ("bfloat16", "blocks", 7)
  config = cost_model.family_config("deepfill_v2", 256, 2, gpu_forms=False)
  assert config.model.strided_grad == "auto"


def test_measure_one_tiny_family_compiles_without_running(monkeypatch):
  for name, value in (("verify", True), ("inference", False), ("tiny", "tiny"), ("memory_gb", 0.05)):
    monkeypatch.setattr(cost_model.FLAGS, name, value)
  row = cost_model.measure("unet_plain", 32, "float32", "none")
  train = row["train"]
  assert train["flops_per_image"] > 0 and train["bytes_per_image"] > 0
  assert train["memory_batch2"] > train["memory_batch1"] > 0
  assert train["memory_fixed"] + 2 * train["memory_per_image"] == pytest.approx(train["memory_batch2"])
  # the answer is compiled and fits; when the line through batch 1 and 2 overshot, the refit answer is smaller
  predicted = cost_model.max_batch(train["memory_fixed"], train["memory_per_image"], 0.05e9)
  assert row["verified"]["fits"] and row["verified"]["batch"] == row["max_batch"] <= predicted
  assert row["verified"]["memory"] <= 0.05e9 and abs(row["verified"]["line_error"]) < 0.1  # ~linear in batch
  assert set(row["projection"]["train"]) == {"A100", "H100"}
  assert "| unet_plain | 32 | float32 | none |" in cost_model.rows_to_markdown([row])


def test_device_check_runs_end_to_end_at_ci_size(tmp_path):
  """bench/device_check.sh in CI form: auto and one flipped choice, JSON written, table printed."""
  out = tmp_path / "check.json"
  # the suite's XLA flags (its -O0 included: the timings are only checked > 0) on one CPU device, not the tests' 8
  flags = [f for f in os.environ["XLA_FLAGS"].split() if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, DEVICE_CHECK_TINY="1", JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
  proc = subprocess.run(
    [
      os.path.join(ROOT, "bench", "device_check.sh"),
      "--families=unet_pconv",
      "--dtypes=float32",
      "--choices=decoder",
      f"--out={out}",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=280,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["backend"] == "cpu" and result["tiny"]
  forms = {r["flip"]: r for r in result["rows"]}
  assert set(forms) == {None, "decoder=concat"}  # on the CPU, 'auto' is subpixel; the alternative is concat
  for r in forms.values():
    assert r["step_s"] > 0 and r["infer_s"] > 0 and r["size"] == 32
  assert "| unet_pconv | float32 | decoder=concat |" in proc.stdout
