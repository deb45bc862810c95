"""``embedlab fuse``: merge checkpoints of one base model into one model (``embedlab.fusion``), from options or a
mergekit-style config.

    embedlab fuse --base BASE --method delta_guided --models A B C [--weights .5 .3 .2] [--variant softmax] --out DIR
    embedlab fuse --config merge.yaml --out DIR         (mergekit keys: merge_method, base_model, models, parameters)

Every input is a typed option. ``--models``, ``--weights`` and ``--density`` take one or more values after the flag
(the form above) or the flag repeated (``--models A --models B``): ``spread_values`` rewrites the first form into the
second, which is what click parses. The merge methods' parameters: a typed option for each parameter a registered
method declares (``KNOBS``), and ``--param KEY=VALUE`` (the value read as YAML: a number, word or list) for any key.
The options override a --config's values.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal, Optional

import typer
from typer.core import TyperCommand

from ..errors import ConfigError
from ._common import _on_interrupt, _progress_bars, _say

app = typer.Typer()

# The options that take one or more values after the flag.
MULTI_VALUE_OPTIONS = ("--models", "--weights", "--density")
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # a value, not an option (argparse's rule)


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-" and not _NEGATIVE_NUMBER.match(arg)


def spread_values(args: list[str], options=MULTI_VALUE_OPTIONS) -> list[str]:
    """``--models a b --out o`` -> ``--models a --models b --out o``: each value that follows one of ``options``, up
    to the next option (a token starting with "-" that is neither "-" nor a negative number) or "--", gets the flag
    of its own."""
    out: list[str] = []
    current, seen = None, 0
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        if _is_option(arg):
            current, seen = (arg if arg in options else None), 0
        elif current is not None:
            if seen:
                out.append(current)
            seen += 1
        out.append(arg)
    return out


class _SpreadValuesCommand(TyperCommand):
    """A command whose multi-value options also take several values after one flag (``spread_values``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if arg in MULTI_VALUE_OPTIONS and (i + 1 == len(args) or _is_option(args[i + 1])) \
                    and not ctx.resilient_parsing:  # else click would take the next option for its value
                raise typer.BadParameter("needs one or more values", ctx=ctx, param_hint=f"'{arg}'")
        return super().parse_args(ctx, spread_values(args))


# The typed method-parameter options: function argument -> (the parameter's key, the option). Every parameter a
# registered merge method declares has one (tests/test_cli_fuse.py checks it against MERGE_METHODS).
KNOBS = {"density": ("density", "--density"), "lambda_": ("lambda", "--lambda"),
         "normalize": ("normalize", "--normalize"), "rescale": ("rescale", "--rescale"),
         "int8_mask": ("int8_mask", "--int8-mask"), "t": ("t", "--t"), "variant": ("variant", "--variant"),
         "granularity": ("granularity", "--granularity"), "temperature": ("temperature", "--temperature")}
# The choices of the word-valued parameters, written out (the fusion modules import torch, which `embedlab --help`
# must not wait for); tests/test_cli_fuse.py checks them against fusion.delta_guided's.
Variant = Literal["magnitude", "softmax", "inverse"]
Granularity = Literal["element", "tensor"]
Rescale = Literal["true", "false", "inverse_density"]
_RESCALE = {"true": True, "false": False, "inverse_density": "inverse_density"}
_PARAMS_PANEL = "Method parameters (embedlab list: each method's, with defaults)"


def _finite(value: Optional[float]) -> Optional[float]:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def _positive(value: float) -> float:
    if not value > 0 or math.isinf(value):  # `not` also refuses nan
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


def _weights(values: Optional[list[str]]) -> Optional[list]:
    """One number per model, or the single word 'auto'."""
    if not values or values == ["auto"]:
        return values or None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise typer.BadParameter(f"numbers or 'auto', got {' '.join(values)}") from None


@app.command(cls=_SpreadValuesCommand)
def fuse(
    config: Optional[Path] = typer.Option(None, "--config", help="mergekit-style YAML (the other options override "
                                          "its values)"),
    method: Optional[str] = typer.Option(None, "--method", help="merge method (default: delta_guided; `embedlab "
                                         "list` shows them all)"),
    base: Optional[str] = typer.Option(None, "--base", help="the pre-trained model the checkpoints were trained from"),
    models: Optional[list[str]] = typer.Option(None, "--models", metavar="MODEL...",
                                               help="checkpoint folders (or package model names)"),
    weights: Optional[list[str]] = typer.Option(None, "--weights", metavar="WEIGHT...", callback=_weights,
                                                help="one weight per model (default: uniform), or 'auto': "
                                                "LM-Cocktail weights softmax(-loss/t) on --dev-pairs"),
    dev_pairs: Optional[Path] = typer.Option(None, "--dev-pairs", help="weights auto: dev examples (IR or STS JSONL; "
                                             "dev data only)"),
    weights_temperature: float = typer.Option(0.1, "--weights-temperature", callback=_positive,
                                              help="weights auto: t (> 0)"),
    param: Optional[list[str]] = typer.Option(None, "--param", metavar="KEY=VALUE", help="any method parameter, "
                                              "e.g. density=[0.5,0.3] or variant=softmax (repeatable)"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="seed of random methods (DARE)"),
    in_memory: bool = typer.Option(False, "--in-memory", help="load every state dict first (the naive merge)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out even if embedlab did not write it "
                                   "(never an input, the working directory or its parents)"),
    dev_tasks: str = typer.Option("stsb-dev,scifact-dev", "--dev-tasks", help="greedy_soup: dev tasks whose mean main "
                                  "score ranks the soups (dev splits only)"),
    bf16: bool = typer.Option(False, "--bf16", help="greedy_soup: bf16 autocast for the dev evaluations"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    density: Optional[list[float]] = typer.Option(None, "--density", min=0, max=1, metavar="DENSITY...",
                                                  rich_help_panel=_PARAMS_PANEL, help="fraction of each delta kept "
                                                  "(TIES trim, DARE keep probability): one value, or one per model"),
    lambda_: Optional[float] = typer.Option(None, "--lambda", callback=_finite, rich_help_panel=_PARAMS_PANEL,
                                            help="scale of the merged delta (θ0 + λ δ)"),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize", rich_help_panel=_PARAMS_PANEL,
                                             help="divide by the sum of the (agreeing) weights"),
    rescale: Optional[Rescale] = typer.Option(
        None, "--rescale", rich_help_panel=_PARAMS_PANEL, help="the kept delta entries: to the delta's L1 norm "
        "(true), as they are (false) or ÷ density (inverse_density, DARE only)"),
    int8_mask: Optional[bool] = typer.Option(None, "--int8-mask/--no-int8-mask", rich_help_panel=_PARAMS_PANEL,
                                             help="mergekit's mask dtype (accepted; the result is the same)"),
    t: Optional[float] = typer.Option(None, "--t", min=0, max=1, rich_help_panel=_PARAMS_PANEL,
                                      help="slerp: 0 gives the first model, 1 the second"),
    variant: Optional[Variant] = typer.Option(
        None, "--variant", rich_help_panel=_PARAMS_PANEL, help="delta_guided: g(Δ) = |Δ|, exp(|Δ|/(T·s)) or 1/|Δ|"),
    granularity: Optional[Granularity] = typer.Option(
        None, "--granularity", rich_help_panel=_PARAMS_PANEL, help="delta_guided: a weight per element or per tensor"),
    temperature: Optional[float] = typer.Option(None, "--temperature", callback=_finite, rich_help_panel=_PARAMS_PANEL,
                                                help="delta_guided softmax: T (> 0)"),
) -> None:
    """Merge checkpoints of one base model into one model (sentence-transformers layout).

    embedlab fuse --base BASE --method delta_guided --models A B C [--weights .5 .3 .2] [--variant softmax] --out DIR

    embedlab fuse --config merge.yaml --out DIR   (mergekit keys: merge_method, base_model, models, parameters)
    """
    import yaml

    from ..fusion import MERGE_METHODS
    from ..fusion.config import load_fusion_config
    from ..fusion.merge import fuse as run_fuse

    progress = _progress_bars(progress)
    kw = load_fusion_config(config) if config is not None else {"models": None, "method": "delta_guided", "base": None,
                                                               "weights": None, "params": {}, "seed": 0}
    for key, value in (("method", method), ("base", base), ("models", models), ("seed", seed)):
        if value is not None:
            kw[key] = value
    if not kw["models"]:
        raise ConfigError("no models: give --models A B ... or a --config with models")
    spec = MERGE_METHODS.get(kw["method"])  # an unknown method: one line naming the known ones
    values = {"density": density, "lambda_": lambda_, "normalize": normalize, "rescale": rescale,
              "int8_mask": int8_mask, "t": t, "variant": variant, "granularity": granularity,
              "temperature": temperature}
    typed = {}
    for arg, value in values.items():
        if value is None:
            continue
        key, option = KNOBS[arg]
        if key not in spec.params:
            raise ConfigError(f"{option}: merge method {spec.name!r} has no parameter {key!r} (its parameters: "
                              f"{', '.join(sorted(spec.params)) or 'none'})")
        typed[key] = value
    if "density" in typed and len(typed["density"]) == 1:
        typed["density"] = typed["density"][0]
    if "rescale" in typed:
        typed["rescale"] = _RESCALE[typed["rescale"]]
    from ..atomic import check_output_dir

    # Before any work (data-driven weights and dev soups evaluate models): may --out be written at all?
    check_output_dir(out, overwrite=overwrite, inputs=list(kw["models"]) + [kw["base"]])
    extra = {}
    if weights == ["auto"]:
        from ..fusion.data_weights import cocktail_weights, pairs_from_file

        if dev_pairs is None:
            raise ConfigError("--weights auto needs --dev-pairs FILE (a few dev examples)")
        kw["weights"], losses = cocktail_weights(kw["models"] or [], pairs_from_file(dev_pairs), weights_temperature)
        extra = {"data_weights": {"dev_pairs": str(dev_pairs), "losses": losses, "temperature": weights_temperature}}
        _say(f"data-driven weights: {[round(w, 4) for w in kw['weights']]} (losses {losses})")
    elif weights is not None:
        kw["weights"] = weights
    kw["params"].update(typed)
    for item in param or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        if key.strip() in typed:
            option = next(o for k, o in KNOBS.values() if k == key.strip())
            raise ConfigError(f"--param {item!r}: {key.strip()} is also given as {option}; give it once")
        try:
            kw["params"][key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--param {item!r}: the value is not a number, word or YAML list "
                              f"({getattr(e, 'problem', None) or type(e).__name__})") from None
    _on_interrupt(f"interrupted: {out} was not written (the merged model is moved there only when complete)")
    if spec.needs_score:
        from ..fusion.greedy import dev_scorer, greedy_soup

        score = dev_scorer(dev_tasks, bf16)
        result = greedy_soup(kw["models"], score, out=out, seed=kw["seed"], overwrite=overwrite,
                             show_progress=progress, log=_say)
    else:
        result = run_fuse(kw["models"], kw["method"], out=out, base=kw["base"], weights=kw["weights"],
                          overwrite=overwrite, params=kw["params"], seed=kw["seed"], streaming=not in_memory,
                          extra=extra, show_progress=progress)
    _say(f"fused {len(result.models)} models with {result.method} {result.params} -> {result.out} "
         f"({result.merged_tensors} tensors merged, {result.copied_tensors} copied, {result.seconds:.1f}s)")
