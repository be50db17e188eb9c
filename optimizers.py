"""Adam and AdamW as Keras (tf_keras) defines them, with each training step's scalars built once.

Keras builds, for every variable it updates, its own copy of the step's scalars: the learning
rate, the step count, both bias corrections and their product alpha, and (AdamW) the weight-decay
factor. That is ~15 of the ~43 graph ops per variable, and the optimizer holds 60 % of the ops of
a SignBART training step (2,326 of 3,832 for the tiny test model). The training step is traced
again for every model, so the copies cost ~1 s at the start of every training, however short.
These classes build the scalars once per traced step and device, then do exactly what Keras does
per variable, with the same ops in the same order: the weights after training are bit-identical
to Keras's optimizers (tests/test_optimizers.py). Eager updates, sparse gradients, amsgrad and
adaptive epsilon take Keras's own code.

    from optimizers import AdamW
    model.compile(optimizer=AdamW(learning_rate=1e-3, weight_decay=0.01), ...)
"""
from tf_env import keras, tf


class StepScalars:
    """Mixin for keras.optimizers.Adam / AdamW: their per-step scalars built once per step."""

    def _step_scalars(self, variable) -> dict | None:
        """{'lr', 'alpha', 'wd'} of the step being traced, for the variable's dtype and device;
        None when executing eagerly (no graph to share them in: each update builds its own)."""
        if tf.executing_eagerly():
            return None
        graph = tf.compat.v1.get_default_graph()
        cache = self.__dict__.get("_step_scalars_cache")  # __dict__: not tracked by tf.Module
        if cache is None or cache[0] is not graph:  # a new trace: a new step
            cache = self.__dict__["_step_scalars_cache"] = (graph, {})
        key = (variable.dtype, variable.device)
        if key not in cache[1]:
            dtype = variable.dtype
            lr = tf.cast(self.learning_rate, dtype)
            local_step = tf.cast(self.iterations + 1, dtype)
            beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
            beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
            wd = None if self.weight_decay is None else tf.cast(self.weight_decay, dtype)
            alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            cache[1][key] = {"lr": lr, "alpha": alpha, "wd": wd}
        return cache[1][key]

    def update_step(self, gradient, variable):
        scalars = self._step_scalars(variable)
        if (scalars is None or isinstance(gradient, tf.IndexedSlices) or self.amsgrad
                or getattr(self, "adaptive_epsilon", False)):
            return super().update_step(gradient, variable)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        m.assign_add((gradient - m) * (1 - self.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
        variable.assign_sub((m * scalars["alpha"]) / (tf.sqrt(v) + self.epsilon))

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or tf.executing_eagerly():
            return super()._apply_weight_decay(variables)

        def decay_all(distribution, variables, **kwargs):
            def decay(variable):
                if self._use_weight_decay(variable):
                    scalars = self._step_scalars(variable)
                    variable.assign_sub(variable * scalars["wd"] * scalars["lr"])
            for variable in variables:
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay_all, self._distribution_strategy,
                                                            variables)


class Adam(StepScalars, keras.optimizers.Adam):
    """keras.optimizers.Adam, its step scalars built once per step (module docstring)."""


class AdamW(StepScalars, keras.optimizers.AdamW):
    """keras.optimizers.AdamW, its step scalars built once per step (module docstring)."""
