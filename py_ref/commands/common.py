"""What the algorithm commands share: their defaults, the checks of the model, task and data
options, the model they load, the options every command takes, and :func:`command`, which
turns the library's errors into one-line CliErrors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import CliError, InputError, one_line


DEFAULT_MODEL = "fmnist"
DEFAULT_TASK = "footwear"


def command(func):
    """``func`` as a command: its stage lines named after it, and the library's VelcroError /
    FrameError and OS errors as one-line CliErrors (the library messages name the file or
    value) for the entry point's py_ref.errors.main_guard to print."""
    def run(args) -> int:
        from ..golden import FrameError
        from ..velcro import VelcroError
        args._cmd, args._t0 = func.__name__.removeprefix("cmd_"), time.monotonic()
        try:
            return func(args)
        except (VelcroError, FrameError) as e:
            raise CliError(one_line(e) or type(e).__name__) from None
        except BrokenPipeError:
            raise                        # stdout went away: main_guard's quiet exit
        except OSError as e:
            what = e.strerror or one_line(e) or type(e).__name__
            raise CliError(f"{e.filename}: {what}" if e.filename else what) from None
    run.__name__ = func.__name__
    return run


def check_counts(args) -> None:
    """Counts must be at least 1: refused, never clamped."""
    for name in ("images", "valid_images", "batch_size", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, not {v}")


def check_model_name(name: str) -> None:
    from ..models import MODELS
    if name not in MODELS:
        raise CliError(f"unknown model '{name}' (known: {', '.join(MODELS)})")


def check_task(model: str, task: str) -> None:
    if model == "fmnist":
        from ..data import FMNIST_TASKS
        if task not in FMNIST_TASKS:
            raise CliError(f"unknown task '{task}' for the fmnist model (known: {', '.join(FMNIST_TASKS)})")
    else:
        from ..presets import IMAGENET_TASKS
        if task not in IMAGENET_TASKS and task != "all":
            raise CliError(f"unknown ImageNet task '{task}' (known: {', '.join(IMAGENET_TASKS)}, all)")


def check_data_options(args, model: str) -> None:
    """--data belongs to the ImageNet models (and is required by them)."""
    data = getattr(args, "data", None)
    if model == "fmnist":
        if data not in (None, "fmnist"):
            raise CliError("the fmnist model takes the built-in Fashion-MNIST data (omit --data)")
        return
    if not data:
        raise CliError(f"model '{model}' needs --data PATH (a local ImageNet ImageFolder); "
                       "no ImageNet images ship with this repo")
    if not Path(data).exists():
        raise CliError(f"data path {data} does not exist")
    if not Path(data).is_dir():
        raise CliError(f"data path {data} is not a folder (expected an ImageNet ImageFolder)")


def open_model(args, model: str):
    from ..models import load_model
    return load_model(model, args.weights, pretrained=True)


def weights_file(args, model: str):
    """The weights file the model will be loaded from (an input no output may overwrite)."""
    if args.weights:
        return args.weights
    from ..models import FMNIST_WEIGHTS, mobilenet_v2_weights_path
    if model == "fmnist":
        return FMNIST_WEIGHTS
    try:
        return mobilenet_v2_weights_path() if model == "mobilenet_v2" else None
    except InputError:
        return None


def skip_first_default(model: str) -> bool:
    """Whether ``profile`` leaves the model's first activation point out unless told."""
    from ..presets import SKIP_FIRST
    return SKIP_FIRST.get(model, True)


def model_options(p, *, data: bool = True, model_help: str | None = None,
                   task_default: str | None = None) -> None:
    p.add_argument("--model", help=model_help or "fmnist (default), resnet18, googlenet or mobilenet_v2")
    p.add_argument("--weights", metavar="FILE",
                   help="state_dict file (default: the committed fmnist weights / the installed "
                        "MobileNetV2 ImageNet weights)")
    if data:
        p.add_argument("--data", metavar="PATH",
                       help="local ImageNet ImageFolder (class folders named by WordNet id); "
                            "ImageNet models only")
    else:
        p.add_argument("--data", help=argparse.SUPPRESS)   # refused with a message
    p.add_argument("--task", help="class group: footwear, tops, shirts, other, all (Fashion-MNIST) "
                                  "or cats-2, cats-3, cats, dogs, cars, all (ImageNet); default "
                                  + (task_default or "footwear"))
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="images per batch (default 128)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="PyTorch CPU threads (default 1)")
