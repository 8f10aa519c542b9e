"""Using trained tasks: `Predictor` (top-k on images), `evaluate` (metrics and a confusion matrix on a data set),
and `describe` (what `vptune info` prints)."""
from .evaluate import evaluate, evaluate_dataset, evaluate_logits, format_metrics, predict_logits
from .info import describe
from .predictor import Predictor

__all__ = ["Predictor", "evaluate", "evaluate_dataset", "evaluate_logits", "format_metrics", "predict_logits",
           "describe"]
