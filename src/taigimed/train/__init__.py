"""Two-stage LoRA / QLoRA supervised fine-tuning.

Read ``recipe.py`` top to bottom: it is the whole stage (setup, train, save, merge). The other
modules each do one job: ``config`` (what a run may ask for, checked before any work),
``formatting`` (chat template + assistant-only labels), ``packing`` (batches without padding
and without cross-example attention), ``qlora`` (model loading, 4-bit / 8-bit), ``checkpoint``
(atomic save / resume), ``tracking`` (MLflow when configured) and ``report`` (metrics, loss plot,
model card).
"""
