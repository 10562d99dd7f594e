"""Optional integrations with training frameworks: store the importance where you train.

- :mod:`dampen.integrations.transformers`: ``ImportanceCallback`` for ``transformers.Trainer``
  (``pip install "dampen[transformers]"``).
- :mod:`dampen.integrations.lightning`: ``ImportanceCallback`` for ``lightning.Trainer``
  (``pip install "dampen[lightning]"``).

Each callback computes :func:`dampen.importance` of the training data on the trained weights
when training ends and saves it beside the model with :meth:`dampen.Importance.save`. Importing
this package imports neither framework; importing a submodule without its framework raises an
``ImportError`` naming the extra to install.
"""
