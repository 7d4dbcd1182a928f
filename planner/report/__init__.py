"""`fmplan report`: a plan as pictures (pipeline timeline, memory per stage, step-time breakdown,
runners-up) in one self-contained HTML page and, with matplotlib, PNGs."""
