"""Training of the shipped blendshape network (:mod:`attnmesh.apps.blendshape_net`):
``python -m research.blendshape_net.train``."""
