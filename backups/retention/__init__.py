"""Retention, pure and standard library only: the policy and its parsing (policy, durations,
spec) and the planner that decides what a policy keeps and why (planner). Carried out on stored
backups by ``backups.cleanup``."""
