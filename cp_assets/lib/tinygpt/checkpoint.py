"""A damaged tiny-GPT checkpoint: the error that names the file, and what to re-materialize (a training result is
never rebuilt silently). Lives with the model so that the generation backend needs nothing from the memorization lab."""

from __future__ import annotations

from pathlib import Path

from cp_assets.lib.core import integrity, settings


class CorruptCheckpoint(RuntimeError):
    """A trained checkpoint's file is damaged; the message names it and what to re-materialize."""

    def __init__(self, error: integrity.CorruptFile, checkpoint: Path | str):
        self.path = error.path
        super().__init__(f"tiny GPT checkpoint file {error.path} is corrupt or truncated ({error.reason}); "
                         + retrain_hint(checkpoint))


def retrain_hint(checkpoint: Path | str) -> str:
    """What to do about a damaged checkpoint: its run's partition of `tiny_models` / `tiny_sft_models` (checkpoints
    live under CPROX_HOME/tiny/<base|sft>/<run>, intermediate ones in step_* below that)."""
    p = Path(checkpoint).expanduser().resolve()
    try:
        stage, run = p.relative_to((settings.home() / "tiny").resolve()).parts[:2]
    except ValueError:
        return ("a trained model cannot be rebuilt silently: retrain it with the command that wrote it "
                "(it was not trained by the memorization lab's assets)")
    asset = "tiny_models" if stage == "base" else "tiny_sft_models"
    then = " (then `tiny_sft_models`, trained from it)" if stage == "base" else ""
    return (f"it is a training result and cannot be rebuilt silently: re-materialize the `{asset}` partition "
            f"{run!r}{then}: `dagster asset materialize -m cp_assets.definitions --select {asset} --partition "
            f"{run}`, or `cprox train --run {run}` (base and SFT)")
