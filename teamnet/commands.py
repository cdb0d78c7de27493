"""The command lines of ``teamnet-train`` and ``teamnet-predict``, with nothing heavy imported.

Importing torch, torchvision, PyAV and DALI takes about 5 s: ``--help`` and a usage error answer
before that, because these parsers and the console-script entry points below import only argparse.
The help texts are the docstrings of :mod:`teamnet.train` and :mod:`teamnet.predict`, read from
their source files without importing them.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from typing import Sequence


def _module_doc(name: str) -> str | None:
    """The docstring of module ``name``, from its source (importing it would import torch)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()), clean=False)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teamnet-train", description=_module_doc("teamnet.train"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of overrides of teamnet.config defaults (configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set optim.lr=0.01 (repeatable; value parsed as YAML)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    return parser


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teamnet-predict", description=_module_doc("teamnet.predict"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", help="videos to classify (any format FFmpeg reads)")
    parser.add_argument("--checkpoint", required=True,
                        help="a teamnet checkpoint (best.pt / last.pt of a run) or a published TEAM-Net one")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per video (default 5)")
    parser.add_argument("--segments", type=int, default=None, help="default: the checkpoint's test_segments")
    parser.add_argument("--crops", type=int, default=None, choices=[1, 2, 5, 10],
                        help="views per clip: 1 centre, 2 +flip, 5 corners+centre, 10 +flips (default: the checkpoint's)")
    parser.add_argument("--cam", default=None, metavar="OUT.png",
                        help="draw a class activation map per stream over the I-frame, with a colour bar and "
                             "a caption (one file per video when several)")
    parser.add_argument("--no-reencode", action="store_true", help="fail instead of re-encoding unreadable videos")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--preprocess", choices=["ours", "published"], default=None,
                        help="input conventions; default: those the checkpoint was trained with")
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``teamnet-train``: parse (``--help`` exits here), then import the trainer."""
    train_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from teamnet.train import main

    return main(argv)


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``teamnet-predict``: parse (``--help`` exits here), then import the predictor."""
    predict_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from teamnet.predict import main

    return main(argv)
