"""Using trained tasks: `Predictor` (top-k on images), `evaluate` (metrics and a confusion matrix on a data set),
`describe` (what `vptune info` prints), and `MultiTaskModel` (many tasks on one backbone, mixed batches)."""
from .evaluate import evaluate, evaluate_dataset, evaluate_logits, format_metrics, predict_logits
from .info import describe
from .multitask import MultiTaskModel
from .predictor import Predictor

__all__ = ["Predictor", "evaluate", "evaluate_dataset", "evaluate_logits", "format_metrics", "predict_logits",
           "describe", "MultiTaskModel"]
