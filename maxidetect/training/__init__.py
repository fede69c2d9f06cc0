"""Training and fine-tuning the network (Keras 3: TensorFlow, JAX or torch)."""
