"""Recipes: whole runs as plain YAML, listed with their launch line, applied before the
command line (which can still change them)."""

import yaml

from adapterctl.cli import main
from adapterctl.run import settings
from clitools import REPO


def command(recipe) -> str:
    """The command of a recipe's launch line (``# adapterctl <command> recipe=<name>``)."""
    return next(line.split()[2] for line in recipe.read_text().splitlines()
                if line.startswith("# adapterctl ") and line.endswith(f" recipe={recipe.stem}"))


def test_recipes_are_listed_with_their_launch_command(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for recipe in REPO.glob("recipes/*.yaml"):
        assert f"$ adapterctl {command(recipe)} recipe={recipe.stem}" in out


def test_a_recipe_composes_and_the_command_line_wins():
    cfg = settings.load("train", ["recipe=rotten_tomatoes_full_finetuning", "trainer.batch_size=8"])
    assert cfg.adapter.preset == "none" and cfg.trainer.lr == 5e-5
    assert cfg.task.name == "rotten_tomatoes" and cfg.trainer.batch_size == 8


def test_every_recipe_composes():
    for recipe in REPO.glob("recipes/*.yaml"):
        cfg = settings.load(command(recipe), [f"recipe={recipe.stem}"])
        written = yaml.safe_load(recipe.read_text())
        assert (cfg.backbone.name, cfg.task.name) == (written["backbone"], written["task"]), recipe
