"""A Keras custom layer: golive loads models using it only after --import keras_layers registers it."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="golive_test")
class Inverse(keras.layers.Layer):
    """tf.linalg.inv: TensorFlow's MatrixInverse, an op tf2onnx has no conversion for."""

    def call(self, x):
        return tf.linalg.inv(x)
