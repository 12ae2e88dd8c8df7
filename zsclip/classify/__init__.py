"""Classification, from embeddings to files: the predictions (`predict`: scores, top-k, abstain, the streaming
`classify`), int8 labels settled by fp32 (`recheck`), a command's run (`run`: records to stdout or the resumable
--output file, failures, sorting), the output formats and file (`output`), sorting into label folders (`sort`) and
the gallery page (`gallery`).

`zsclip.classify(model, classifier, paths)` calls zsclip.classify.predict.classify: the package is callable, so the
public function and the package share their name without one replacing the other."""

from zsclip.classify.predict import Prediction, Skipped, classify, probabilities
from zsclip.core.modules import callable_package

__all__ = ["Prediction", "Skipped", "classify", "probabilities"]

callable_package(__name__, classify)
