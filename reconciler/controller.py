"""The reconcile loop: fetch, load, plan, build what is missing, write pins, commit, push."""
