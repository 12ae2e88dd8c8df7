"""Scoring a model: zero-shot accuracy on a data set and template comparison (`run`), the numbers (`metrics`), the
files for people and machines (`report`), retrieval recall@K (`recall`, `recall_report`), and several models x
several data sets (`grid`, `leaderboard`).

`zsclip.evaluate(model, dataset)` calls zsclip.evaluate.run.evaluate: the package is callable, so the public
function and the package share their name without one replacing the other."""

from zsclip.core.modules import callable_package
from zsclip.evaluate.run import EvalResult, compare_templates, evaluate

__all__ = ["EvalResult", "compare_templates", "evaluate"]

callable_package(__name__, evaluate)
