use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller.
    let u: f64 = rng.random::<f64>().max(1e-12);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn small(seed: u64) -> ForestConfig {
    ForestConfig {
        num_trees: 20,
        sample_size: 64,
        seed,
        ..ForestConfig::default()
    }
}

#[test]
fn trees_stay_consistent_and_bounded() {
    let mut f = RandomCutForest::new(3, small(1));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for i in 0..2000 {
        // Some exact duplicates too.
        let p = if i % 7 == 0 {
            vec![1.0, 1.0, 1.0]
        } else {
            vec![gaussian(&mut rng), gaussian(&mut rng), (i % 5) as f64]
        };
        f.update(&p);
        if i % 97 == 0 {
            f.check().unwrap();
        }
    }
    f.check().unwrap();
}

#[test]
fn outliers_score_higher_than_inliers() {
    let mut f = RandomCutForest::new(2, small(2));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..1000 {
        f.update(&[gaussian(&mut rng), gaussian(&mut rng)]);
    }
    let inlier = f.score(&[0.1, -0.2]);
    let outlier = f.score(&[8.0, 8.0]);
    assert!(outlier > 1.5 * inlier, "inlier {inlier} outlier {outlier}");
    assert!(outlier > 1.5, "{outlier}");
    let attr = f.attribution(&[8.0, 0.0]);
    assert!(attr[0] > 3.0 * attr[1], "{attr:?}");
    let total: f64 = attr.iter().sum();
    assert!((total - f.score(&[8.0, 0.0])).abs() < 1e-6 * total.max(1.0));
}

#[test]
fn impute_recovers_a_line() {
    let mut f = RandomCutForest::new(2, small(4));
    for i in 0..600 {
        let x = (i % 100) as f64 / 10.0;
        f.update(&[x, 2.0 * x]);
    }
    let y = f.impute(&[5.0, 0.0], &[1]);
    assert!((y[0] - 10.0).abs() < 1.5, "{y:?}");
}

#[test]
fn the_same_seed_gives_the_same_scores() {
    let run = || {
        let mut t = ThresholdedForest::new(DetectorConfig {
            forest: small(5),
            ..DetectorConfig::default()
        });
        (0..400)
            .map(|i| t.process(&[((i as f64) * 0.3).sin()]).score)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_restored_detector_keeps_what_it_learned() {
    let mut t = ThresholdedForest::new(DetectorConfig {
        forest: small(6),
        ..DetectorConfig::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for i in 0..500 {
        t.process(&[10.0 + (i as f64 * 0.2).sin() + 0.1 * gaussian(&mut rng)]);
    }
    let json = serde_json::to_string(&t).unwrap();
    let mut r: ThresholdedForest = serde_json::from_str(&json).unwrap();
    r.forest().check().unwrap();
    assert_eq!(r.steps(), t.steps());
    // Ready at once (nothing re-learned), normal stays normal, a spike is a spike.
    let normal = r.process(&[10.0]);
    assert!(normal.ready && normal.grade == 0.0, "{normal:?}");
    let spike = r.process(&[60.0]);
    assert!(spike.grade > 0.0, "{spike:?}");
    // Restoring again from the same bytes is deterministic.
    let mut a: ThresholdedForest = serde_json::from_str(&json).unwrap();
    let mut b: ThresholdedForest = serde_json::from_str(&json).unwrap();
    assert_eq!(a.process(&[11.0]), b.process(&[11.0]));
}

#[test]
fn garbage_input_never_panics() {
    let mut t = ThresholdedForest::new(DetectorConfig {
        input_dimensions: 2,
        forest: small(7),
        ..DetectorConfig::default()
    });
    for v in [
        vec![],
        vec![f64::NAN],
        vec![f64::INFINITY, 1.0, 2.0],
        vec![1e308, -1e308],
    ] {
        let d = t.process(&v);
        assert!(d.grade >= 0.0 && d.grade <= 1.0);
    }
    let mut f = RandomCutForest::new(0, small(8));
    f.update(&[]);
    let _ = f.score(&[f64::NAN]);
}

fn detector(seed: u64) -> ThresholdedForest {
    ThresholdedForest::new(DetectorConfig {
        forest: ForestConfig {
            seed,
            ..ForestConfig::default()
        },
        ..DetectorConfig::default()
    })
}

#[test]
fn a_spike_in_a_seasonal_stream_is_graded_and_quiet_elsewhere() {
    let mut t = detector(10);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut false_alarms = 0;
    let mut judged = 0;
    for i in 0..3000 {
        let base = (i as f64 * 2.0 * std::f64::consts::PI / 48.0).sin() + 0.1 * gaussian(&mut rng);
        let v = if i == 2500 { base + 10.0 } else { base };
        let d = t.process(&[v]);
        if i == 2500 {
            assert!(d.grade > 0.0, "spike missed: {d:?}");
        } else if i > 500 && !(2500..2500 + 8).contains(&i) {
            judged += 1;
            if d.grade > 0.0 {
                false_alarms += 1;
            }
        }
        assert!(d.confidence <= 1.0);
    }
    let rate = false_alarms as f64 / judged as f64;
    assert!(rate < 0.02, "false alarm rate {rate}");
}

#[test]
fn a_drop_to_zero_and_a_level_shift_are_graded() {
    let mut t = detector(12);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for _ in 0..600 {
        t.process(&[20.0 + 4.5 * gaussian(&mut rng)]);
    }
    let d = t.process(&[0.0]);
    let d2 = t.process(&[0.0]);
    assert!(d.grade > 0.0 || d2.grade > 0.0, "{d:?} {d2:?}");

    let mut t = detector(14);
    for _ in 0..600 {
        t.process(&[20.0 + 4.5 * gaussian(&mut rng)]);
    }
    let first = t.process(&[100.0]);
    let second = t.process(&[100.0]);
    assert!(
        first.grade > 0.0 && second.grade > 0.0,
        "{first:?} {second:?}"
    );
}

#[test]
fn confidence_grows_with_data() {
    let mut t = detector(15);
    let mut last = 0.0;
    for i in 0..400 {
        let d = t.process(&[(i % 10) as f64]);
        assert!(
            d.confidence + 1e-12 >= last || !d.ready,
            "{} < {last}",
            d.confidence
        );
        last = d.confidence;
    }
    assert!(last > 0.5 && last <= 1.0, "{last}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn grades_and_confidence_stay_in_range(values in proptest::collection::vec(-1e6f64..1e6, 1..200)) {
            let mut t = ThresholdedForest::new(DetectorConfig { forest: small(16), shingle_size: 4, ..DetectorConfig::default() });
            for v in values {
                let d = t.process(&[v]);
                prop_assert!((0.0..=1.0).contains(&d.grade));
                prop_assert!((0.0..=1.0).contains(&d.confidence));
                prop_assert!(d.score >= 0.0);
            }
        }
    }
}
