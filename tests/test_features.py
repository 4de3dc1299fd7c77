import numpy as np
import pandas as pd
import pytest

from engine.features import INDICATOR_WARMUP, INDICATORS, Normalizer, build_features, indicator_frame, prepare_splits
from engine.synthetic import generate_candles

MACRO, MICRO = 120, 30


@pytest.fixture(scope="module")
def candles():
    return generate_candles(days=4, seed=21)


@pytest.mark.parametrize("cut", [200, 555, 900])
def test_no_look_ahead_changing_later_candles_leaves_earlier_rows_unchanged(candles, cut):
    base = build_features(candles, MACRO, MICRO)
    changed = candles.copy()
    later = changed.index > cut
    rng = np.random.default_rng(cut)
    for column in ("open", "high", "low", "close", "volume", "quote_volume"):
        changed.loc[later, column] *= rng.uniform(0.5, 1.5, later.sum())
    changed.loc[later, "high"] = changed.loc[later, ["open", "high", "low", "close"]].max(axis=1)
    after = build_features(changed, MACRO, MICRO)
    first_row = len(candles) - len(base)  # bars consumed by the warm-up
    keep = cut - first_row + 1  # feature rows built from bars <= cut
    np.testing.assert_array_equal(after.macro[:keep], base.macro[:keep])
    np.testing.assert_array_equal(after.micro[:keep], base.micro[:keep])
    assert not np.array_equal(after.micro[keep], base.micro[keep])  # the test can fail: row cut+1 does change


def test_shapes_dtypes_and_alignment(candles):
    features = build_features(candles, MACRO, MICRO)
    assert features.macro.shape == features.micro.shape == (len(features), 3 * len(INDICATORS))
    assert features.macro.dtype == np.float32 and features.micro.dtype == np.float32
    assert np.isfinite(features.macro).all() and np.isfinite(features.micro).all()
    np.testing.assert_array_equal(features.close, candles["close"].to_numpy()[-len(features):])
    np.testing.assert_array_equal(features.timestamps, candles["timestamp"].dt.tz_convert(None).to_numpy()[-len(features):])


def test_macro_and_micro_are_mean_std_and_last_of_each_indicator_over_their_windows(candles):
    """The block-wise aggregation (engine/features.py) against the plain pandas definition, bit for bit."""
    features = build_features(candles, MACRO, MICRO)
    indicators = indicator_frame(candles)
    first = INDICATOR_WARMUP + MACRO - 1
    for window, matrix in ((MACRO, features.macro), (MICRO, features.micro)):
        rolling = indicators.rolling(window)
        expected = np.concatenate([rolling.mean(), rolling.std(ddof=0), indicators], axis=1)[first:].astype(np.float32)
        np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(features.trend, indicators["log_return"].rolling(MACRO).mean().to_numpy()[first:])


def test_normalizer_moments_match_numpy_in_float64(candles):
    features = build_features(candles, MACRO, MICRO)
    normalizer = Normalizer.fit(features)
    exact = features.macro.astype(np.float64)
    np.testing.assert_allclose(normalizer.macro_mean, exact.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(normalizer.macro_std, np.where(exact.std(axis=0) > 1e-12, exact.std(axis=0), 1.0), rtol=1e-7)
    scaled = normalizer.apply(features).macro
    expected = np.clip((exact - normalizer.macro_mean) / normalizer.macro_std, -10, 10).astype(np.float32)
    np.testing.assert_allclose(scaled, expected, rtol=1e-6, atol=1e-5)  # float32 arithmetic on values up to 10
    in_place = normalizer.apply(build_features(candles, MACRO, MICRO), in_place=True).macro
    np.testing.assert_array_equal(in_place, scaled)


def test_features_are_scale_free(candles):
    scaled = candles.copy()
    for column in ("open", "high", "low", "close"):
        scaled[column] *= 1000.0
    np.testing.assert_allclose(build_features(scaled, MACRO, MICRO).macro, build_features(candles, MACRO, MICRO).macro, atol=1e-4)


def test_normalization_uses_train_statistics_only(candles):
    splits = prepare_splits(candles, MACRO, MICRO)
    changed = candles.copy()
    changed.loc[changed.index[-100:], "volume"] *= 50  # only the test split's bars
    changed_splits = prepare_splits(changed, MACRO, MICRO)
    np.testing.assert_array_equal(splits.normalizer.macro_mean, changed_splits.normalizer.macro_mean)
    np.testing.assert_array_equal(splits.train.macro, changed_splits.train.macro)
    assert abs(splits.train.macro.mean()) < 0.05 and abs(splits.train.macro.std() - 1) < 0.1


def test_normalizer_round_trips_through_state_dict(candles):
    normalizer = prepare_splits(candles, MACRO, MICRO).normalizer
    restored = Normalizer.from_state_dict(normalizer.state_dict())
    np.testing.assert_allclose(restored.micro_std, normalizer.micro_std)


def test_mirrored_train_split_reverses_returns_and_is_a_second_segment(candles):
    from engine.features import INDICATORS, mirror_candles
    mirrored = mirror_candles(candles)
    np.testing.assert_allclose(np.diff(np.log(mirrored["close"])), -np.diff(np.log(candles["close"])), atol=1e-12)
    assert (mirrored["high"] >= mirrored["low"]).all()
    plain = prepare_splits(candles, MACRO, MICRO)
    augmented = prepare_splits(candles, MACRO, MICRO, mirror_train=True)
    assert augmented.train.segment_lengths == (len(plain.train), len(plain.train))
    assert len(augmented.validation) == len(plain.validation) and augmented.test.segment_lengths is None
    raw = build_features(candles, MACRO, MICRO)
    raw_mirror = build_features(mirror_candles(candles), MACRO, MICRO)
    column = INDICATORS.index("log_return") + 2 * len(INDICATORS)  # the 'last' aggregate of log_return
    np.testing.assert_allclose(raw_mirror.micro[:, column], -raw.micro[:, column], atol=1e-6)


def test_a_segment_that_starts_after_the_validation_split_has_no_mirror_and_breaks_nothing(candles):
    # A folder of monthly files: the last file lies wholly in the test split, so nothing of it precedes validation's end
    later = generate_candles(days=1, seed=22)
    later["timestamp"] = later["timestamp"] + (candles["timestamp"].iloc[-1] - later["timestamp"].iloc[0]) + pd.Timedelta(days=30)
    both = pd.concat([candles, later], ignore_index=True)
    splits = prepare_splits(both, MACRO, MICRO, mirror_train=True)
    assert splits.test.timestamps.max() == later["timestamp"].iloc[-1].tz_convert(None).to_datetime64()
    assert splits.validation.timestamps.max() < later["timestamp"].iloc[0].tz_convert(None).to_datetime64()
    assert len(splits.train.segment_lengths) == 2  # the first file and its mirror
