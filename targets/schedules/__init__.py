"""Schedule rules of our own, one per file, in dlight's contract: apply(func, target, tunable)
returns a Schedule, or None when the rule does not fit the function."""
