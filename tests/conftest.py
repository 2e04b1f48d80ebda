import jax

# Tests compare against float32 BPTT; keep the default precision but make matmuls exact.
jax.config.update("jax_default_matmul_precision", "highest")
