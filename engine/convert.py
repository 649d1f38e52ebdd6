"""``python -m engine convert IN OUT``: convert Gaussian splats between standard PLY, compressed PLY, .splat, .spz.

The input format is recognised from the file's content (a ``.splat`` file, which has no magic, from
its suffix); the output format from OUT's suffix (``.ply``, ``.compressed.ply``, ``.splat``, ``.spz``)
or ``--to``. Splats with invalid values (NaN, infinite, log-scales whose radius would overflow) stop the
conversion unless ``--skip-invalid`` is given. Formats that keep fewer SH degrees than the input
(``.splat`` keeps only the base colour) drop the rest, and the command says so. The output is written
atomically; exit status 0 on success, 2 with a one-line message for a file that cannot be converted.
Needs only numpy (no torch).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from engine.io import SPLAT_FORMATS

    parser = subparsers.add_parser(
        "convert",
        help="convert Gaussian splats between standard PLY, compressed PLY, .splat and .spz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="splat file to read (.ply, .compressed.ply, .splat, .spz)")
    parser.add_argument("output", type=Path, help="file to write; its suffix names the format unless --to is given")
    parser.add_argument("--to", choices=SPLAT_FORMATS, help="output format (default: from the output's suffix)")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="leave out splats with invalid values instead of stopping"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.io import (
        FormatError,
        InvalidValuesError,
        format_from_suffix,
        max_sh_degree,
        read_gaussians,
        write_gaussians,
    )

    fmt = args.to or format_from_suffix(args.output)
    if fmt is None:
        log.error(
            "%s: cannot tell the output format from the name; use a .ply, .compressed.ply, .splat or .spz "
            "name, or --to",
            args.output,
        )
        return 2
    if not args.input.is_file():
        log.error("%s: no such file", args.input)
        return 2
    if args.output.exists() and not args.force:
        log.error("%s already exists (use --force to replace it)", args.output)
        return 2
    if os.path.abspath(args.output) == os.path.abspath(args.input):
        log.error("%s: the output must be another file than the input", args.output)
        return 2
    policy = "drop" if args.skip_invalid else "error"
    try:
        gaussians = read_gaussians(args.input, non_finite=policy)
    except InvalidValuesError as error:
        log.error("%s (use --skip-invalid to leave those splats out)", error)
        return 2
    except (FormatError, OSError) as error:
        log.error("%s", error)
        return 2
    if gaussians.dropped_non_finite and len(gaussians) == 0:
        log.error("%s: all %d splats have invalid values; nothing to convert", args.input, gaussians.dropped_non_finite)
        return 2
    if gaussians.dropped_non_finite:
        log.warning(
            "left out %d of %d splats with invalid values",
            gaussians.dropped_non_finite,
            gaussians.dropped_non_finite + len(gaussians),
        )
    if gaussians.sh_degree > max_sh_degree(fmt):
        log.warning(
            "the %s format keeps SH degree %d at most: degree %d colour detail is dropped",
            fmt,
            max_sh_degree(fmt),
            gaussians.sh_degree,
        )
    try:
        write_gaussians(args.output, gaussians, fmt)
    except (FormatError, OSError) as error:
        log.error("%s", error)
        return 2
    log.info("wrote %d splats (%s) to %s", len(gaussians), fmt, args.output)
    return 0
