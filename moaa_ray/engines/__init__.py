"""Inference backends behind one interface; each backend module is the only importer of its library."""
