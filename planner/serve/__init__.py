"""fmplan serve: inference-serving cost model (issue 14; only the KV-cache capacity is here so far)."""
