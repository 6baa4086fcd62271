"""Training: pretraining (``gtgm pretrain``) and fine-tuning (``gtgm finetune``).

Their datasets, tasks, losses, optimiser and logs."""
