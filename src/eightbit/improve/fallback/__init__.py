"""Accuracy-aware fallback: keep the nodes that cost the most accuracy in float until a
budget is met (docs/numerics.md §R.10). ``driver`` runs it; ``rank`` orders the nodes once,
``search`` bisects over groups along that order, ``cost`` says what the float nodes cost."""
