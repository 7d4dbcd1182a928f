"""fmplan's planner: input specs, strategies, the search and the emitters."""
