"""Input sides and keypoint counts of the shipped networks, in a module that needs no PyTorch: the runtime
backends (OpenVINO, ONNX Runtime) and the pipeline read them without importing the models."""

DETECTOR_INPUT_SIZE = 128  # BlazeFace short-range input side, pixels
DETECTOR_NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion
MESH_INPUT_SIZE = 192  # Attention Mesh and face_landmark input side, pixels
IRIS_INPUT_SIZE = 64  # iris_landmark input side, pixels
FACE_TRANSFORMER_INPUT_SIZE = 128  # the shipped face transformer's crop side, pixels
