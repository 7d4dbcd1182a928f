"""fmplan's cost model: FLOPs, memory, communication and pipeline formulas, and `estimate()`."""
