"""What runs in the task workers: the claim, the run, its outcome, and the reconciler."""
