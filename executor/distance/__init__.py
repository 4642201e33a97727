"""Measured domain distance (`tuneplan measure`, `tuneplan advise --measure-distance`).

How far the user's data is from what the base model already does, read from the data and the
model instead of a word the user picks: the base model's *fit* to the training targets (mean loss
next to its loss on general text, share of surprising target tokens) and the *update rank* (the
singular-value spectrum of the full-parameter gradient accumulated over a few micro-batches, for
a sample of attention and MLP layers across depth). `verdict` turns the signals into
near | moderate | far with the documented thresholds of docs/domain-distance.md.

Modules: `spectrum` (energy/rank maths on singular values), `reference` (the shipped reference
tasks, built offline), `measure` (loads the model, computes the signals; imports torch),
`verdict` (thresholds and the verdict; torch-free), `record` (the `distance_measurements` table).
Only `measure` imports torch; the advise path imports this package lazily, and only under
`--measure-distance`.
"""
