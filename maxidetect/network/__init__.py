"""The network: its wiring (``architecture``), two engines that run it
(ONNX Runtime, the CPU default; Keras 3 on TensorFlow/JAX/torch, for GPUs
and training), tiled inference, weights and input normalisation, and the
MaxiTrack frame classifier."""
