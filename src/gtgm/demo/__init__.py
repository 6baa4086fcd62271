"""``gtgm demo``: every stage on the example corpus, ending in a report (run: the stages; pretraining,
finetuning, exports, queries: each stage and its report section; results: the headline figures and overlays)."""
