"""`honestface-infer` (also `python scripts/infer.py`): restore faces (aligned crops or whole photos) with a trained
HonestFace (optionally with references) or VSPBFR model.

    honestface-infer --model runs/honestface/final --input lq/ --output restored/ --refs refs/
    honestface-infer --model M --whole --input "photos/**/*.jpg" --output out/ --refs people/ --pool
    honestface-infer --arch vspbfr --model runs/vspbfr/final --input lq/ --output restored/ --dtype bf16
    honestface-infer --model osdface --input lq/ --output restored/ --dtype bf16   # OSDFace's released files
    honestface-infer --model org/name --revision v1 --input lq/ --output restored/  # a Hugging Face Hub model
    honestface-infer --model M --input lq/ --output out/ --device cuda --dtype fp16 -b 16 --compile
    accelerate launch --multi_gpu --num_processes 4 -m honestface.apps.cli.infer --model M --input lq/ --output out/

Every flag is a shortcut for an `infer.*` (or `model.pretrained`) config key; any other key can be given as
key=value. The run is described in honestface/apps/infer.py; a summary of every input is written to
<output>/results.json. Exit codes: 0 all restored, 1 some inputs failed (see results.json), 2 bad command line,
config, paths or weights (one `error:` line, nothing written). -q prints only warnings and errors, -v debug lines.
"""

from __future__ import annotations

import argparse
import json
import sys

from honestface.apps.cli.common import guarded, invocation, sibling, start_logging

DESCRIPTION = ("Restore faces (aligned crops or whole photos) with a trained HonestFace (optionally with references) "
               "or VSPBFR model.")

EPILOG = """\
references (--refs; the same rule as {evaluate} --refs, honestface/data/reference_rule.py):
  a .json file             {"input.png": ["ref1.png", "ref2.png"], ...}
  a .csv file              rows input,ref1;ref2 (paths relative to the file)
  a folder of folders      refs/<input relative path without suffix>/ or refs/<input stem>/ per input
  identity folders         refs/<input's parent folder>/ (inputs as <person>/<image>): the other images of it
  any other folder         its images are the references of every input
  --pool                   the folder holds faces of many people: each face gets those of its identity
                           (infer.reference_mode=pool, matched with infer.ref_threshold)
  An input without references fails when --refs is given, unless infer.allow_blind=true.

models (--arch, model.name):
  honestface               a HonestFace.save_pretrained / training folder (the default)
  vspbfr                   a VSPBFR.save_pretrained folder (vspbfr_config.json + vspbfr.safetensors), e.g. from
                           the VSPBFR training stages or VSPBFR.from_official(...).save_pretrained(DIR); a folder
                           holding vspbfr_config.json is run as VSPBFR even without --arch. VSPBFR is blind:
                           --refs is ignored with a warning. --seed seeds its diffusion codes, random codes and
                           noise (one generator per face, so batching does not change a face).

video (--input clip.mp4 or --frames DIR): faces are tracked over frames, their alignment smoothed in time, each
  person matched once with --refs, restored and pasted back; the output keeps the frame rate and the audio.
  An interrupted run resumes from .<output name>.partial/ with the same command; <output stem>.results.json
  records the tracks. Keys: video.* (sigma, iou_threshold, identity_threshold, max_gap, fade_frames, crf, ...).

examples:
  {run} --model runs/honestface/final --input lq/ --output out/ --refs refs/ --batch-size 8
  {run} --model M --input clip.mp4 --output restored.mp4 --refs people/
  {run} --config my_infer.yaml --skip-existing infer.color_fix=wavelet
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 {launched} --model M --input lq/ \\
      --output out/                    (2 CPU processes; on GPUs drop ACCELERATE_USE_CPU)
"""

_DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                  "bf16": "bf16", "bfloat16": "bf16"}


def build_parser(prog: str = "honestface-infer") -> argparse.ArgumentParser:
    from honestface.config import add_config_arguments
    from honestface.log import add_logging_arguments

    launched = prog if prog.endswith(".py") else "-m honestface.apps.cli.infer"
    epilog = (EPILOG.replace("{run}", invocation(prog)).replace("{launched}", launched)
              .replace("{evaluate}", sibling(prog, "evaluate").removeprefix("python ")))
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--input", "-i", metavar="PATH", help="image file, folder (searched recursively) or glob "
                   "(quote it); or a video file [infer.input]")
    g.add_argument("--output", "-o", metavar="DIR", help="output folder; outputs keep the input's relative path "
                   "and stem, as .png; for a video: a video file or a folder of frames [infer.output]")
    g.add_argument("--refs", "-r", metavar="PATH", help="references: folder, folder per input, .json or .csv "
                   "mapping (see below) [infer.references]")
    g.add_argument("--pool", action="store_true", help="--refs is a pool of many people's faces "
                   "[infer.reference_mode=pool]")
    g.add_argument("--max-refs", type=int, metavar="K", help="at most K references per input [infer.max_references]")
    g.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists (status "
                   "'skipped') [infer.skip_existing]")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs) "
                   "[infer.overwrite]")
    g.add_argument("--save-comparison", action="store_true", help="also write <stem>_comparison.png: input | "
                   "restored [infer.save_comparison]")
    g.add_argument("--allow-output-in-input", action="store_true", help="permit an output folder inside the "
                   "input folder [infer.allow_output_in_input]")
    m = p.add_argument_group("model and run")
    m.add_argument("--model", "-m", metavar="DIR", help="model folder written by save_pretrained / training, a "
                   "released model by name: osdface, vspbfr (files from the weights registry, converted once; see "
                   "`" + sibling(prog, "weights") + " fetch --model NAME`), or a Hugging Face Hub id org/name (downloaded into the Hub cache "
                   "once; offline after) [model.pretrained]")
    m.add_argument("--onnx", metavar="DIR", help="run an ONNX export folder (honestface-export --format onnx) on "
                   "onnxruntime instead of --model (fp32; CUDA provider when available) [infer.onnx]")
    m.add_argument("--revision", metavar="REV", help="branch, tag or commit of a Hub id --model [model.revision]")
    m.add_argument("--arch", choices=["honestface", "vspbfr"], help="model family of --model (default: "
                   "honestface, or vspbfr for a folder with vspbfr_config.json) [model.name]")
    mode = m.add_mutually_exclusive_group()
    mode.add_argument("--aligned", dest="mode", action="store_const", const="aligned",
                      help="inputs are aligned face crops (default) [infer.mode=aligned]")
    mode.add_argument("--whole", dest="mode", action="store_const", const="photo",
                      help="inputs are whole photos: detect, align, restore, paste back [infer.mode=photo]")
    m.add_argument("--batch-size", "-b", type=int, metavar="N",
                   help="faces per model call [infer.batch_size; default 1 on a CPU, 4 on a GPU]")
    m.add_argument("--device", metavar="DEV", help="auto, cpu, cuda, cuda:1, ... [infer.device]")
    m.add_argument("--dtype", choices=sorted(_DTYPE_ALIASES), help="compute precision [infer.precision]")
    m.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU; slow first batch) "
                   "[infer.compile=true]")
    m.add_argument("--resolution", type=int, metavar="PX", help="face size the model runs at (default: the "
                   "model's native one, e.g. 512 for OSDFace; recorded in results.json) [infer.resolution]")
    m.add_argument("--seed", type=int, help="seed of the sampling (HonestFace: VAE posterior; VSPBFR: diffusion "
                   "start codes, random codes, noise) [infer.seed]")
    m.add_argument("--color-fix", choices=["auto", "none", "wavelet", "adain"], help="match the input's colours "
                   "(auto: wavelet for --whole, none for aligned) [infer.color_fix]")
    v = p.add_argument_group("video (an --input with a video suffix, or --frames; honestface/apps/infer_video.py)")
    v.add_argument("--frames", action="store_true", help="--input is a folder holding the frames of one clip; "
                   "--output a video file or a folder for PNG frames [video.frames=true]")
    v.add_argument("--fps", type=float, metavar="F", help="frame rate of a folder of frames (default 25) [video.fps]")
    v.add_argument("--smoothing", choices=["gaussian", "one_euro", "none"], help="temporal filter of each face "
                   "track's alignment (default gaussian, sigma video.sigma frames) [video.smoothing]")
    v.add_argument("--lossless", action="store_true", help="RGB-exact output codec: frames without a restored face "
                   "stay bit-identical (big files) [video.lossless=true]")
    add_config_arguments(p)
    add_logging_arguments(p)
    return p


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as `key=value` overrides (strings JSON-quoted so any path survives the YAML parse)."""
    pairs = {"infer.input": args.input, "infer.output": args.output, "infer.references": args.refs,
             "model.pretrained": args.model, "model.revision": args.revision, "model.name": args.arch, "infer.mode": args.mode, "infer.batch_size": args.batch_size,
             "infer.device": args.device, "infer.precision": _DTYPE_ALIASES.get(args.dtype) if args.dtype else None,
             "infer.seed": args.seed, "infer.max_references": args.max_refs, "infer.color_fix": args.color_fix,
             "infer.resolution": args.resolution, "infer.onnx": args.onnx, "video.fps": args.fps,
             "video.smoothing": args.smoothing}
    out = [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]
    for flag, key, value in (("skip_existing", "infer.skip_existing", "true"), ("compile", "infer.compile", "true"), ("overwrite", "infer.overwrite", "true"),
                             ("save_comparison", "infer.save_comparison", "true"),
                             ("allow_output_in_input", "infer.allow_output_in_input", "true"),
                             ("pool", "infer.reference_mode", "pool"), ("frames", "video.frames", "true"),
                             ("lossless", "video.lossless", "true")):
        if getattr(args, flag):
            out.append(f"{key}={value}")
    return out


def main(argv: list[str] | None = None, prog: str = "honestface-infer") -> int:
    from honestface.config import ConfigError, load_config, to_yaml

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    start_logging(args)
    try:
        cfg = load_config(args.config, [*args.overrides, *flag_overrides(args)])  # flags win
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from honestface.apps.infer import run_inference

    return guarded(run_inference, cfg)


if __name__ == "__main__":
    sys.exit(main())
