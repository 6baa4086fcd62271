"""``gtgm study`` and ``gtgm probe``: what pretraining is worth, measured as an experiment (run: arms x label
ratios x seeds; arms; probe: frozen-encoder probes; stats: paired bootstrap; report)."""
