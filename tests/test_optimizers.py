"""optimizers.py: Adam and AdamW with their step scalars built once per step train to the same bits
as Keras's own (fixed learning rate, a schedule, clipnorm, eager updates) and build fewer graph ops.
The model is a small stack of the layers SignBART's variables belong to (Dense, layer norm): the
optimizer sees only variables and dense gradients."""
import numpy as np
import pytest

import optimizers
from layers import LayerNorm
from tf_env import keras, tf


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 4, 16)


def trained(optimizer, batch) -> tuple[list[np.ndarray], int]:
    """Weights after 3 epochs of 2 steps from the same initial weights; ops of the training step."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    hidden = LayerNorm(name="norm")(keras.layers.Dense(16, activation="gelu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(*batch, batch_size=8, epochs=3, shuffle=False, verbose=0)
    step, = model.train_function._list_all_concrete_functions_for_serialization()  # the traced step
    return [w.numpy() for w in model.weights], len(step.graph.get_operations())


@pytest.mark.parametrize("name, kwargs", [
    ("AdamW", {"learning_rate": 3e-3, "weight_decay": 0.01}),
    ("AdamW", {"learning_rate": keras.optimizers.schedules.CosineDecay(3e-3, 6),
               "weight_decay": 0.01}),
    ("Adam", {"learning_rate": 1e-3, "clipnorm": 1.0}),
])
def test_same_weights_as_keras_with_fewer_ops(batch, name, kwargs):
    theirs, their_ops = trained(getattr(keras.optimizers, name)(**kwargs), batch)
    mine, my_ops = trained(getattr(optimizers, name)(**kwargs), batch)
    assert all(np.array_equal(a, b) for a, b in zip(theirs, mine))
    assert my_ops < their_ops


def test_eager_updates_are_keras_updates():
    """Outside a traced step each update builds its own scalars, as Keras does."""
    results = []
    for make in (keras.optimizers.AdamW, optimizers.AdamW):
        optimizer = make(0.1, weight_decay=0.5)
        variable = tf.Variable([1.0, -2.0])
        for gradient in ([0.5, 0.25], [-1.0, 2.0]):
            optimizer.apply_gradients([(tf.constant(gradient), variable)])
        results.append(variable.numpy())
    assert np.array_equal(*results)
