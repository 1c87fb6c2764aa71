"""Stage builders: the glue that turns a config into data, models, engines and a training loop.

`train.py` runs them in the configured order: `general` (task-agnostic distillation of the
pretrained teacher), `teacher` (the multi-domain meta-teacher), `distill` (the student, by
`distill.method`) and `eval` (re-evaluate the exports).
"""
