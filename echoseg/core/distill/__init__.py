"""Data-free knowledge distillation (EchoDFKD, Petit et al. 2024): a teacher labels (synthetic) echo videos, a small
causal ConvLSTM student learns from its soft masks.

Stages: :mod:`.pseudo` (the teacher's pseudo-label cache), :mod:`.train` (student training), :mod:`.report`
(costs, agreement, aFD and Dice on real videos). :func:`.run.distill` runs them in order into one run directory;
it is what ``echoseg distill`` calls.

Videos used: the TRAIN rows of ``--data`` train the student; validation uses the VAL rows of ``--val-data`` (all
its rows when it has no VAL split) or, without it, the VAL rows of ``--data``. ``--eval-data`` rows of
``eval_split`` (TEST by default, or ``all``) are evaluated against their tracings.
"""
