"""Evaluation, split by job. Import the module you need (`from jaxinpaint.eval import harness`); this file imports
nothing, so loading one job does not load the others.

- `mask_sets.py`: the mask kinds `config.eval.masks` names (`parse_mask_kinds`, `kind_label`, mask packs as
  `pack_<id>` kinds) and `EvalSet`, the fixed, seeded examples every method is scored on.
- `harness.py`: `Method` (a model through `task.predict`, or a classical peer), `loss_label`, and
  `evaluate_methods`, which scores methods on an `EvalSet` into `Results`.
- `tables.py`: report writing: Table I's markdown (best per column in bold), `write_results` (`eval_results.*`).
- `perceptual.py`: FID and LPIPS maths, their weight loading (`load_variables`, `abstract_variables`,
  `random_variables`, `flatten_variables`) and the `Perceptual` harness that `evaluate` and `ablate` score with.
  The networks themselves live with the other networks: `models/inception.py` (FID's Inception-v3) and
  `models/vgg.py` (the one VGG16, also the partial-conv loss's); the PyTorch converters are in `scripts/`.

The `evaluate` job itself (restore a run, score it beside the classical peers, write its results; the CLI) is
`jaxinpaint/evaluate.py`.
"""
