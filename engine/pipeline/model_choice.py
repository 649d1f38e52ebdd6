"""Which model bundle to use when none is named, and where the embedded default model lives.

Standard library only, with relative imports: the Blender add-on imports this module from the engine it
bundles (its preferences resolve the same embedded default model).

The order of ``python -m engine demo`` and ``python -m engine generate`` (:func:`find_model`):

1. ``--model PATH``;
2. the environment variable ``VIST3A_MODEL``;
3. the user's default folder ``~/.cache/vist3a/models/default`` (``$VIST3A_HOME`` moves ``~/.cache/vist3a``),
   when it holds a ``vist3a.json``;
4. the *embedded default model*: ``models/default`` next to the ``engine`` package, i.e. the repository's
   ``models/default/`` or, in the installed Blender extension, the copy the extension ships
   (:data:`EMBEDDED_BUNDLE`), when it holds a ``vist3a.json``.

A model named by 1 or 2 is used as given (loading it then says what is wrong with it, e.g. that it does
not exist); there is no silent fall-through to another model. When neither 3 nor 4 holds a bundle,
:class:`NoModelError` says where it looked and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .settings import BUNDLE_MANIFEST, ModelNotFoundError

MODEL_ENV_VAR = "VIST3A_MODEL"
HOME_ENV_VAR = "VIST3A_HOME"
# engine/pipeline/model_choice.py -> the folder holding the engine package -> models/default
EMBEDDED_BUNDLE = Path(__file__).resolve().parents[2] / "models" / "default"

# How the demo names where its model came from ("Model: PATH (from SOURCE)").
FROM_OPTION = "--model"
FROM_ENVIRONMENT = MODEL_ENV_VAR
FROM_USER_DEFAULT = "the default model folder"
FROM_EMBEDDED = "the embedded default model"


class NoModelError(ModelNotFoundError):
    """No model was named and no default bundle exists; the message lists where it looked and what to do."""


@dataclass(frozen=True)
class ModelChoice:
    """A bundle folder (or manifest) and where it came from (one of the ``FROM_*`` phrases)."""

    path: Path
    source: str


def vist3a_home() -> Path:
    """``$VIST3A_HOME``, else ``~/.cache/vist3a``: the user's VIST3A folder (read at each call)."""
    return Path(os.environ.get(HOME_ENV_VAR) or Path.home() / ".cache" / "vist3a").expanduser()


def user_default_bundle() -> Path:
    """The user's default model folder, ``<vist3a_home()>/models/default``."""
    return vist3a_home() / "models" / "default"


def embedded_bundle() -> Path:
    """The embedded default model's folder (it may lack a manifest: then there is none)."""
    return EMBEDDED_BUNDLE


def holds_bundle(folder: Path) -> bool:
    """Whether ``folder`` has a bundle manifest (its parts are checked when it is loaded)."""
    return (Path(folder) / BUNDLE_MANIFEST).is_file()


def find_model(explicit: Optional[str | os.PathLike] = None) -> ModelChoice:
    """The bundle to use, in the order of the module's docstring. Raises NoModelError when there is none."""
    if explicit:
        return ModelChoice(Path(explicit).expanduser(), FROM_OPTION)
    named = os.environ.get(MODEL_ENV_VAR)
    if named:
        return ModelChoice(Path(named).expanduser(), FROM_ENVIRONMENT)
    user, embedded = user_default_bundle(), embedded_bundle()
    if holds_bundle(user):
        return ModelChoice(user, FROM_USER_DEFAULT)
    if holds_bundle(embedded):
        return ModelChoice(embedded, FROM_EMBEDDED)
    raise NoModelError(no_model_message(user, embedded))


def no_model_message(user: Path, embedded: Path) -> str:
    """What :class:`NoModelError` says: where it looked, why each place had nothing, what to do."""
    if embedded.is_dir() and any(embedded.iterdir()):
        why = f"{embedded} holds model parts but no {BUNDLE_MANIFEST}: the embedded default model is not assembled yet"
    else:
        why = f"{embedded} does not hold the embedded default model (no {BUNDLE_MANIFEST})"
    return (
        f"no VIST3A model found: --model was not given, ${MODEL_ENV_VAR} is not set, {user} has no "
        f"{BUNDLE_MANIFEST}, and {why}. Pass --model BUNDLE (a folder with {BUNDLE_MANIFEST}), set "
        f"{MODEL_ENV_VAR}=BUNDLE, or copy a bundle to {user}."
    )
