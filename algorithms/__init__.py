"""Built-in algorithm packages (one folder each) and the maths they share.

Each folder holds ``<Name>Central.py``, ``<Name>Remote.py`` and ``params.json``; the registry
loads them exactly as it loads an uploaded package. ``_stats`` holds the numpy maths and
``_federated`` the steps a central half takes with its sites (fit, draw, record).
"""
