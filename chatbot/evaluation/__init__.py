"""Evaluation: question sets, metrics, the ablation runner and its reports."""
