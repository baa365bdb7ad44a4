"""Training: losses (``losses``), training lists (``lists``) and the stage trainer (``trainer``)."""

from resrank.train.lists import TrainingList, build_lists, read_lists, read_teacher_lists, write_lists
from resrank.train.losses import info_nce, labels_from_order, listmle, order_from_labels, ranknet
from resrank.train.trainer import build_model, stage_fingerprint, train, train_stage

__all__ = [
    "TrainingList",
    "build_lists",
    "build_model",
    "info_nce",
    "labels_from_order",
    "listmle",
    "order_from_labels",
    "ranknet",
    "read_lists",
    "read_teacher_lists",
    "stage_fingerprint",
    "train",
    "train_stage",
    "write_lists",
]
