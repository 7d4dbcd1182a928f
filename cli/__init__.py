"""fmplan's command-line interface (typer)."""
