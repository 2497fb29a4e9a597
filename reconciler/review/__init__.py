"""Review: plan between revisions, pool history, rollback, and their output."""
