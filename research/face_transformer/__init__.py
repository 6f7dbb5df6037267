"""The face transformer's distillation from the imported Attention Mesh: teacher cache, synthetic cache items,
distillation, soups, shipping. The stage recipe of the shipped ``face_transformer_xs`` is ``recipe.toml``
(run by :mod:`research.face_transformer.recipe`)."""
