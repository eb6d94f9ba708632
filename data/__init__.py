"""Dataset setup scripts (``setup_7scenes.py``, ``setup_cambridge.py``, ``make_synthetic.py``) and the
synthetic scene generator (``data.synthetic``). Datasets written here are git-ignored."""
