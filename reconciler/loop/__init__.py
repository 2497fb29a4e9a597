"""The reconcile loop: pool planning, building, holds, status, webhook, runtime."""
