"""Mask packs from the command line (`jaxinpaint.data.mask_packs`): frozen eval masks any codebase can score on.

  python -m jaxinpaint.masks pack --kind=lama_thick --size=256 --n=2000 --seed=0 --out=packs/lama_thick_256
  python -m jaxinpaint.masks pack --kind=buckets --size=256 --n=2000 --out=packs/buckets_256   # six sub-packs
  python -m jaxinpaint.masks pack --from=their_masks/ --polarity=black_hole --resize=256 [--bucket] --out=DIR
  python -m jaxinpaint.masks verify DIR

Kinds: every mask kind the project draws (centre, random_box, random_boxes, free_form, deepfill_v2,
lines_circles, random_lines, lama_thin|medium|thick, '+' unions), hole_<low>-<high> and buckets. Prints the
pack id(s); bad input ends with one `error:` line and exit status 1, and leaves no pack behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxinpaint import cli, progress
from jaxinpaint.data import mask_packs


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m jaxinpaint.masks", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  pack = commands.add_parser("pack", help="write a mask pack (generated, or imported with --from)")
  pack.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
  pack.add_argument("--kind", help="mask kind to draw, hole_<low>-<high> or buckets")
  pack.add_argument("--size", type=int, default=256, help="mask side in pixels (generated packs)")
  pack.add_argument("--n", type=int, default=2000, help="masks to draw (per bucket for --kind=buckets)")
  pack.add_argument("--seed", type=int, default=0, help="mask i is drawn from default_rng([seed, 1, i])")
  pack.add_argument("--from", dest="source", help="import this folder of mask files instead of drawing")
  pack.add_argument(
    "--polarity", choices=mask_packs.POLARITIES, default="white_hole", help="--from: which colour is the hole"
  )
  pack.add_argument("--threshold", type=float, default=0.5, help="--from: grey level (fraction) that cuts edges")
  pack.add_argument("--resize", type=int, default=0, help="--from: resize every mask to S x S (nearest)")
  pack.add_argument("--bucket", action="store_true", help="--from: six sub-packs by hole ratio (0-10 %% ... 50-60 %%)")
  verify = commands.add_parser("verify", help="check a pack against its manifest and print its id")
  verify.add_argument("path")
  return parser


def run(args: argparse.Namespace) -> list[str]:
  """Does what the parsed command asks; returns the lines to print."""
  if args.command == "verify":
    return [
      f"{p.path}: pack {p.id} ({p.name}, {len(p)} masks, {p.size[0]}x{p.size[1]}) matches its manifest"
      for p in mask_packs.open_packs(args.path)
    ]
  if (args.kind is None) == (args.source is None):
    raise mask_packs.MaskPackError("pack needs exactly one of --kind=KIND (draw masks) or --from=DIR (import files)")
  if args.source is not None:
    total = len(mask_packs.find_mask_files(args.source))
    with progress.bar(total, desc="import", unit="mask", process_index=0) as b:
      manifests = mask_packs.import_folder(
        args.source,
        args.out,
        polarity=args.polarity,
        threshold=args.threshold,
        resize=args.resize,
        bucket=args.bucket,
        warn=lambda line: print(f"warning: {line}", file=sys.stderr),
        progress=b,
      )
  else:
    if args.bucket or args.resize or args.polarity != "white_hole":
      raise mask_packs.MaskPackError("--polarity, --threshold, --resize and --bucket are for --from=DIR imports")
    total = args.n * (len(mask_packs.BUCKET_KINDS) if args.kind == mask_packs.BUCKETS else 1)
    with progress.bar(total, desc=args.kind, unit="mask", process_index=0) as b:
      manifests = mask_packs.make_pack(args.kind, args.size, args.n, args.seed, args.out, progress=b)
  return [
    f"wrote pack {m['pack_id']} ({m['name']}, {m['count']} masks, {m['size'][0]}x{m['size'][1]}, mean hole "
    f"ratio {m['mean_hole_ratio']:.3f})"
    for m in manifests
  ]


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  # MaskPackError, bad kinds, unreachable buckets, disk errors; no library threads here: a plain SystemExit
  lines = cli.guarded(lambda: run(args), (ValueError, RuntimeError, OSError), hard=False)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
