"""The importance pipeline (SPEC §1): estimators, the per-sample paths, the one-pass driver,
distributed reduction and the stored :class:`~dampen.importances.store.Importance`.

The folder is plural because ``dampen.importance`` is the facade function
(:func:`dampen.api.importance`); a subpackage of that name would shadow it for anything that
resolves dotted names by attribute, such as ``unittest.mock.patch``.
"""
