"""Trigger state and evaluation: what each trigger counts, when it fires, and how an
automation's whole trigger tree is evaluated (``evaluator.Evaluator``)."""
