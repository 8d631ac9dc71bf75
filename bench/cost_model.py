"""Cost model per model family from the compiled HLO: FLOPs, bytes, memory per device vs batch, the largest batch
that fits a GPU, and a roofline step time on A100/H100 — compile only, nothing big runs here.

  .venv/bin/python bench/cost_model.py --out=bench/results/cost_model.jsonl  # all families, 256 + 512 px (~1 h)
  .venv/bin/python bench/cost_model.py --families=unet_pconv --sizes=256 --dtypes=float32 --remats=none
  .venv/bin/python bench/cost_model.py --render=bench/results/cost_model.jsonl     # tables of an earlier run

Per family, size, activation dtype and `config.train.remat`: the project's own train step (`train.Trainer`:
forward, loss, backward, Adam, metrics) and inference (`task.predict`) are lowered and compiled for one device on
the CPU backend (LLVM at -O0: buffer assignment, hence memory, is decided before LLVM) at batch 1 and 2.
`compiled.cost_analysis()` gives FLOPs and bytes accessed, `compiled.memory_analysis()` the memory per device
(arguments + outputs + temporaries - donated aliases). Both are linear in the batch, so a line through the two
points gives the largest batch that fits `--memory_gb` (80 GB: A100/H100 80 GB), and one more compile at that
batch checks it (`verified`). FSDP (config.mesh 'data=-1,fsdp=N'): the state leaves `sharding.fsdp_spec` shards
take 1/N per device; the row's `fsdp_max_batch` subtracts that saving from the compiled single-device memory
(derived, not compiled on N devices).

The models are built with the GPU forms of the backend-aware fast paths (decoder 'concat', strided_grad 'xla',
pad_barrier 'off': what 'auto' picks on a GPU), so the numbers describe what a GPU run compiles.

PROJECTION, not a measurement: step time = max(FLOPs / peak, bytes / HBM bandwidth) with the published dense
peaks below, on XLA:CPU's fused HLO (GPU fusion differs, so bytes are indicative); real steps are slower (kernel
efficiency, launch overhead). No GPU has run these models yet: bench/device_check.sh measures them.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from absl import app, flags  # noqa: E402

# Published dense peaks (no sparsity), FLOP/s, and HBM bandwidth, B/s:
# A100 SXM4 80 GB (NVIDIA A100 datasheet, 2021): FP32 19.5 T, TF32 tensor 156 T, BF16 tensor 312 T, 2,039 GB/s.
# H100 SXM5 80 GB (NVIDIA H100 datasheet, 2023): FP32 67 T, TF32 tensor 494.7 T, BF16 tensor 989.4 T, 3.35 TB/s.
# JAX's default precision lets f32 convolutions run as TF32 on these GPUs, so f32 uses the TF32 peak.
GPUS = {
  "A100": {"float32": 156e12, "bfloat16": 312e12, "fp32_no_tensor_cores": 19.5e12, "hbm_bytes_per_s": 2.039e12},
  "H100": {"float32": 494.7e12, "bfloat16": 989.4e12, "fp32_no_tensor_cores": 67e12, "hbm_bytes_per_s": 3.35e12},
}

from common import FAMILIES, family_config  # noqa: E402  (shared with bench/device_check.py)

flags.DEFINE_list("families", list(FAMILIES), "Families (keys of FAMILIES).")
flags.DEFINE_list("sizes", ["256", "512"], "Image sizes (px).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Activation dtypes (config.train.activation_dtype).")
flags.DEFINE_list("remats", ["none", "blocks"], "config.train.remat values (families without remat: 'none').")
flags.DEFINE_float("memory_gb", 80.0, "Device memory for the largest-batch search (GB = 1e9 bytes).")
flags.DEFINE_integer("fsdp", 8, "FSDP group size for the derived fsdp_max_batch.")
flags.DEFINE_integer("projection_batch", 16, "Per-device batch of the projected step time.")
flags.DEFINE_bool("verify", True, "Compile once more at the predicted largest batch and check it fits.")
flags.DEFINE_bool("inference", True, "Also the inference cost (batch 1 and 2).")
flags.DEFINE_string("out", "", "Append one JSON line per row to this file ('' = stdout only).")
flags.DEFINE_list("render", [], "Only print the tables of these JSONL files (earlier runs' --out); no compiling.")
flags.DEFINE_string("tiny", "", "Config variant for a CI-size run (e.g. 'tiny'); '' = the full models.")
FLAGS = flags.FLAGS


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def _memory(compiled) -> int:
  mem = compiled.memory_analysis()
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes)


OPTIONS = {"xla_backend_optimization_level": 0}  # LLVM -O0: same HLO and buffers, a fraction of the compile time


def compile_train(config):
  """(compiled train step on one device, trainer) without running anything."""
  import jax

  from jaxinpaint import train

  trainer = train.Trainer(config, jax.devices()[:1])
  batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=trainer.batch_shardings[k])
    for k, v in train.example_batch(config, config.batch_size).items()
  }
  state = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), trainer.abstract_state, trainer.state_shardings
  )
  return trainer._jit_train_step(trainer.task).lower(state, batch).compile(OPTIONS), trainer


def compile_inference(trainer, batch_size: int):
  import jax

  from jaxinpaint import train

  batch = train.example_batch(trainer.config, batch_size)
  state = trainer.abstract_state
  predict = jax.jit(trainer.task.predict)
  return predict.lower(state.params, state.model_state, batch).compile(OPTIONS)


def fsdp_saving(trainer, fsdp: int) -> int:
  """Bytes per device the FSDP rule saves on the train state: sum over sharded leaves of size * (1 - 1/fsdp)."""
  import jax
  import numpy as np

  from jaxinpaint import sharding

  min_size = trainer.config.get("fsdp_min_size", sharding.FSDP_MIN_SIZE)
  saved = 0
  for leaf in jax.tree.leaves(trainer.abstract_state):
    if sharding.fsdp_spec(tuple(leaf.shape), fsdp, min_size) != sharding.P():
      saved += int(np.prod(leaf.shape)) * leaf.dtype.itemsize * (fsdp - 1) // fsdp
  return saved


def line(p1: float, p2: float, b1: int = 1, b2: int = 2) -> tuple[float, float]:
  """(intercept, slope) of the line through (b1, p1) and (b2, p2)."""
  slope = (p2 - p1) / (b2 - b1)
  return p1 - slope * b1, slope


def max_batch(intercept: float, slope: float, budget: float) -> int:
  """Largest integer batch b >= 0 with intercept + slope * b <= budget."""
  if slope <= 0:
    return 0
  return max(0, int((budget - intercept) // slope))


def roofline(flops: float, nbytes: float, dtype: str) -> dict:
  """Projected seconds per step on each GPU: max(flops / peak, bytes / bandwidth), and which bound it is."""
  out = {}
  for gpu, spec in GPUS.items():
    compute, memory = flops / spec[dtype], nbytes / spec["hbm_bytes_per_s"]
    out[gpu] = {"step_s": max(compute, memory), "bound": "compute" if compute >= memory else "memory"}
  return out


def measure(family: str, size: int, dtype: str, remat: str) -> dict:
  """One row: costs and memory at batch 1 and 2, the lines through them, the largest batch, projections."""
  t0 = time.perf_counter()
  budget = FLAGS.memory_gb * 1e9
  row = {"family": family, "config": FAMILIES[family][0], "size": size, "dtype": dtype, "remat": remat}
  points = {}
  trainer = None
  for b in (1, 2):
    compiled, trainer = compile_train(family_config(family, size, b, dtype, remat, FLAGS.tiny))
    points[b] = {**_cost(compiled), "memory": _memory(compiled)}
  mem0, mem1 = line(points[1]["memory"], points[2]["memory"])
  flops0, flops1 = line(points[1]["flops"], points[2]["flops"])
  bytes0, bytes1 = line(points[1]["bytes"], points[2]["bytes"])
  row["train"] = {
    "flops_per_image": flops1,
    "bytes_per_image": bytes1,
    "flops_fixed": flops0,
    "bytes_fixed": bytes0,
    "memory_fixed": mem0,
    "memory_per_image": mem1,
    "memory_batch1": points[1]["memory"],
    "memory_batch2": points[2]["memory"],
  }
  biggest = max_batch(mem0, mem1, budget)
  row["max_batch"] = biggest
  known = {1: points[1]["memory"], 2: points[2]["memory"]}
  for _ in range(3 if FLAGS.verify else 0):  # compile at the answer; when it does not fit, refit and try again
    if biggest <= 2 or biggest in known:
      break
    used = _memory(compile_train(family_config(family, size, biggest, dtype, remat, FLAGS.tiny))[0])
    known[biggest] = used
    row["verified"] = {
      "batch": biggest,
      "memory": used,
      "fits": used <= budget,
      "line_error": (used - (mem0 + mem1 * biggest)) / used,
    }
    if used <= budget:
      break
    lo = max(b for b in known if b < biggest)  # the line through the largest fitting point and this one
    mem0, mem1 = line(known[lo], used, lo, biggest)
    biggest = max_batch(mem0, mem1, budget)
  row["max_batch"] = biggest
  saving = fsdp_saving(trainer, FLAGS.fsdp)
  row["fsdp"] = {"n": FLAGS.fsdp, "state_saving_bytes": saving, "max_batch": max_batch(mem0 - saving, mem1, budget)}
  n = FLAGS.projection_batch
  row["projection"] = {"batch": n, "train": roofline(flops0 + flops1 * n, bytes0 + bytes1 * n, dtype)}
  if FLAGS.inference and remat == "none" and dtype == "float32":  # the cost table's rows
    ipoints = {b: _cost(compile_inference(trainer, b)) for b in (1, 2)}
    if0, if1 = line(ipoints[1]["flops"], ipoints[2]["flops"])
    ib0, ib1 = line(ipoints[1]["bytes"], ipoints[2]["bytes"])
    row["inference"] = {"flops_per_image": if1, "bytes_per_image": ib1, "flops_fixed": if0, "bytes_fixed": ib0}
    row["projection"]["inference"] = roofline(if0 + if1 * n, ib0 + ib1 * n, dtype)
  row["compile_s"] = round(time.perf_counter() - t0, 1)
  return row


def rows_to_markdown(rows: list[dict]) -> str:
  """The cost table (f32, no remat) and the memory table (largest batch per dtype/remat) as Markdown."""
  g = lambda x: f"{x / 1e9:,.1f}"
  gb = lambda x: f"{x / 1e9:.3f}"
  out = [
    "| family | px | train GFLOP/img | train GB accessed/img | infer GFLOP/img | memory GB: fixed + per img | "
    f"A100 step s (b{FLAGS.projection_batch}) | H100 step s | A100 infer s | H100 infer s |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if r["dtype"] != "float32" or r["remat"] != "none":
      continue
    t, p = r["train"], r["projection"]
    inf = r.get("inference")
    cell = lambda kind, gpu: f"{p[kind][gpu]['step_s']:.3f} ({p[kind][gpu]['bound'][0]})" if kind in p else "-"
    out.append(
      f"| {r['family']} | {r['size']} | {g(t['flops_per_image'])} | {g(t['bytes_per_image'])} | "
      f"{g(inf['flops_per_image']) if inf else '-'} | {gb(t['memory_fixed'])} + {gb(t['memory_per_image'])} | "
      f"{cell('train', 'A100')} | {cell('train', 'H100')} | {cell('inference', 'A100')} | "
      f"{cell('inference', 'H100')} |"
    )
  out += [
    "",
    f"| family | px | dtype | remat | max batch ({FLAGS.memory_gb:g} GB) | verified at | FSDP={FLAGS.fsdp} max batch |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    v = r.get("verified")
    check = f"{v['memory'] / 1e9:.1f} GB {'fits' if v['fits'] else 'DOES NOT FIT'}" if v else "-"
    out.append(
      f"| {r['family']} | {r['size']} | {r['dtype']} | {r['remat']} | {r['max_batch']} | {check} | "
      f"{r['fsdp']['max_batch']} |"
    )
  return "\n".join(out)


def main(argv):
  del argv
  if FLAGS.render:
    rows = [json.loads(line) for path in FLAGS.render for line in open(path) if line.strip()]
    print(rows_to_markdown([r for r in rows if "failed" not in r]))
    return
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()
  import jax

  from common import package_version

  unknown = [f for f in FLAGS.families if f not in FAMILIES]
  if unknown:
    raise app.UsageError(f"unknown families {unknown}; known: {list(FAMILIES)}")
  header = {
    "what": "cost model (PROJECTION from compiled HLO; no GPU measurement)",
    "jax": package_version("jax"),
    "backend": jax.default_backend(),
    "memory_gb": FLAGS.memory_gb,
    "gpus": GPUS,
  }
  print(json.dumps(header), flush=True)
  rows = []
  sizes = [int(s) for s in FLAGS.sizes]
  # most wanted first (a long run stopped early keeps them): f32 at every size, bf16 at the first, remat, the rest
  combos = [("none", s, "float32") for s in sizes] + [("none", sizes[0], "bfloat16")]
  combos += [(r, s, d) for r in FLAGS.remats for s in sizes for d in ("float32", "bfloat16")]
  combos = [c for i, c in enumerate(combos) if c not in combos[:i] and c[0] in FLAGS.remats and c[2] in FLAGS.dtypes]
  for remat, size, dtype in combos:
    for family in FLAGS.families:
      if remat != "none" and not FAMILIES[family][2]:
        continue
      try:
        row = measure(family, size, dtype, remat)
      except Exception as e:  # one failing family (e.g. one that does not build at this size) leaves the rest
        row = {
          "family": family,
          "size": size,
          "dtype": dtype,
          "remat": remat,
          "failed": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        }
      print(json.dumps(row), flush=True)
      if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, "a") as f:
          f.write(json.dumps(row) + "\n")
      if "failed" not in row:
        rows.append(row)
  print(rows_to_markdown(rows))


if __name__ == "__main__":
  app.run(main)
