use std::collections::BTreeMap;

use gantry_shared::health::{Health, HealthState};
use gantry_shared::protocol::delivery::{FailedBundle, NodeBundles};
use gantry_shared::protocol::rollout::{Rollout, Spec, State, Step, parse_steps};

use super::*;

const NEW: &str = "sha256:new";
const OLD: &str = "sha256:old";

fn view(rack: &str, active: &str, at_ms: u64) -> NodeView {
    NodeView {
        labels: BTreeMap::from([
            ("gpu".to_owned(), "h100".to_owned()),
            ("rack".to_owned(), rack.to_owned()),
        ]),
        revoked: false,
        cordoned: false,
        heartbeat: Some(HeartbeatInfo {
            at_ms,
            health: Some(Health::default()),
            bundles: NodeBundles {
                active: Some(active.to_owned()),
                ..NodeBundles::default()
            },
            ..HeartbeatInfo::default()
        }),
    }
}

fn fleet(n: usize, at_ms: u64) -> BTreeMap<String, NodeView> {
    (0..n)
        .map(|i| (format!("n{i:02}"), view(&format!("r{}", i % 3), OLD, at_ms)))
        .collect()
}

fn rollout(nodes: &BTreeMap<String, NodeView>, steps: &str, bake_ms: u64) -> Rollout {
    let spec = Spec {
        bundle: "m@1".to_owned(),
        steps: parse_steps(steps).unwrap(),
        bake_ms,
        step_timeout_ms: 10_000,
        silence_ms: 5_000,
        ..Spec::default()
    };
    Rollout {
        id: "r1".to_owned(),
        bundle_id: NEW.to_owned(),
        state: Some(State::Rolling),
        plan: plan(&spec.selector, nodes),
        spec,
        ..Rollout::default()
    }
}

/// Every node assigned the new bundle reports it active at `at_ms`.
fn activate(r: &Rollout, nodes: &mut BTreeMap<String, NodeView>, at_ms: u64) {
    for t in &r.touched {
        *nodes.get_mut(&t.node).unwrap() = view("r0", NEW, at_ms);
    }
}

#[allow(clippy::unnecessary_wraps)] // the shape of the engine's assignment lookup
fn old(_: &str, _: &str) -> Option<String> {
    Some(OLD.to_owned())
}

#[test]
fn the_plan_spreads_over_labels_and_is_deterministic() {
    let nodes = fleet(9, 0);
    let p = plan(&BTreeMap::new(), &nodes);
    assert_eq!(&p[..3], ["n00", "n01", "n02"], "one per rack first");
    assert_eq!(p, plan(&BTreeMap::new(), &nodes));
    let only_r1 = BTreeMap::from([("rack".to_owned(), "r1".to_owned())]);
    assert_eq!(plan(&only_r1, &nodes), ["n01", "n04", "n07"]);
}

#[test]
fn steps_assign_wait_bake_and_succeed() {
    let mut nodes = fleet(10, 0);
    let mut r = rollout(&nodes, "1,50%,100%", 1_000);
    let a = advance(&mut r, &nodes, &old, 0);
    assert_eq!(
        a,
        [Action::Assign {
            bundle: NEW.into(),
            nodes: vec!["n00".into()]
        }]
    );
    assert_eq!(r.touched[0].previous.as_deref(), Some(OLD));
    // Not active yet: still rolling, nothing new assigned.
    assert!(advance(&mut r, &nodes, &old, 100).is_empty());
    assert_eq!(r.state(), State::Rolling);
    activate(&r, &mut nodes, 200);
    advance(&mut r, &nodes, &old, 200);
    assert_eq!(r.state(), State::Baking);
    advance(&mut r, &nodes, &old, 900);
    assert_eq!(r.state(), State::Baking, "bake not over");
    let a = advance(&mut r, &nodes, &old, 1_300);
    assert_eq!((r.state(), r.step, r.touched.len()), (State::Rolling, 1, 5));
    assert!(matches!(&a[0], Action::Assign { nodes, .. } if nodes.len() == 4));
    activate(&r, &mut nodes, 1_400);
    advance(&mut r, &nodes, &old, 1_400);
    advance(&mut r, &nodes, &old, 2_500);
    activate(&r, &mut nodes, 2_600);
    advance(&mut r, &nodes, &old, 2_600);
    assert_eq!((r.state(), r.touched.len()), (State::Baking, 10));
    advance(&mut r, &nodes, &old, 3_700);
    assert_eq!(r.state(), State::Succeeded);
    assert_eq!(r.finished_at_ms, Some(3_700));
}

#[test]
fn an_unhealthy_canary_fails_the_gate_and_everything_touched_goes_back() {
    let mut nodes = fleet(4, 0);
    let mut r = rollout(&nodes, "2,100%", 60_000);
    advance(&mut r, &nodes, &old, 0);
    activate(&r, &mut nodes, 100);
    advance(&mut r, &nodes, &old, 100);
    let canary = r.touched[0].node.clone();
    let hb = nodes.get_mut(&canary).unwrap().heartbeat.as_mut().unwrap();
    hb.at_ms = 500;
    hb.health.as_mut().unwrap().add(
        "gpu.lost",
        HealthState::Unhealthy,
        "GPU 0 fell off the bus",
        gantry_shared::xid::lookup(79).remedy(),
    );
    let a = advance(&mut r, &nodes, &old, 500);
    assert_eq!(r.state(), State::RollingBack);
    assert!(
        r.failure
            .as_ref()
            .unwrap()
            .contains("GPU 0 fell off the bus")
    );
    assert_eq!(
        a,
        [Action::Assign {
            bundle: OLD.into(),
            nodes: vec![r.touched[0].node.clone(), r.touched[1].node.clone()]
        }]
    );
    // Back on the old bundle and healthy: rolled back, recovery recorded.
    for t in &r.touched {
        *nodes.get_mut(&t.node).unwrap() = view("r0", OLD, 900);
    }
    advance(&mut r, &nodes, &old, 900);
    assert_eq!(r.state(), State::RolledBack);
    assert_eq!((r.failed_at_ms, r.recovered_at_ms), (Some(500), Some(900)));
}

#[test]
fn a_refused_bundle_and_a_silent_node_count_against_the_gate() {
    let mut nodes = fleet(3, 0);
    let mut r = rollout(&nodes, "1", 60_000);
    advance(&mut r, &nodes, &old, 0);
    let canary = r.touched[0].node.clone();
    nodes
        .get_mut(&canary)
        .unwrap()
        .heartbeat
        .as_mut()
        .unwrap()
        .bundles
        .failed = Some(FailedBundle {
        id: NEW.into(),
        reason: "golden vector \"ones\" failed".into(),
        model: "m".into(),
    });
    advance(&mut r, &nodes, &old, 100);
    assert!(r.failure.as_ref().unwrap().contains("refused the bundle"));

    // A node that stops sending heartbeats is not skipped.
    let mut nodes = fleet(3, 0);
    let mut r = rollout(&nodes, "1", 60_000);
    advance(&mut r, &nodes, &old, 0);
    activate(&r, &mut nodes, 100);
    advance(&mut r, &nodes, &old, 100);
    assert_eq!(r.state(), State::Baking);
    advance(&mut r, &nodes, &old, 6_000);
    assert_eq!(r.state(), State::RollingBack);
    assert!(
        r.failure.as_ref().unwrap().contains("no heartbeat"),
        "{:?}",
        r.failure
    );
}

#[test]
fn nodes_late_past_the_step_timeout_count_unless_allowed() {
    let nodes = fleet(3, 0);
    let mut r = rollout(&nodes, "1", 0);
    r.spec.silence_ms = 60_000;
    advance(&mut r, &nodes, &old, 0);
    advance(&mut r, &nodes, &old, 10_001);
    assert!(
        r.failure
            .as_ref()
            .unwrap()
            .contains("after the step timeout")
    );
    let mut r = rollout(&nodes, "1", 0);
    r.spec.silence_ms = 60_000;
    r.spec.gates.max_unhealthy = 1;
    advance(&mut r, &nodes, &old, 0);
    advance(&mut r, &nodes, &old, 10_001);
    assert_eq!(r.state(), State::Baking, "one late node is allowed");
}

#[test]
fn kpis_come_from_the_recorded_rollouts() {
    let done = |created: u64, state: State, failed: Option<u64>, end: u64| Rollout {
        bundle_name: if failed.is_some() { "b" } else { "a" }.to_owned(),
        created_at_ms: created,
        pushed_at_ms: created.saturating_sub(1_000),
        state: Some(state),
        failed_at_ms: failed,
        recovered_at_ms: failed.map(|_| end),
        finished_at_ms: Some(end),
        ..Rollout::default()
    };
    let list = [
        done(10_000, State::Succeeded, None, 20_000),
        done(30_000, State::Succeeded, None, 60_000),
        done(70_000, State::RolledBack, Some(71_000), 75_000),
        done(1, State::Succeeded, None, 2),
    ];
    let k = kpis(list.iter(), 5_000, 86_405_000);
    assert_eq!(
        k.rollouts["succeeded"], 2,
        "the one before the window is out"
    );
    assert_eq!(k.rollouts["rolled-back"], 1);
    assert!((k.deployments_per_day - 2.0).abs() < 1e-9);
    assert_eq!(k.lead_time_median_s, Some(31.0));
    assert_eq!(k.change_failure_rate, Some(1.0 / 3.0));
    assert_eq!(k.mttr_mean_s, Some(4.0));
    assert!(Step::Percent(100.0).target(3) == 3);
    // Per model: "a" only succeeded, "b" only failed.
    assert_eq!(k.models.len(), 2);
    assert_eq!(k.models["a"].change_failure_rate, Some(0.0));
    assert_eq!(k.models["a"].lead_time_median_s, Some(31.0));
    assert_eq!(k.models["b"].change_failure_rate, Some(1.0));
    assert_eq!(k.models["b"].mttr_mean_s, Some(4.0));
    assert!(k.models["b"].models.is_empty());
}

#[test]
fn cordoned_nodes_take_no_new_rollouts_and_the_refusal_names_them() {
    let mut nodes: BTreeMap<String, NodeView> = (1..=3)
        .map(|i| (format!("n{i}"), view("r1", OLD, 0)))
        .collect();
    nodes.get_mut("n2").unwrap().cordoned = true;
    let selector = BTreeMap::from([("gpu".to_owned(), "h100".to_owned())]);
    assert_eq!(plan(&selector, &nodes), vec!["n1", "n3"]);
    assert_eq!(cordoned_matches(&selector, &nodes), vec!["n2"]);
    for view in nodes.values_mut() {
        view.cordoned = true;
    }
    assert!(plan(&selector, &nodes).is_empty());
}

/// An engine over a real store with two held bundles of two models, `m@1` and `k@1`.
fn engine(dir: &std::path::Path) -> (Engine, Arc<BundleRepo>, String) {
    let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
    let bundles_dir = dir.join("bundles");
    std::fs::create_dir_all(&bundles_dir).unwrap();
    let hex = "d".repeat(64);
    std::fs::write(bundles_dir.join(format!("{hex}.gbundle")), b"bundle").unwrap();
    let info = gantry_shared::protocol::delivery::BundleInfo {
        id: format!("sha256:{hex}"),
        name: "m".into(),
        version: "1".into(),
        file_sha256: "e".repeat(64),
        size: 6,
        ..Default::default()
    };
    store.put_bundle_info(&hex, &info).unwrap();
    // A second model, `k@1`.
    let other = "f".repeat(64);
    std::fs::write(bundles_dir.join(format!("{other}.gbundle")), b"bundle").unwrap();
    let k = gantry_shared::protocol::delivery::BundleInfo {
        id: format!("sha256:{other}"),
        name: "k".into(),
        ..info.clone()
    };
    store.put_bundle_info(&other, &k).unwrap();
    let bundles = Arc::new(
        BundleRepo::open(bundles_dir, dir.join("trust.json"), Arc::clone(&store)).unwrap(),
    );
    (
        Engine::open(&store, Arc::clone(&bundles)).unwrap(),
        bundles,
        info.id,
    )
}

#[test]
fn a_paused_rollout_assigns_nothing_however_long_it_waits_and_resumes_with_fresh_timers() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, bundles, id) = engine(dir.path());
    let t0 = 1_000_000;
    let mut nodes = fleet(6, t0);
    let spec = Spec {
        bundle: "m@1".to_owned(),
        steps: parse_steps("1,100%").unwrap(),
        bake_ms: 60_000,
        step_timeout_ms: 10_000,
        silence_ms: 5_000,
        ..Spec::default()
    };
    let r = engine.start(spec, "alice", &nodes, t0).unwrap();
    assert_eq!(r.touched.len(), 1);
    let canary = r.touched[0].node.clone();
    assert_eq!(bundles.assigned(&canary, "m").as_deref(), Some(id.as_str()));
    engine
        .command("r1", Command::Pause, "alice", &nodes, t0)
        .unwrap();

    // A day passes on the injected clock while paused: no step, no assignment, no timeout.
    for hour in 1..=24 {
        let now = t0 + hour * 3_600_000;
        for view in nodes.values_mut() {
            view.heartbeat.as_mut().unwrap().at_ms = now;
        }
        engine.tick(&nodes, now);
    }
    let paused = &engine.status(Some("r1")).unwrap()[0];
    assert_eq!(paused.state(), State::Paused);
    assert_eq!(paused.touched.len(), 1);
    let assigned = nodes
        .keys()
        .filter(|n| bundles.assigned(n, "m").is_some())
        .count();
    assert_eq!(assigned, 1, "nothing assigned while paused");

    // Resumed, the step's timers start again from the resume: the canary is not late.
    let resumed_at = t0 + 25 * 3_600_000;
    for view in nodes.values_mut() {
        view.heartbeat.as_mut().unwrap().at_ms = resumed_at;
    }
    engine
        .command("r1", Command::Resume, "alice", &nodes, resumed_at)
        .unwrap();
    let r = &engine.status(Some("r1")).unwrap()[0];
    assert_eq!(r.state(), State::Rolling);
    assert_eq!(r.phase_started_ms, resumed_at);
    *nodes.get_mut(&canary).unwrap() = view("r0", &id, resumed_at + 1_000);
    engine.tick(&nodes, resumed_at + 1_000);
    let r = &engine.status(Some("r1")).unwrap()[0];
    assert_eq!(r.state(), State::Baking, "{:?}", r.events);
    // The bake time counts on the injected clock: not over a millisecond early. The nodes
    // keep reporting meanwhile (a silent one would fail the gate).
    let beat = |nodes: &mut BTreeMap<String, NodeView>, now: u64| {
        for view in nodes.values_mut() {
            view.heartbeat.as_mut().unwrap().at_ms = now;
        }
    };
    beat(&mut nodes, resumed_at + 1_000 + 59_999);
    engine.tick(&nodes, resumed_at + 1_000 + 59_999);
    assert_eq!(engine.status(Some("r1")).unwrap()[0].state(), State::Baking);
    beat(&mut nodes, resumed_at + 1_000 + 60_000);
    engine.tick(&nodes, resumed_at + 1_000 + 60_000);
    let r = &engine.status(Some("r1")).unwrap()[0];
    assert_eq!(
        r.step, 1,
        "the next step started once the bake time was over"
    );
    assert_eq!(r.touched.len(), 6);
}

#[test]
fn a_rollout_of_one_model_never_touches_another_model_on_the_same_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, bundles, m_id) = engine(dir.path());
    let k_id = format!("sha256:{}", "f".repeat(64));
    let t0 = 1_000_000;
    let nodes = fleet(2, t0);
    let spec = |bundle: &str| Spec {
        bundle: bundle.to_owned(),
        steps: parse_steps("100%").unwrap(),
        bake_ms: 60_000,
        step_timeout_ms: 10_000,
        silence_ms: 5_000,
        ..Spec::default()
    };
    engine.start(spec("k@1"), "alice", &nodes, t0).unwrap();
    // The same nodes take a rollout of another model at the same time…
    engine.start(spec("m@1"), "alice", &nodes, t0).unwrap();
    // …but not a second rollout of a model they are rolling out.
    let err = engine.start(spec("k@1"), "alice", &nodes, t0).unwrap_err();
    assert!(err.to_string().contains("still holds model \"k\""), "{err}");
    for node in nodes.keys() {
        assert_eq!(bundles.assigned(node, "k").as_deref(), Some(k_id.as_str()));
        assert_eq!(bundles.assigned(node, "m").as_deref(), Some(m_id.as_str()));
    }
    // Model m's rollout is rolled back: its nodes had nothing assigned for m before, so
    // the assignment of m goes; k's stays.
    engine
        .command("r2", Command::Rollback, "alice", &nodes, t0 + 1)
        .unwrap();
    for node in nodes.keys() {
        assert_eq!(bundles.assigned(node, "m"), None);
        assert_eq!(bundles.assigned(node, "k").as_deref(), Some(k_id.as_str()));
    }
    assert_eq!(
        engine.status(Some("r1")).unwrap()[0].state(),
        State::Rolling,
        "the other model's rollout goes on"
    );
}

/// A node's heartbeat with quality figures for the new bundle since it started serving.
fn with_quality(view: &mut NodeView, at_ms: u64, rows: u64, precision: f64, recall: f64) {
    use gantry_shared::monitoring::quality::{Metrics, QualitySummary};
    use gantry_shared::protocol::heartbeat::ModelReport;
    let hb = view.heartbeat.as_mut().unwrap();
    hb.at_ms = at_ms;
    let cumulative = Metrics {
        rows,
        accuracy: Some(0.9),
        precision: Some(precision),
        recall: Some(recall),
        ..Metrics::default()
    };
    hb.models = vec![ModelReport {
        bundle: NEW.to_owned(),
        quality: Some(QualitySummary {
            window_end_ms: at_ms,
            metrics: cumulative.clone(),
            cumulative,
        }),
        ..ModelReport::default()
    }];
}

#[test]
fn a_canary_below_the_quality_gate_rolls_back_naming_the_metric_once_enough_feedback_joined() {
    use gantry_shared::monitoring::quality::QualityMetric;
    let mut nodes = fleet(4, 0);
    let mut r = rollout(&nodes, "1,100%", 60_000);
    r.spec.gates.min_quality = BTreeMap::from([
        (QualityMetric::Precision, 0.8),
        (QualityMetric::Recall, 0.7),
    ]);
    r.spec.gates.min_quality_rows = 50;
    // The gates survive the store's encoding.
    let spec: Spec = serde_json::from_value(serde_json::to_value(&r.spec).unwrap()).unwrap();
    assert_eq!(spec.gates, r.spec.gates);

    advance(&mut r, &nodes, &old, 0);
    activate(&r, &mut nodes, 100);
    advance(&mut r, &nodes, &old, 100);
    assert_eq!(r.state(), State::Baking);
    let canary = r.touched[0].node.clone();

    // Too few rows: not judged yet, whatever the figures.
    with_quality(nodes.get_mut(&canary).unwrap(), 200, 49, 0.1, 0.1);
    advance(&mut r, &nodes, &old, 200);
    assert_eq!(r.state(), State::Baking, "{:?}", r.gates.failing);
    assert_eq!(r.gates.min_quality_rows, Some(49));

    // Enough rows, precision meets its gate, recall does not.
    with_quality(nodes.get_mut(&canary).unwrap(), 300, 50, 0.85, 0.6);
    advance(&mut r, &nodes, &old, 300);
    assert_eq!(r.state(), State::RollingBack);
    let failure = r.failure.clone().unwrap();
    assert!(failure.contains("recall 0.6000 (gate ≥ 0.7)"), "{failure}");
    assert!(!failure.contains("precision 0.85"), "{failure}");
    assert_eq!(r.gates.failed_gates, ["quality"]);
    assert_eq!(r.failed_gates, ["quality"]);
    assert_eq!(
        r.gates.worst_quality.get(&QualityMetric::Recall).copied(),
        Some(0.6)
    );
}

#[test]
fn error_metrics_gate_from_above() {
    use gantry_shared::monitoring::quality::{Metrics, QualityMetric, QualitySummary};
    let report = |mae: f64| gantry_shared::protocol::heartbeat::ModelReport {
        quality: Some(QualitySummary {
            cumulative: Metrics {
                rows: 10,
                mae: Some(mae),
                ..Metrics::default()
            },
            ..QualitySummary::default()
        }),
        ..gantry_shared::protocol::heartbeat::ModelReport::default()
    };
    let gates = BTreeMap::from([(QualityMetric::Mae, 0.5)]);
    assert_eq!(quality_failure(&gates, 10, &report(0.5)), None);
    let why = quality_failure(&gates, 10, &report(0.75)).unwrap();
    assert!(why.contains("mae 0.7500 (gate ≤ 0.5)"), "{why}");
    // A metric the task does not give is not failed.
    let gates = BTreeMap::from([(QualityMetric::F1, 0.9)]);
    assert_eq!(quality_failure(&gates, 10, &report(0.75)), None);
}

mod canary_comparison {
    use gantry_shared::monitoring::drift::OutputShift;
    use gantry_shared::monitoring::quality::{
        FeedbackCounts, Metrics, Predicted, QualityMetric, QualityStats, QualityWindow, Task,
        Truth, VersionQuality,
    };
    use gantry_shared::protocol::rollout::{Comparison, Gates};

    use super::*;

    fn shift(score: f64) -> Comparison {
        Comparison {
            since_ms: 0,
            canary_nodes: 1,
            baseline_nodes: 3,
            baseline_bundles: vec![OLD.to_owned()],
            prediction_shift: vec![OutputShift {
                feature: "probabilities[1]".into(),
                statistic: "ks".into(),
                score,
                canary_values: 500,
                baseline_values: 1500,
            }],
            ..Comparison::default()
        }
    }

    fn baking(gates: impl FnOnce(&mut Rollout)) -> (Rollout, BTreeMap<String, NodeView>) {
        let mut nodes = fleet(4, 0);
        let mut r = rollout(&nodes, "1,100%", 60_000);
        gates(&mut r);
        advance(&mut r, &nodes, &old, 0);
        activate(&r, &mut nodes, 100);
        advance(&mut r, &nodes, &old, 100);
        assert_eq!(r.state(), State::Baking);
        (r, nodes)
    }

    #[test]
    fn a_canary_whose_predictions_moved_from_the_baseline_rolls_back_whatever_max_unhealthy_allows()
    {
        let (mut r, nodes) = baking(|r| {
            r.spec.gates.max_prediction_shift = Some(0.2);
            r.spec.gates.max_unhealthy = 3;
        });
        advance_compared(&mut r, &nodes, &old, Some(&shift(0.1)), 200);
        assert_eq!(r.state(), State::Baking, "{:?}", r.failure);
        assert_eq!(r.gates.comparison, Some(shift(0.1)), "shown while baking");
        advance_compared(&mut r, &nodes, &old, Some(&shift(0.4)), 300);
        assert_eq!(r.state(), State::RollingBack);
        let failure = r.failure.clone().unwrap();
        assert!(
            failure.contains(
                "probabilities[1] ks 0.400 over 500 canary and 1500 baseline values (gate 0.2)"
            ),
            "{failure}"
        );
        assert_eq!(r.failed_gates, ["canary-comparison"]);
    }

    fn metrics(rows: u64, accuracy: f64, mae: Option<f64>) -> Metrics {
        Metrics {
            rows,
            accuracy: Some(accuracy),
            mae,
            ..Metrics::default()
        }
    }

    #[test]
    fn a_canary_worse_than_the_baseline_by_more_than_the_drop_fails_once_both_have_the_rows() {
        let gates = Gates {
            max_quality_drop: BTreeMap::from([
                (QualityMetric::Accuracy, 0.05),
                (QualityMetric::Mae, 0.1),
            ]),
            min_compare_rows: 100,
            ..Gates::default()
        };
        let c = |canary: Metrics, baseline: Metrics| Comparison {
            canary_quality: Some(canary),
            baseline_quality: Some(baseline),
            ..shift(0.0)
        };
        assert_eq!(
            compare::failure(
                &gates,
                &c(metrics(100, 0.76, None), metrics(400, 0.80, None))
            ),
            None,
            "within the drop"
        );
        assert_eq!(
            compare::failure(&gates, &c(metrics(99, 0.1, None), metrics(400, 0.80, None))),
            None,
            "too few canary rows to judge"
        );
        let why = compare::failure(
            &gates,
            &c(metrics(100, 0.70, None), metrics(400, 0.80, None)),
        )
        .unwrap();
        assert!(
            why.contains("accuracy 0.7000 against the previous version's 0.8000 over 100 and 400 feedback rows (gate: at most 0.05 lower)"),
            "{why}"
        );
        let why = compare::failure(
            &gates,
            &c(metrics(100, 0.8, Some(1.25)), metrics(400, 0.8, Some(1.0))),
        )
        .unwrap();
        assert!(why.contains("mae 1.2500"), "{why}");
        assert!(why.contains("at most 0.1 higher"), "{why}");
    }

    fn quality_window(
        model: &str,
        end_ms: u64,
        bundle: &str,
        right: usize,
        rows: usize,
    ) -> QualityWindow {
        let mut stats = QualityStats::new(Task::Classification);
        let predicted = Predicted::Labels(vec![1; rows]);
        let truth = Truth::Labels((0..rows).map(|i| i64::from(i < right)).collect());
        stats.add(&predicted, &truth).unwrap();
        QualityWindow {
            model: model.into(),
            start_ms: end_ms - 1_000,
            end_ms,
            feedback: FeedbackCounts::default(),
            versions: vec![VersionQuality {
                version: "v".into(),
                bundle: bundle.into(),
                stats,
            }],
            labels: Vec::new(),
        }
    }

    #[test]
    fn the_comparison_reads_the_canary_on_its_bundle_and_the_untouched_nodes_on_the_one_it_replaced()
     {
        let dir = tempfile::tempdir().unwrap();
        let (engine, bundles, _) = engine(dir.path());
        drop(engine);
        let store = bundles.store();
        let mut r = rollout(&fleet(3, 0), "1,100%", 60_000);
        r.bundle_name = "m".into();
        r.spec.gates.max_quality_drop = BTreeMap::from([(QualityMetric::Accuracy, 0.05)]);
        r.touched = vec![Touched {
            node: "n00".into(),
            previous: Some(OLD.into()),
            step: 0,
            assigned_at_ms: 10_000,
        }];
        // The canary on the new bundle; of windows from before the canary started, and
        // on its old bundle, nothing counts.
        store
            .put_quality_windows(
                "n00",
                &[
                    quality_window("m", 12_000, NEW, 6, 10),
                    quality_window("m", 9_000, NEW, 0, 10),
                    // Ends after the canary started, but holds traffic from before.
                    quality_window("m", 10_500, NEW, 0, 10),
                    quality_window("m", 13_000, OLD, 0, 10),
                ],
            )
            .unwrap();
        // The baseline: untouched nodes on the old bundle; another model's windows and
        // a bundle the canary did not replace do not count.
        store
            .put_quality_windows("n01", &[quality_window("m", 12_000, OLD, 9, 10)])
            .unwrap();
        store
            .put_quality_windows(
                "n02",
                &[
                    quality_window("m", 12_000, OLD, 8, 10),
                    quality_window("m", 13_000, "sha256:other", 0, 10),
                    quality_window("k", 12_000, OLD, 0, 10),
                ],
            )
            .unwrap();
        let c = compare::read(store, &r).unwrap().unwrap();
        assert_eq!((c.canary_nodes, c.baseline_nodes), (1, 2));
        assert_eq!(c.baseline_bundles, [OLD]);
        let canary = c.canary_quality.clone().unwrap();
        let baseline = c.baseline_quality.clone().unwrap();
        assert_eq!((canary.rows, canary.accuracy), (10, Some(0.6)));
        assert_eq!((baseline.rows, baseline.accuracy), (20, Some(0.85)));
        r.spec.gates.min_compare_rows = 10;
        let why = compare::failure(&r.spec.gates, &c).unwrap();
        assert!(
            why.contains("accuracy 0.6000 against the previous version's 0.8500"),
            "{why}"
        );
    }
}
