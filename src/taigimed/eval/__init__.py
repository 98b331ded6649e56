"""Evaluation and the promotion gate: MedQA accuracy, Taigi perplexity, chrF, the safety suite.

Modules: ``mcq``, ``lm``, ``gen``, ``safety`` (scoring), ``gate`` (the verdict), ``report``
(Markdown/HTML/plots, KFP metrics), ``evaluate`` (all tasks for one model), ``cli``.
"""
