"""Models: one encoder built from small parts, and HuBERT, HuBERTPretrain, DinoSR, SpidR on top."""
