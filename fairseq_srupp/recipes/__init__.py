"""The authors' training and evaluation recipes: tables.py (one table per corpus, a row per
variant), parallel.py (streams over GPUs and nodes), driver.py (the commands; the command line
of scripts/recipes/recipe.py). Nothing here imports fairseq: the commands run it in PYTHON."""
from .driver import eval_command, main, train_command
from .parallel import RecipeError
from .tables import CORPORA

__all__ = ["CORPORA", "RecipeError", "eval_command", "main", "train_command"]
