"""compile(): algorithm names (case-insensitive), classes and ETraceConfigs map to engines."""

import jax.numpy as jnp
import pytest

import braintrace
import braintrace.algorithms as algorithms
from braintrace import ETraceConfig


def _cell():
    return braintrace.nn.GRUCell(3, 4)


@pytest.mark.parametrize("name, cls", [
    ("d_rtrl", braintrace.ParamDimVjpAlgorithm),
    ("D_RTRL", braintrace.ParamDimVjpAlgorithm),
    ("D-RTRL", braintrace.ParamDimVjpAlgorithm),
    ("pp_prop", braintrace.IODimVjpAlgorithm),
    ("ES_D_RTRL", braintrace.IODimVjpAlgorithm),
    ("esd_rtrl", braintrace.IODimVjpAlgorithm),
    (" Es-D-Rtrl ", braintrace.IODimVjpAlgorithm),
])
def test_implemented_names(name, cls):
    learner = braintrace.compile(_cell(), name, jnp.ones(3))
    assert type(learner) is cls


@pytest.mark.parametrize("name, class_name", [
    ("eprop", "EProp"), ("E_Prop", "EProp"), ("ostl_feedforward", "OSTLFeedforward"),
    ("THREE_FACTOR", "ThreeFactor"), ("OSTL_Recurrent", "OSTLRecurrent"), ("uoro", "UORO"), ("DNI", "DNI"),
])
def test_lazy_names_resolve_on_the_algorithms_module(name, class_name, monkeypatch):
    class Stand(braintrace.ParamDimVjpAlgorithm):
        """A stand-in registered under the lazily resolved name."""

    monkeypatch.setattr(algorithms, class_name, Stand, raising=False)
    assert type(braintrace.compile(_cell(), name, jnp.ones(3))) is Stand
    monkeypatch.delattr(algorithms, class_name)
    with pytest.raises(braintrace.NotSupportedError, match=class_name):
        braintrace.compile(_cell(), name, jnp.ones(3))


def test_every_published_rule_name_has_an_engine():
    from braintrace.algorithms.compile import NOT_IMPLEMENTED_ALGORITHMS
    assert NOT_IMPLEMENTED_ALGORITHMS == {}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown algorithm 'rflo'") as info:
        braintrace.compile(_cell(), "rflo", jnp.ones(3))
    for known in ("d_rtrl", "pp_prop", "es_d_rtrl", "esd_rtrl", "eprop", "e_prop", "ostl_feedforward",
                  "three_factor", "ostl_recurrent", "uoro", "dni"):
        assert f"'{known}'" in str(info.value)
    with pytest.raises(TypeError, match="ETraceConfig"):
        braintrace.compile(_cell(), 3, jnp.ones(3))


def test_a_class_is_used_as_given():
    assert type(braintrace.compile(_cell(), braintrace.D_RTRL, jnp.ones(3))) is braintrace.D_RTRL


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------
def test_d_rtrl_config():
    learner = braintrace.compile(_cell(), ETraceConfig(), jnp.ones(3))
    assert type(learner) is braintrace.ParamDimVjpAlgorithm


def test_io_config_passes_its_decay():
    learner = braintrace.compile(_cell(), ETraceConfig("io_factorized", decay=0.7), jnp.ones(3))
    assert type(learner) is braintrace.IODimVjpAlgorithm and learner.decay == 0.7
    # ostl_feedforward's preset is pp-prop with α = 1e-6
    learner = braintrace.compile(_cell(), algorithms.config.preset("ostl_feedforward"), jnp.ones(3))
    assert learner.decay == 1e-6
    # an explicit decay_or_rank wins over the config's default
    learner = braintrace.compile(_cell(), ETraceConfig("io_factorized", decay=0.7), jnp.ones(3), decay_or_rank=3)
    assert learner.decay == 0.5


def test_config_with_options_and_no_duplicate_config():
    learner = braintrace.compile(_cell(), ETraceConfig(), jnp.ones(3), vjp_method="multi-step")
    assert learner.options.vjp_method == "multi-step"
    with pytest.raises(ValueError, match="given twice"):
        braintrace.compile(_cell(), ETraceConfig(), jnp.ones(3), config=ETraceConfig())


def test_eprop_and_three_factor_configs_resolve_lazily(monkeypatch):
    seen = {}

    class Stand(braintrace.ParamDimVjpAlgorithm):
        def __init__(self, model, feedback="symmetric", kappa_filter_decay=0.0, **options):
            seen.update(feedback=feedback, kappa=kappa_filter_decay)
            super().__init__(model, **options)

    monkeypatch.setattr(algorithms, "EProp", Stand, raising=False)
    config = ETraceConfig(trace_filter="kappa", kappa=0.6, learning_signal="random_feedback")
    assert type(braintrace.compile(_cell(), config, jnp.ones(3))) is Stand
    assert seen == {"feedback": "random_feedback", "kappa": 0.6}
    monkeypatch.delattr(algorithms, "EProp")
    with pytest.raises(braintrace.NotSupportedError, match="EProp"):
        braintrace.compile(_cell(), config, jnp.ones(3))
    monkeypatch.delattr(algorithms, "ThreeFactor", raising=False)
    with pytest.raises(braintrace.NotSupportedError, match="ThreeFactor"):
        braintrace.compile(_cell(), ETraceConfig(learning_signal="modulatory"), jnp.ones(3))


@pytest.mark.parametrize("config, words", [
    (ETraceConfig(recurrence_scope="coupled", learning_signal="random_feedback"), "coupled scope"),
    (ETraceConfig(recurrence_scope="sparse_n", sparse_n=3, trace_filter="kappa", kappa=0.5), "sparse_n scope"),
    (ETraceConfig(learning_signal="bootstrapped", trace_filter="kappa", kappa=0.5), "bootstrapped"),
    (ETraceConfig(update_schedule="window", window_size=4), "update_schedule='window'"),
    (ETraceConfig(update_schedule="sequence_end"), "sequence_end"),
    (ETraceConfig(temporal_recursion="scalar_leak", decay=0.5), "scalar_leak"),
    (ETraceConfig(temporal_recursion="none"), "temporal_recursion='none'"),
    (ETraceConfig("io_factorized", decay=(0.3, 0.6)), "decay"),
    (ETraceConfig("io_factorized", ("scalar_leak", "scalar_leak"), decay=0.5), "temporal_recursion"),
])
def test_configs_without_an_engine_name_the_axis_value(config, words):
    cell = _cell()
    with pytest.raises(braintrace.NotSupportedError, match=words):
        braintrace.compile(cell, config, jnp.ones(3))


@pytest.mark.parametrize("algorithm, cls", [
    ("uoro", braintrace.UORO), ("UORO", braintrace.RandomProjectionVjpAlgorithm), ("dni", braintrace.DNI),
    (ETraceConfig("random_projection", recurrence_scope="coupled"), braintrace.UORO),
    (ETraceConfig(learning_signal="bootstrapped"), braintrace.DNI),
])
def test_uoro_and_dni_resolve(algorithm, cls):
    learner = braintrace.compile(_cell(), algorithm, jnp.ones(3))
    assert type(learner) is cls
    assert learner.options.vjp_method == "multi-step"
