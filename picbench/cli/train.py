"""``picbench train CONFIG [--resume]``: the PositionIC trainer (``picbench.reference_impl.training``).

One process: ``picbench train CONFIG``. Several: ``accelerate launch [--config_file ...]
$(which picbench) train CONFIG`` or ``torchrun --nproc-per-node N $(which picbench) train CONFIG``
(every rank runs this verb; only the main process prints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.errors import PicbenchError


@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="a trainer config (TOML): see reference_impl/configs/train/")],
    resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in checkpoint.out")] = False,
    allow_data_change: Annotated[
        bool,
        typer.Option("--allow-data-change", help="with --resume: go on although the pair set or the config changed since the checkpoint"),
    ] = False,
    progress: Annotated[bool, typer.Option(help="rich progress bar (steps/s, ETA, loss, memory)")] = True,
) -> None:
    """Train a PositionIC LoRA; Ctrl-C or SIGTERM saves a checkpoint and exits 130 or 143 (continue with --resume)."""
    from picbench.environment import require_extra

    try:
        require_extra("picbench train")
        from picbench.reference_impl.training import load_config
        from picbench.reference_impl.training.loop import Trainer, TrainingInterrupted

        settings = load_config(config)
    except PicbenchError as exc:
        fail(exc)
    try:
        trainer = Trainer(settings, resume=resume, allow_change=allow_data_change, progress=progress)
        main = trainer.accelerator.is_main_process
        result = trainer.run()
    except TrainingInterrupted as exc:
        console.print(f"[bold yellow]interrupted:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    except (PicbenchError, ValueError) as exc:
        fail(exc)
    if main and result.already_finished:
        console.print(
            f"training in {result.out} is already finished ({result.global_step} steps); nothing was trained. "
            f"Its LoRA: {result.lora} (diffusers/peft) and {result.uno_lora} (UNO's layout)"
        )
        return
    if main:
        console.print(f"trained {result.global_step} steps -> {result.lora} (diffusers/peft) and {result.uno_lora} (UNO's layout)")
        if result.skipped:
            console.print(f"[yellow]skipped {len(result.skipped)} unreadable pair(s):[/] {', '.join(sorted(result.skipped))}")
        console.print(f"use it: picbench run --method positionic --param lora={result.lora}")
