"""Trainer backends behind one entry (``dispatch``): ``local`` (single process, CPU or one GPU) and, through
``s2lpo.verl_ext``, verl. Imports everything below it; never ``study``, ``sweep``, ``analysis`` or ``cli``."""
