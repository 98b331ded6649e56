"""Data preparation: real source formats in, stage SFT sets + eval sets + a data report out.

``taigimed.data.prepare.prepare(cfg, out_dir)`` is the whole job; the modules below it each do
one step (read a format, normalise, dedupe, split, build examples, mix stages, report) and are
tested alone. Input formats and the output contract are described in docs/data.md.
"""
