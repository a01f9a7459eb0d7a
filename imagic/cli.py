"""The `imagic` command line.

User errors (`ImagicError`) print one clear message and exit with code 2, without a traceback;
argparse does the same for malformed flags. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

import imagic
from imagic.config import ETA_MAX, EditSpec, parse_params
from imagic.errors import ImagicError
from imagic.toyworld.shipped import SHIPPED_MODEL

if TYPE_CHECKING:  # the method pulls in torch and diffusers: import it only to run an edit
    from imagic.edit import EditOutputs
    from imagic.method import StageProgress
    from imagic.tracking import TrackingOptions

EXIT_USER_ERROR = 2

FLAG_OF_FIELD = {
    "image": "--image",
    "text": "--text",
    "model": "--model",
    "device": "--device",
    "precision": "--precision",
    "resolution_fit": "--fit",
    "max_megapixels": "--max-megapixels",
    "optimize.steps": "--steps-a",
    "optimize.learning_rate": "--lr-a",
    "optimize.timesteps_per_step": "--timesteps-per-step",
    "optimize.seed": "--train-seed",
    "finetune.steps": "--steps-b",
    "finetune.learning_rate": "--lr-b",
    "finetune.lora_rank": "--lora-rank",
    "finetune.timesteps_per_step": "--timesteps-per-step",
    "finetune.seed": "--train-seed",
    "generate.etas": "--eta",
    "generate.seeds": "--seeds",
    "generate.num_inference_steps": "--steps-c",
    "generate.guidance_scale": "--guidance",
    "generate.guidance_rescale": "--guidance-rescale",
    "generate.batch_size": "--batch-size",
    "generate.scheduler": "--scheduler",
}
"""CLI flag of each EditSpec field, so validation errors name what the user actually typed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagic",
        description="Imagic: edit one real image with a target text (Kawar et al. 2022).",
    )
    parser.add_argument("--version", action="version", version=f"imagic {imagic.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_edit_command(commands)
    _add_demo_command(commands)
    _add_tiny_model_command(commands)
    _add_toy_command(commands)
    return parser


def _add_edit_command(commands: Any) -> None:
    edit = commands.add_parser(
        "edit",
        help="run stages A, B and C on one image",
        description="Optimize the text embedding (A), fine-tune the UNet (B), then sample "
        "e = eta*e_tgt + (1-eta)*e_opt for every eta x seed (C). Writes the images, grid.png "
        "and manifest.json to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    edit.add_argument("--image", required=True, help="input image file")
    edit.add_argument("--text", required=True, help="target text, e.g. 'a dog sitting down'")
    edit.add_argument(
        "--model",
        default=os.environ.get("IMAGIC_MODEL") or SHIPPED_MODEL,
        help=f"local diffusers folder, hub id, or {SHIPPED_MODEL} (the shipped toy model) "
        "(env IMAGIC_MODEL)",
    )
    _add_edit_flags(edit)
    edit.set_defaults(handler=_run_edit_command)


def _add_demo_command(commands: Any) -> None:
    """`imagic demo`: `imagic edit` with the shipped toy model, scene and text as defaults."""
    from imagic.toyworld import demo  # no torch

    parser = commands.add_parser(
        "demo",
        help="edit a shipped toy scene with the shipped toy model (about a minute on a CPU)",
        description=f"Edit the shipped toy scene (a large red square on the left) to "
        f"'{demo.DEMO_TEXT}' with the shipped toy model, over an eta sweep, and write the "
        "grid. Takes every flag of `imagic edit`; these defaults differ.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image", default=str(demo.DEMO_IMAGE), help="input image file")
    parser.add_argument("--text", default=demo.DEMO_TEXT, help="target text")
    parser.add_argument("--model", default=SHIPPED_MODEL, help="model (see imagic edit)")
    _add_edit_flags(parser)
    parser.set_defaults(
        handler=_run_edit_command,
        eta=list(demo.DEMO_ETAS),
        seeds=list(demo.DEMO_SEEDS),
        steps_a=demo.DEMO_STEPS_A,
        steps_b=demo.DEMO_STEPS_B,
        lr_b=demo.DEMO_LR_B,
        steps_c=demo.DEMO_STEPS_C,
        guidance=demo.DEMO_GUIDANCE,
        out=demo.DEMO_OUT,
    )


def _add_edit_flags(edit: argparse.ArgumentParser) -> None:
    """The flags `imagic edit` and `imagic demo` share (all but --image, --text, --model)."""
    edit.add_argument("--revision", help="hub revision of --model")
    edit.add_argument(
        "--eta", type=float, nargs="+", default=[0.6, 0.7, 0.8], help=f"etas in [0, {ETA_MAX}]"
    )
    edit.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    edit.add_argument("--out", default="imagic-out", help="output folder (must be new or empty)")
    edit.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    edit.add_argument("--lora", action="store_true", help="fine-tune LoRA adapters, not the UNet")
    edit.add_argument("--lora-rank", type=int, default=4, help="LoRA rank")
    edit.add_argument("--steps-a", type=int, default=500, help="stage A (embedding) steps")
    edit.add_argument("--steps-b", type=int, default=1000, help="stage B (fine-tune) steps")
    edit.add_argument("--steps-c", type=int, default=50, help="sampling steps per image")
    edit.add_argument("--lr-a", type=float, default=1e-3, help="stage A learning rate")
    edit.add_argument(
        "--lr-b", type=float, default=None, help="stage B learning rate [2e-6 full, 1e-4 LoRA]"
    )
    edit.add_argument(
        "--timesteps-per-step", type=int, default=1, help="timesteps averaged per step (A and B)"
    )
    edit.add_argument("--train-seed", type=int, default=0, help="seed of A and B's noise draws")
    edit.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance")
    edit.add_argument(
        "--guidance-rescale", type=float, default=0.0, help="guidance rescale, 0 (none) to 1"
    )
    edit.add_argument("--batch-size", type=int, default=4, help="images per sampling batch")
    edit.add_argument("--scheduler", default="ddim", help="sampling scheduler")
    edit.add_argument(
        "--gradient-checkpointing", action="store_true", help="save memory in stage B"
    )
    edit.add_argument("--fit", default="crop", help="fit input to model: crop or pad")
    edit.add_argument("--max-megapixels", type=float, default=64.0, help="largest input accepted")
    edit.add_argument(
        "--device", default=os.environ.get("IMAGIC_DEVICE", "auto"), help="auto|cpu|mps|cuda[:N]"
    )
    edit.add_argument(
        "--store",
        default=None,
        help="artifact store: folder, file:///abs or s3://bucket/prefix "
        "(env IMAGIC_STORE, else ./imagic-data)",
    )
    edit.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (env MLFLOW_TRACKING_URI, else MLflow's local default)",
    )
    edit.add_argument("--experiment", default="imagic", help="MLflow experiment name")
    edit.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    edit.add_argument(
        "--tracking-required",
        action="store_true",
        help="fail before any work if MLflow is unreachable (default: warn, run untracked)",
    )
    edit.add_argument(
        "--log-weights",
        choices=["copy", "reference"],
        default="copy",
        help="fine-tuned weights in MLflow: a copy, or only the store URI",
    )
    edit.add_argument(
        "--precision",
        default=os.environ.get("IMAGIC_PRECISION", "auto"),
        help="auto|fp32|fp16|bf16",
    )
    edit.add_argument(
        "--via-prefect",
        action="store_true",
        help="run the edit as the Prefect flow imagic-edit (visible in the Prefect UI of "
        "PREFECT_API_URL; a temporary local server when unset)",
    )
    edit.add_argument(
        "--placement",
        choices=["local", "deployments"],
        default="local",
        help="with --via-prefect: stages in this process, or as runs of their deployments",
    )


def _add_tiny_model_command(commands: Any) -> None:
    tiny = commands.add_parser(
        "tiny-model",
        help="write a tiny random SD pipeline folder (offline; for trying and testing)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tiny.add_argument("--out", default="tiny-sd", help="folder to create")
    tiny.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    tiny.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    tiny.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    tiny.set_defaults(handler=_run_tiny_model_command)


def _add_toy_command(commands: Any) -> None:
    """`imagic toy COMMAND`: the toy world's own text-to-image model (issue 5)."""
    from imagic.toyworld.config import ToyTrainParams  # pydantic only; no torch

    defaults = {name: field.default for name, field in ToyTrainParams.model_fields.items()}
    toy = commands.add_parser(
        "toy",
        help="the toy world's own small text-to-image model",
        description="Train the small text-to-image model of the procedural toy world.",
    )
    toy_commands = toy.add_subparsers(dest="toy_command", required=True, metavar="COMMAND")
    train = toy_commands.add_parser(
        "train",
        help="train the toy model from scratch (resumable)",
        description="Phase a trains the VAE on rendered scenes, phase b the text encoder and "
        "UNet on (caption, latent) pairs, phase c fine-tunes the VAE decoder (the latents stay "
        "the same). Checkpoints go to OUT/checkpoints; rerunning the same "
        "command resumes from the newest. Writes OUT/losses.json, OUT/grid.png and the fp16 "
        "diffusers pipeline OUT/model (with checksums.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--out", required=True, help="training folder (new, empty or resumable)")
    for flag, name, kind, text in (
        ("--vae-steps", "vae_steps", int, "phase a (VAE) steps"),
        ("--unet-steps", "unet_steps", int, "phase b (text encoder + UNet) steps"),
        ("--decoder-steps", "decoder_steps", int, "phase c (VAE decoder fine-tuning) steps"),
        ("--decoder-lr", "decoder_learning_rate", float, "phase c peak learning rate"),
        (
            "--decoder-area-balance",
            "decoder_area_balance",
            float,
            "phase c: 0 weighs object pixels alike, 1 small objects as much as a 100-px one",
        ),
        (
            "--unet-object-weight",
            "unet_object_weight",
            float,
            "phase b: weight of latent cells under objects in the loss; 1 (area balance 0): plain",
        ),
        (
            "--unet-area-balance",
            "unet_area_balance",
            float,
            "phase b: as --decoder-area-balance, for --unet-object-weight",
        ),
        (
            "--vae-crop-size",
            "vae_crop_size",
            int,
            "phase a: train the VAE on random crops of this side; 64 (the image): whole scenes",
        ),
        (
            "--batch-size",
            "batch_size",
            int,
            "scenes per step of phases a and b",
        ),
        (
            "--decoder-batch-size",
            "decoder_batch_size",
            int,
            "scenes per step of phase c",
        ),
        ("--seed", "seed", int, "seed of weights, data, noise and timesteps"),
        ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints and grids"),
        (
            "--data-workers",
            "data_workers",
            int,
            "processes rendering batches ahead; left out: 0 on a CPU, else up to 4",
        ),
        ("--grid-size", "grid_size", int, "held-out captions per sample grid"),
        ("--sample-steps", "sample_steps", int, "DDIM steps of the sample grids"),
    ):
        train.add_argument(flag, dest=name, type=kind, default=defaults[name], help=text)
    train.add_argument(
        "--device", default=os.environ.get("IMAGIC_DEVICE", "auto"), help="auto|cpu|mps|cuda[:N]"
    )
    train.add_argument(
        "--precision",
        default=defaults["precision"],
        help="fp32|auto|fp16|bf16 (auto: bf16/fp16 autocast on CUDA, slower for this model)",
    )
    train.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUT's newest checkpoint; --no-resume starts OUT over",
    )
    train.add_argument(
        "--decoder-alongside",
        action=argparse.BooleanOptionalAction,
        default=defaults["decoder_alongside"],
        help="train phase c in a second process during phase b, each on half the threads",
    )
    train.add_argument(
        "--start-from",
        dest="start_from",
        metavar="CHECKPOINT",
        help="while OUT has no checkpoint: branch from another folder's checkpoint (phases a "
        "and b are not trained again; phase c's flags may differ if phase c had not started)",
    )
    train.set_defaults(handler=_run_toy_train_command)


def spec_from_args(args: argparse.Namespace) -> EditSpec:
    """Validate the flags as one EditSpec, so every bad flag is reported at once."""
    shared = {"timesteps_per_step": args.timesteps_per_step, "seed": args.train_seed}
    data = {
        "image": args.image,
        "text": args.text,
        "model": args.model,
        "model_revision": args.revision,
        "optimize": {"steps": args.steps_a, "learning_rate": args.lr_a, **shared},
        "finetune": {
            "steps": args.steps_b,
            "learning_rate": args.lr_b,
            "lora": args.lora,
            "lora_rank": args.lora_rank,
            "gradient_checkpointing": args.gradient_checkpointing,
            **shared,
        },
        "generate": {
            "etas": args.eta,
            "seeds": args.seeds,
            "num_inference_steps": args.steps_c,
            "guidance_scale": args.guidance,
            "guidance_rescale": args.guidance_rescale,
            "batch_size": args.batch_size,
            "scheduler": args.scheduler,
        },
        "resolution_fit": args.fit,
        "max_megapixels": args.max_megapixels,
        "device": args.device,
        "precision": args.precision,
    }
    return parse_params(EditSpec, data, flags=FLAG_OF_FIELD)


class StageProgressBars:
    """One tqdm bar per stage, showing the latest loss; fed by the method's progress callback."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def __call__(self, event: StageProgress) -> None:
        bar = self._bars.get(event.stage)
        if bar is None:
            for other in self._bars.values():
                other.close()
            bar = tqdm(total=event.total, desc=event.stage, unit="step", dynamic_ncols=True)
            self._bars[event.stage] = bar
        bar.update(event.step - bar.n)
        if event.loss is not None:
            bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def _run_edit_command(args: argparse.Namespace) -> int:
    from diffusers.utils.logging import disable_progress_bar

    from imagic.edit import run_edit  # heavy imports only when an edit really runs
    from imagic.tracking import TrackingOptions

    disable_progress_bar()  # diffusers' "Loading pipeline components" bar; ours follow
    spec = spec_from_args(args)
    tracking = TrackingOptions(
        enabled=not args.no_tracking,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        required=args.tracking_required,
        log_weights=args.log_weights,
    )
    if args.via_prefect:
        outputs = _run_edit_via_prefect(spec, args, tracking)
    else:
        bars = StageProgressBars()
        try:
            outputs = run_edit(
                spec,
                args.out,
                store=args.store,
                tracking=tracking,
                overwrite=args.overwrite,
                progress=bars,
            )
        finally:
            bars.close()
    print(f"wrote {len(outputs.images)} images, grid.png and manifest.json to {outputs.out_dir}")
    for name, result in outputs.stages.items():
        cached = " (cached)" if result.cached else ""
        print(f"  {name}{cached}: {result.manifest_uri}")
    if outputs.mlflow_run_id:
        print(f"MLflow run {outputs.mlflow_run_id} {outputs.mlflow_run_url or ''}".rstrip())
    return 0


def _run_edit_via_prefect(
    spec: EditSpec, args: argparse.Namespace, tracking: TrackingOptions
) -> EditOutputs:
    """The one place the library reaches up to `flows`: the CLI is the application's top.

    Imported only when asked for, so `imagic edit` alone never imports Prefect.
    """
    from flows.edit import run_edit_via_prefect

    summary, outputs = run_edit_via_prefect(
        spec,
        args.out,
        placement=args.placement,
        store=args.store,
        tracking=tracking,
        overwrite=args.overwrite,
    )
    print(f"Prefect flow run finished ({summary.placement} placement)")
    return outputs


def _run_tiny_model_command(args: argparse.Namespace) -> int:
    from imagic.outputs import staged_output_dir
    from imagic.tiny_model import save_tiny_pipeline

    with staged_output_dir(args.out, overwrite=args.overwrite) as staging:
        save_tiny_pipeline(staging, args.prediction_type, args.seed)
    print(f"wrote a tiny random {args.prediction_type} Stable Diffusion pipeline to {args.out}")
    return 0


def _run_toy_train_command(args: argparse.Namespace) -> int:
    from imagic.toyworld.config import TRAIN_FLAGS, ToyTrainParams

    data = {name: getattr(args, name) for name in TRAIN_FLAGS}  # every flag is a field
    params = parse_params(ToyTrainParams, data, flags=TRAIN_FLAGS)  # before torch is imported
    from imagic.toyworld.folder import prepare_training_folder

    prepare_training_folder(params)  # a bad --out is refused before torch is imported
    from diffusers.utils.logging import disable_progress_bar
    from transformers.utils.logging import disable_progress_bar as disable_transformers_bars

    from imagic.toyworld.train import train_toy_model

    disable_progress_bar()  # library bars (loading, "Writing model shards"); ours follow
    disable_transformers_bars()
    result = train_toy_model(params)
    print(f"wrote the toy model to {result.model_dir}, its sample grid to {result.grid}")
    return 0


def _quiet_library_logs() -> None:
    """Keep the terminal for our own progress bars and errors.

    diffusers and transformers log notices (e.g. that torchvision is absent) and draw their own
    loading bars; both read these variables when first imported, which happens after this.
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("huggingface_hub", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
    """Warnings meant for users (e.g. 'animated image: using frame 0') without file/line noise."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_logs()
    warnings.formatwarning = _format_warning
    try:
        return args.handler(args)
    except ImagicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was committed to the output folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
