"""Saved-adapter formats: ``adapterhub.py`` (AdapterHub's folders, which we write too) and the
file helpers they share (``files.py``)."""
