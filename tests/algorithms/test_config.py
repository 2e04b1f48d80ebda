"""ETraceConfig: canonicalisation, one test per validation rule, presets, derived views."""

import dataclasses

import pytest

import braintrace
from braintrace import ETraceConfig
from braintrace.algorithms.config import PRESETS, preset


# ----------------------------------------------------------------------------------------
# Canonicalisation
# ----------------------------------------------------------------------------------------
def test_defaults_are_d_rtrl():
    config = ETraceConfig()
    assert (config.trace_factorization, config.temporal_recursion, config.recurrence_scope,
            config.learning_signal, config.trace_filter, config.update_schedule) == (
        "per_param", "jacobian", "diagonal", "symmetric", "none", "per_step")
    assert config.decay is None and config.kappa is None and config.sparse_n is None
    assert not config.is_factorized and not config.include_recurrent_mixing


def test_io_jacobian_shorthand_and_scalar_decay_become_pairs():
    config = ETraceConfig("io_factorized", "jacobian", decay=0.9)
    assert config.temporal_recursion == ("scalar_leak", "jacobian")
    assert config.decay == (0.9, 0.9)
    assert (config.recursion_x, config.recursion_f, config.decay_x, config.decay_f) == (
        "scalar_leak", "jacobian", 0.9, 0.9)
    assert config == ETraceConfig("io_factorized", ("scalar_leak", "jacobian"), decay=(0.9, 0.9))


def test_scalar_leak_with_zero_decay_is_none():
    config = ETraceConfig(temporal_recursion="scalar_leak", decay=0.0)
    assert config.temporal_recursion == "none" and config.decay == 0.0
    assert config == ETraceConfig(temporal_recursion="none")


def test_io_zero_decay_collapses_its_side_to_none():
    config = ETraceConfig("io_factorized", decay=(0.0, 0.5))
    assert config.temporal_recursion == ("none", "jacobian") and config.decay == (0.0, 0.5)
    config = ETraceConfig("io_factorized", decay=(0.5, 0.0))
    assert config.temporal_recursion == ("scalar_leak", "none")


def test_none_pins_the_decay_to_zero():
    assert ETraceConfig(temporal_recursion="none").decay == 0.0
    assert ETraceConfig("io_factorized", ("none", "jacobian"), decay=(None, 0.7)).decay == (0.0, 0.7)
    with pytest.raises(ValueError, match="'none'"):
        ETraceConfig(temporal_recursion="none", decay=0.3)


def test_zero_kappa_turns_the_filter_off():
    config = ETraceConfig(trace_filter="kappa", kappa=0.0)
    assert config.trace_filter == "none" and config.kappa is None
    assert config == ETraceConfig()


def test_sparse_n_one_is_coupled():
    config = ETraceConfig(recurrence_scope="sparse_n", sparse_n=1)
    assert config.recurrence_scope == "coupled" and config.sparse_n is None
    assert config.include_recurrent_mixing


def test_configs_are_frozen_and_replace_revalidates():
    config = ETraceConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.decay = 0.5
    assert config.replace(trace_filter="kappa", kappa=0.5).kappa == 0.5
    with pytest.raises(ValueError, match="kappa"):
        config.replace(kappa=0.5)
    assert hash(config) == hash(ETraceConfig())


def test_describe_names_every_axis():
    text = ETraceConfig("io_factorized", decay=(0.3, 0.6)).describe()
    for word in ("io_factorized", "scalar_leak", "jacobian", "0.3", "0.6", "diagonal", "symmetric", "per_step"):
        assert word in text
    assert "kappa filter (0.4)" in ETraceConfig(trace_filter="kappa", kappa=0.4).describe()
    assert "n=3" in ETraceConfig(recurrence_scope="sparse_n", sparse_n=3).describe()


# ----------------------------------------------------------------------------------------
# Field checks
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("trace_factorization", "dense"), ("temporal_recursion", "exact"), ("recurrence_scope", "global"),
    ("learning_signal", "reward"), ("trace_filter", "lowpass"), ("update_schedule", "epoch"),
])
def test_unknown_axis_values_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        ETraceConfig(**{field: value})


@pytest.mark.parametrize("kwargs, words", [
    (dict(temporal_recursion="scalar_leak", decay=1.0), "decay"),
    (dict(temporal_recursion="scalar_leak", decay=-0.1), "decay"),
    (dict(trace_filter="kappa", kappa=1.5), "kappa"),
    (dict(recurrence_scope="sparse_n", sparse_n=True), "sparse_n"),
    (dict(recurrence_scope="sparse_n", sparse_n=0), "sparse_n"),
    (dict(update_schedule="window", window_size=2.5), "window_size"),
    (dict(temporal_recursion=("scalar_leak", "jacobian")), "pair"),
    (dict(temporal_recursion="scalar_leak", decay=(0.1, 0.2)), "pair"),
    (dict(trace_factorization="io_factorized", decay=(0.1, 0.2, 0.3)), "pair"),
])
def test_coefficient_types_and_ranges(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ETraceConfig(**kwargs)


# ----------------------------------------------------------------------------------------
# One test per rule
# ----------------------------------------------------------------------------------------
def test_rule_kappa_needs_per_param():
    with pytest.raises(ValueError, match="kappa.*per_param"):
        ETraceConfig("io_factorized", decay=0.5, trace_filter="kappa", kappa=0.5)


def test_rule_non_diagonal_scope_needs_a_consumed_jacobian():
    with pytest.raises(ValueError, match="recurrence_scope='coupled'.*jacobian"):
        ETraceConfig(temporal_recursion="scalar_leak", decay=0.5, recurrence_scope="coupled")
    # a Jacobian side that collapsed to none (decay 0) is not consumed
    with pytest.raises(ValueError, match="recurrence_scope='coupled'.*jacobian"):
        ETraceConfig("io_factorized", decay=(0.5, 0.0), recurrence_scope="coupled")


def test_rule_the_x_side_is_never_jacobian():
    with pytest.raises(ValueError, match="x side"):
        ETraceConfig("io_factorized", ("jacobian", "jacobian"), decay=0.5)


def test_rule_per_param_jacobian_forbids_a_decay():
    with pytest.raises(ValueError, match="takes no decay"):
        ETraceConfig(decay=0.5)


def test_rule_per_param_scalar_leak_requires_a_decay():
    with pytest.raises(ValueError, match="needs a decay"):
        ETraceConfig(temporal_recursion="scalar_leak")


def test_rule_io_factorized_requires_both_decays():
    with pytest.raises(ValueError, match="both decays"):
        ETraceConfig("io_factorized")
    with pytest.raises(ValueError, match="both decays"):
        ETraceConfig("io_factorized", decay=(None, 0.5))


@pytest.mark.parametrize("kwargs, name", [
    (dict(kappa=0.5), "kappa"),
    (dict(trace_filter="kappa"), "kappa"),
    (dict(sparse_n=3), "sparse_n"),
    (dict(recurrence_scope="sparse_n"), "sparse_n"),
    (dict(window_size=4), "window_size"),
    (dict(update_schedule="window"), "window_size"),
])
def test_rule_a_coefficient_exists_iff_its_category_is_selected(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` is given if and only if"):
        ETraceConfig(**kwargs)


def test_rule_random_projection_requires_coupled():
    with pytest.raises(ValueError, match="random_projection.*coupled"):
        ETraceConfig("random_projection")
    assert ETraceConfig("random_projection", recurrence_scope="coupled").include_recurrent_mixing


def test_rule_sparse_n_requires_per_param():
    with pytest.raises(ValueError, match="sparse_n.*per_param"):
        ETraceConfig("io_factorized", decay=0.5, recurrence_scope="sparse_n", sparse_n=3)


def test_schedules_window_and_sequence_end_parse():
    assert ETraceConfig(update_schedule="window", window_size=4).window_size == 4
    assert ETraceConfig(update_schedule="sequence_end").update_schedule == "sequence_end"


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------
def test_presets():
    assert preset("D_RTRL") == ETraceConfig()
    assert preset("pp_prop", decay=0.7) == ETraceConfig("io_factorized", ("scalar_leak", "jacobian"),
                                                        decay=(0.7, 0.7))
    eprop = preset("eprop", kappa=0.8, feedback="random_feedback")
    assert (eprop.trace_filter, eprop.kappa, eprop.learning_signal) == ("kappa", 0.8, "random_feedback")
    assert preset("eprop") == ETraceConfig()  # κ = 0 with symmetric feedback is D-RTRL
    assert preset("ostl_recurrent").recurrence_scope == "coupled"
    assert preset("ostl_feedforward").decay == (1e-6, 1e-6)
    assert preset("snap", n=3).sparse_n == 3 and preset("snap", n=1).recurrence_scope == "coupled"
    assert preset("uoro").trace_factorization == "random_projection"
    assert preset("three_factor").learning_signal == "modulatory"
    assert preset("dni").learning_signal == "bootstrapped"
    assert set(PRESETS) >= {"d_rtrl", "pp_prop", "eprop", "ostl_recurrent", "ostl_feedforward", "snap", "uoro",
                            "three_factor", "dni"}
    with pytest.raises(ValueError, match="unknown preset"):
        preset("rflo")


def test_top_level_export():
    assert braintrace.ETraceConfig is ETraceConfig
    assert braintrace.algorithms.ETraceConfig is ETraceConfig
