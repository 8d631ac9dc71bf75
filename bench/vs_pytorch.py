"""The partial-conv U-Net train step in JAX (this project) vs PyTorch (bench/torch_pconv_unet.py), interleaved.

  .venv/bin/pip install -e '.[bench]' --extra-index-url https://download.pytorch.org/whl/cpu  # torch, CPU build
  .venv/bin/python bench/vs_pytorch.py --size=256 --batch=4 --rounds=6
  .venv/bin/python bench/vs_pytorch.py --check  # the two nets agree on shared weights (64 px)

Two worker processes, one per framework, each holding its compiled/eager model, are driven in turns by this
process: round r runs `--steps` PyTorch steps, then `--steps` JAX steps (the order alternates every round), so both
see the same machine load; only one framework computes at any time. Each step is timed to completion
(`block_until_ready` / eager). Reported per model (train step: forward, loss, backward, Adam; inference: forward in
eval mode): median seconds over all timed steps after warm-up, and the ratio torch_s / jax_s (> 1: JAX faster).
Each worker also measures its matmul peak (f32 GEMM, GFLOP/s) in the same run; the machine peak is the larger
one, and the model's nominal FLOPs (convolutions of the paper's spec, counted once for forward, input gradient
and weight gradient) over each step time give the fraction of that peak. One JSON line per measurement.

The JAX worker runs the project's own train step (`train.Trainer` on configs/pconv.py at this size) with the XLA
CPU flags the project sets for training (`jaxinpaint.xla_flags`); inference uses the flags set for inference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from common import batch_arrays, depth_for, package_version  # bench/common.py (the script directory is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_integer("size", 256, "Image height and width.")
flags.DEFINE_integer("batch", 4, "Batch size.")
flags.DEFINE_integer("rounds", 6, "Interleaved rounds.")
flags.DEFINE_integer("steps", 3, "Timed steps per framework per round.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_list("models", ["train", "inference"], "What to race: train (the train step), inference.")
flags.DEFINE_bool("check", False, "Compare the two nets' outputs and losses on shared weights, then exit.")
flags.DEFINE_string("worker", "", "Internal: run as the torch or jax worker.")
flags.DEFINE_string("jax_flags", "", "Extra XLA_FLAGS for the JAX worker (for experiments).")
flags.DEFINE_bool("jax_project_flags", True, "Set the project's XLA CPU flags (jaxinpaint.xla_flags) for JAX.")
flags.DEFINE_integer("cores", 0, "Pin each worker to this many cores (0: all); 1 makes CPU times load-proof.")
FLAGS = flags.FLAGS

FEATURES, KERNELS = (64, 128, 256, 512), (7, 5, 5, 3)


def model_flops(size: int, batch: int, depth: int) -> tuple[float, float]:
  """(train, forward) FLOPs of the spec's convolutions: 2*B*H'*W'*k*k*Cin*Cout per conv; training counts each
  conv three times (forward, input gradient, weight gradient) except the first layer's input gradient."""
  width = lambda level: FEATURES[min(level, len(FEATURES) - 1)]
  kernel = lambda level: KERNELS[min(level, len(KERNELS) - 1)]
  fwd, first = 0.0, 0.0
  cin, s = 3, size
  for level in range(depth):
    s //= 2
    f = 2.0 * batch * s * s * kernel(level) ** 2 * cin * width(level)
    fwd += f
    first = first or f
    cin = width(level)
  for level in range(depth):
    out = 3 if level == 0 else width(level - 1)
    skip = 3 if level == 0 else width(level - 1)
    s = size >> level
    fwd += 2.0 * batch * s * s * 9 * (width(level) + skip) * out
  return 3 * fwd - first, fwd


# --- workers ------------------------------------------------------------------------------------------------------
class TorchWorker:
  def __init__(self, size, batch):
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from torch_pconv_unet import PConvUNet, pconv_loss

    torch.manual_seed(0)
    self.torch, self.loss_fn = torch, pconv_loss
    image, valid = batch_arrays(size, batch)
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    self.image, self.valid = to(image), to(valid)
    self.net = PConvUNet(depth=depth_for(size)).to(memory_format=torch.channels_last)
    self.opt = torch.optim.Adam(self.net.parameters(), lr=2e-4)

  def train(self):
    self.net.train()
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss_fn(self.net(self.image, self.valid), self.image, self.valid)
    loss.backward()
    self.opt.step()
    float(loss)

  def inference(self):
    self.net.eval()
    with self.torch.inference_mode():
      out = self.net(self.image, self.valid)
    float(out[0, 0, 0, 0])

  def matmul_peak(self):
    a, b = self.torch.randn(2048, 2048), self.torch.randn(2048, 2048)
    return _peak(lambda: a @ b, 2 * 2048.0**3)


class JaxWorker:
  def __init__(self, size, batch):
    import jax

    from jaxinpaint import sharding, train
    from common import pconv_config

    self.jax = jax
    config = pconv_config(size, batch)
    self.trainer = train.Trainer(config, jax.devices()[:1])
    image, valid = batch_arrays(size, batch)
    self.batch = sharding.to_global({"image": image, "valid": valid}, self.trainer.mesh)
    self.state = self.trainer.initial_state()
    t0 = time.perf_counter()
    self.step = self.trainer.compile_step(self.trainer.task, self.state)
    self.compile_s = time.perf_counter() - t0
    task = self.trainer.task
    self.predict = jax.jit(lambda p, s, b: task.predict(p, s, b)["output"])

  def train(self):
    self.state, metrics = self.step(self.state, self.batch)
    self.jax.block_until_ready((self.state.params, metrics))

  def inference(self):
    self.jax.block_until_ready(self.predict(self.state.params, self.state.model_state, self.batch))

  def matmul_peak(self):
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32))
    f = self.jax.jit(lambda a: a @ a)
    return _peak(lambda: self.jax.block_until_ready(f(a)), 2 * 2048.0**3)


def _peak(fn, flops, repeats=10):
  for _ in range(3):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return flops / min(times) / 1e9


def run_worker(kind: str):
  """Line protocol on stdin/stdout: 'train N' / 'inference N' -> {"times": [...], "cpu": [...]} (wall and
  process CPU seconds per step); 'peak' -> {"gflops": x}."""
  if FLAGS.cores:  # before torch/jax start their thread pools, which size themselves to the affinity mask
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: FLAGS.cores]))
  if kind.startswith("jax"):
    from jaxinpaint import xla_flags

    if FLAGS.jax_project_flags:
      xla_flags.set_cpu_flags(extra=FLAGS.jax_flags)
    else:
      os.environ["XLA_FLAGS"] = f"{xla_flags.unset_cpu_flags()} {FLAGS.jax_flags}"  # `import jaxinpaint` set them
  worker = (TorchWorker if kind == "torch" else JaxWorker)(FLAGS.size, FLAGS.batch)
  for mode in FLAGS.models:
    for _ in range(FLAGS.warmup):
      getattr(worker, mode)()
  print(json.dumps({"ready": kind, "compile_s": getattr(worker, "compile_s", None)}), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    if cmd[0] == "peak":
      print(json.dumps({"gflops": worker.matmul_peak()}), flush=True)
      continue
    times, cpu = [], []
    for _ in range(int(cmd[1])):
      t, c = time.perf_counter(), time.process_time()
      getattr(worker, cmd[0])()
      times.append(time.perf_counter() - t)
      cpu.append(time.process_time() - c)
    print(json.dumps({"times": times, "cpu": cpu}), flush=True)


# --- driver -------------------------------------------------------------------------------------------------------
class Proc:
  def __init__(self, kind):
    models = FLAGS.models if kind == "torch" else [kind.split("_")[1]]
    args = [
      sys.executable,
      os.path.abspath(__file__),
      f"--worker={kind}",
      f"--size={FLAGS.size}",
      f"--batch={FLAGS.batch}",
      f"--warmup={FLAGS.warmup}",
      f"--models={','.join(models)}",
      f"--jax_flags={FLAGS.jax_flags}",
      f"--jax_project_flags={FLAGS.jax_project_flags}",
      f"--cores={FLAGS.cores}",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "bench")]))
    self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    self.ready = self.read()

  def ask(self, cmd):
    self.p.stdin.write(cmd + "\n")
    self.p.stdin.flush()
    return self.read()

  def read(self):
    line = self.p.stdout.readline()
    if not line:
      raise RuntimeError(f"worker exited with status {self.p.wait()}")
    return json.loads(line)

  def close(self):
    self.p.stdin.write("quit\n")
    self.p.stdin.close()
    self.p.wait()


def race():
  import platform

  load = os.getloadavg()
  # one PyTorch worker for every mode; one JAX worker per mode, each with that workload's XLA flags
  workers = {"torch": Proc("torch"), **{f"jax_{m}": Proc(f"jax_{m}") for m in FLAGS.models}}
  fw = lambda kind, mode: kind if kind == "torch" else f"jax_{mode}"
  times = {(k, m): [] for k in ("torch", "jax") for m in FLAGS.models}
  cpu = {(k, m): [] for k in ("torch", "jax") for m in FLAGS.models}
  peaks = {"torch": [], "jax": []}
  for r in range(FLAGS.rounds):
    order = ["torch", "jax"] if r % 2 == 0 else ["jax", "torch"]
    for mode in FLAGS.models:
      for kind in order:
        time.sleep(0.3)  # let the other framework's spinning threads go idle
        reply = workers[fw(kind, mode)].ask(f"{mode} {FLAGS.steps}")
        times[(kind, mode)] += reply["times"]
        cpu[(kind, mode)] += reply["cpu"]
    for kind in order:
      peaks[kind].append(workers[fw(kind, FLAGS.models[0])].ask("peak")["gflops"])
  for w in workers.values():
    w.close()
  depth = depth_for(FLAGS.size)
  train_flops, fwd_flops = model_flops(FLAGS.size, FLAGS.batch, depth)
  peak = max(max(v) for v in peaks.values())
  import torch

  info = {
    "size": FLAGS.size,
    "batch": FLAGS.batch,
    "cpu": platform.processor() or platform.machine(),
    "cores": FLAGS.cores or os.cpu_count(),
    "load_before": round(load[0], 2),
    "load_after": round(os.getloadavg()[0], 2),
    "torch": torch.__version__,
    "jax": package_version("jax"),
  }
  print(json.dumps({"matmul_peak_gflops": {k: round(max(v), 1) for k, v in peaks.items()}, **info}))
  for mode in FLAGS.models:
    flops = train_flops if mode == "train" else fwd_flops
    med = {k: float(np.median(times[(k, mode)])) for k in ("torch", "jax")}
    med_cpu = {k: float(np.median(cpu[(k, mode)])) for k in ("torch", "jax")}
    print(
      json.dumps(
        {
          "model": f"pconv_unet_{mode}",
          "torch_step_s": round(med["torch"], 4),
          "jax_step_s": round(med["jax"], 4),
          "ratio_torch_over_jax": round(med["torch"] / med["jax"], 3),
          "torch_cpu_s": round(med_cpu["torch"], 4),
          "jax_cpu_s": round(med_cpu["jax"], 4),
          "cpu_ratio_torch_over_jax": round(med_cpu["torch"] / med_cpu["jax"], 3),
          "model_gflop": round(flops / 1e9, 1),
          "torch_fraction_of_peak": round(flops / med["torch"] / 1e9 / peak, 3),
          "jax_fraction_of_peak": round(flops / med["jax"] / 1e9 / peak, 3),
          "timed_steps": len(times[("jax", mode)]),
          **info,
        }
      ),
      flush=True,
    )


def check():
  """Same weights, same batch: outputs (train-mode BatchNorm) and losses of the two nets agree."""
  import jax
  import torch

  sys.path.insert(0, os.path.join(ROOT, "bench"))
  from common import copy_params_to_torch, pconv_config
  from torch_pconv_unet import PConvUNet, pconv_loss

  from jaxinpaint import tasks

  size, batch = 64, 2
  config = pconv_config(size, batch)
  task = tasks.make_task(config)
  image, valid = batch_arrays(size, batch, seed=1)
  variables = task.init(jax.random.key(0), {"image": image, "valid": valid})
  (loss, (_, _)) = task.loss_fn(
    variables["params"],
    {k: v for k, v in variables.items() if k != "params"},
    {"image": image, "valid": valid},
    jax.random.key(1),
    0,
  )
  out_jax, _ = task.model.apply(variables, image, valid, train=True, mutable=["batch_stats"])
  net = PConvUNet(depth=depth_for(size))
  copy_params_to_torch(variables["params"], net)
  to = lambda a: torch.from_numpy(np.asarray(a)).permute(0, 3, 1, 2).contiguous()
  net.train()
  with torch.no_grad():
    out_torch = net(to(image), to(valid))
    loss_torch = pconv_loss(out_torch, to(image), to(valid))
  out_torch = out_torch.permute(0, 2, 3, 1).numpy()
  err = float(np.max(np.abs(out_torch - np.asarray(out_jax))))
  print(
    json.dumps(
      {
        "check": "pconv_unet",
        "size": size,
        "max_abs_output_diff": err,
        "loss_jax": float(loss),
        "loss_torch": float(loss_torch),
      }
    )
  )
  if err > 1e-3 or abs(float(loss) - float(loss_torch)) > 1e-4 * max(1.0, abs(float(loss))):
    raise SystemExit("the PyTorch and JAX nets disagree")


def main(argv):
  del argv
  if FLAGS.worker:
    run_worker(FLAGS.worker)
  elif FLAGS.check:
    check()
  else:
    race()


if __name__ == "__main__":
  app.run(main)
