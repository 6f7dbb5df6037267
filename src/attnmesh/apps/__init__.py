"""Applications of the face mesh (the Attention Mesh paper, section 4): AR lipstick try-on
(:mod:`.lipstick`), Laplacian mesh editing (:mod:`.laplacian`), blendshape puppeteering (:mod:`.blendshapes`,
:mod:`.blendshape_net`), approximate eye tracking (:mod:`.gaze`) and their command-line entry points
(:mod:`.commands`). Modules are imported on demand: ``from attnmesh.apps import lipstick``.
"""
