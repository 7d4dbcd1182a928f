"""The validation runtime (torch): a decoder trained with a plan applied through torch's native
parallelism, measured per rank. Imported only by `fmplan validate` and its tests."""
