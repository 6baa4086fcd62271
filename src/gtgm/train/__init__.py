"""Training: pretraining (``gtgm pretrain``), distributed helpers, checkpoints, logs."""
