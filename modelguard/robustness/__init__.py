"""Adversarial robustness: data, attacks, defenses, evaluation and certificates."""
