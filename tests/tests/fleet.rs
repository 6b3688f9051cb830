//! A real controller and real agents on loopback QUIC: enrollment, telemetry delivery
//! through crashes, outages and a lossy network, buffer limits.

use std::time::Duration;

use redb::ReadableTable as _;

use gantry_shared::protocol::telemetry::RecordClass;
use gantry_tests::{Agent, Controller, LossyRelay, assert_contiguous, wait_for};

const FAST: &str = "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n";

/// Waits until the agent has assigned at least `min_seq` and the controller stored
/// everything the agent assigned; returns the agent's last sequence.
fn wait_drained(controller: &Controller, agent: &Agent, min_seq: u64) -> u64 {
    wait_drained_within(controller, agent, min_seq, Duration::from_secs(60))
}

fn wait_drained_within(
    controller: &Controller,
    agent: &Agent,
    min_seq: u64,
    limit: Duration,
) -> u64 {
    wait_for("the agent to drain its buffer", limit, || {
        let (waiting, last_seq, _) = agent.buffer()?;
        let stored = controller.node(&agent.name).summary.last_seq;
        (waiting == 0 && last_seq >= min_seq && stored == last_seq).then_some(last_seq)
    })
}

#[test]
fn enrolled_node_reports_and_the_fleet_sees_it() {
    let controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "gpu-node-1", FAST);
    assert!(agent.state_dir().join("identity/node.key").is_file());
    agent.run("200ms");
    let last = wait_drained(&controller, &agent, 5);
    assert_contiguous(&controller.records(&agent.name), last);

    let nodes = controller.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "gpu-node-1");
    assert_eq!(nodes[0].labels.get("gpu").map(String::as_str), Some("h100"));
    assert!(nodes[0].connected);
    let detail = controller.node("gpu-node-1");
    assert_eq!(detail.latest.as_ref().map(|s| s.gpus.len()), Some(2));

    let ls = controller.cli_ok(&["fleet", "ls"]);
    assert!(
        ls.contains("gpu-node-1") && ls.contains("connected") && ls.contains("gpu=h100"),
        "{ls}"
    );
    let top = controller.cli_ok(&["fleet", "top", "--once"]);
    assert!(
        top.contains("gpu-node-1") && top.contains("NVIDIA H100 80GB HBM3"),
        "{top}"
    );
    let show = controller.cli_ok(&["fleet", "show", "gpu-node-1"]);
    assert!(
        show.contains("records stored") && show.contains("health      healthy"),
        "{show}"
    );

    // A GPU fault reaches the fleet view through the heartbeat.
    agent.control().fall_off_bus(1).unwrap();
    wait_for(
        "the controller to see the node unhealthy",
        Duration::from_secs(20),
        || {
            let detail = controller.node("gpu-node-1");
            detail
                .health
                .filter(|h| h.reasons.iter().any(|r| r.check == "gpu.lost"))
                .map(|_| ())
        },
    );
    let ls = controller.cli_ok(&["fleet", "ls"]);
    assert!(ls.contains("unhealthy"), "{ls}");
    // Each reason says what probably happened and what to do.
    let show = controller.cli_ok(&["fleet", "show", "gpu-node-1"]);
    assert!(
        show.contains(
            "GPU 1 has fallen off the bus (likely hardware: drain the node and reboot it)"
        ),
        "{show}"
    );
    let detail = controller.node("gpu-node-1");
    let lost = detail
        .health
        .as_ref()
        .and_then(|h| h.reasons.iter().find(|r| r.check == "gpu.lost"))
        .and_then(|r| r.remedy)
        .expect("the heartbeat carries the remedy");
    assert_eq!(lost.action, gantry_shared::health::Action::RebootNode);

    // Federation: the node's GPUs with a `node` label.
    let page = controller.metrics_page();
    assert!(
        page.contains("DCGM_FI_DEV_GPU_UTIL{node=\"gpu-node-1\",gpu=\"0\""),
        "{page}"
    );
    assert!(
        page.contains("gantry_controller_connected_nodes 1"),
        "{page}"
    );
}

#[test]
fn kill_9_during_upload_loses_nothing_and_duplicates_nothing() {
    let controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "crashy", FAST);
    let mut rng = 0x1234_5678_u64;
    for _ in 0..6 {
        agent.run("100ms");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 700));
        agent.kill();
    }
    agent.run("100ms");
    let drained = wait_drained(&controller, &agent, 10);
    // Stopped, so nothing more arrives while the figures are compared; what was in flight
    // is either stored or still in the agent's buffer.
    agent.kill();
    std::thread::sleep(Duration::from_millis(500));
    let records = controller.records(&agent.name);
    let last = records.last().map_or(0, |r| r.seq);
    assert!(last >= drained);
    assert_contiguous(&records, last);
    let page = controller.metrics_page();
    let stored: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("gantry_controller_records_stored_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(
        stored as u64,
        records.len() as u64,
        "each record stored once although some were sent twice"
    );
    assert_eq!(records.len() as u64, last);
    // Connections lost mid-stream are not malformed frames.
    assert!(
        page.contains("gantry_controller_rejected_streams_total 0"),
        "{:?}",
        controller
            .log
            .lines()
            .iter()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
    );
    assert!(!controller.log.contains("malformed frame"));
}

#[test]
fn controller_outage_is_buffered_and_drained_in_order() {
    let mut controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "patient", FAST);
    agent.run("100ms");
    let before = wait_drained(&controller, &agent, 3);
    controller.kill();
    // The agent keeps sampling into its buffer while the controller is away.
    wait_for(
        "records to pile up in the buffer",
        Duration::from_secs(30),
        || {
            let (waiting, _, connected) = agent.buffer()?;
            (waiting >= 15 && !connected).then_some(())
        },
    );
    controller.resume();
    let last = wait_drained(&controller, &agent, before + 15);
    assert_contiguous(&controller.records(&agent.name), last);
    assert!(
        agent.log.contains("connection to the controller lost")
            || agent.log.contains("controller unreachable")
    );
}

#[test]
fn lossy_network_loses_nothing_and_duplicates_nothing() {
    let controller = Controller::start();
    let relay = LossyRelay::start(controller.addr, 10, 5, 10);
    let config = format!("{FAST}controller = \"{}\"\n", relay.addr);
    let mut agent = Agent::enroll(&controller, "far-away", &config);
    agent.run("100ms");
    wait_for(
        "60 records through the lossy relay",
        Duration::from_secs(90),
        || (controller.node(&agent.name).summary.last_seq >= 60).then_some(()),
    );
    let last = wait_drained(&controller, &agent, 60);
    assert_contiguous(&controller.records(&agent.name), last);
    drop(relay);
}

#[test]
fn full_buffer_drops_oldest_metrics_and_keeps_events() {
    let mut controller = Controller::start();
    let config = format!("{FAST}[buffer]\nmax_bytes = \"64KiB\"\n");
    let mut agent = Agent::enroll(&controller, "tight", &config);
    controller.kill();
    let control = agent.control();
    agent.run("100ms");
    for code in [13, 31, 43] {
        wait_for("the agent to sample", Duration::from_secs(20), || {
            agent.buffer().map(|_| ())
        });
        control.inject_xid(0, code).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let dropped = wait_for("the buffer to overflow", Duration::from_secs(60), || {
        let s = agent.status()?;
        let dropped = s["buffer"]["dropped_metrics"].as_u64()?;
        (dropped > 20).then_some(dropped)
    });
    assert_eq!(
        agent.status().unwrap()["buffer"]["dropped_events"],
        0,
        "events are kept"
    );
    let page = agent.metrics_page();
    assert!(
        page.contains("gantry_agent_buffer_dropped_total{class=\"metrics\"}"),
        "drops are on /metrics"
    );

    controller.resume();
    wait_drained(&controller, &agent, 1);
    // Once drained nothing more is dropped: the counts are final for sequences up to `last`.
    let status = agent.status().unwrap();
    let last = status["buffer"]["last_seq"].as_u64().unwrap();
    let dropped_metrics = status["buffer"]["dropped_metrics"].as_u64().unwrap();
    assert!(dropped_metrics >= dropped);
    wait_for(
        "the controller to store through the agent's last sequence",
        Duration::from_secs(30),
        || (controller.node(&agent.name).summary.last_seq >= last).then_some(()),
    );
    let records: Vec<_> = controller
        .records(&agent.name)
        .into_iter()
        .filter(|r| r.seq <= last)
        .collect();
    let events = records
        .iter()
        .filter(|r| r.class == RecordClass::Event)
        .count() as u64;
    let metrics = records
        .iter()
        .filter(|r| r.class == RecordClass::Metrics)
        .count() as u64;
    assert_eq!(events, 3, "every XID event arrived");
    // Every sequence is either stored or counted as dropped. (A record already in flight
    // when the limit dropped it is both: delivered, and counted as dropped by the buffer.)
    assert!(
        metrics + events + dropped_metrics >= last,
        "no sequence unaccounted for: {metrics} + {events} + {dropped_metrics} < {last}"
    );
    assert!(metrics + events <= last, "nothing stored twice");
    assert!(
        records[0].seq > 1,
        "the oldest metrics were the ones dropped"
    );
    let first_event = records
        .iter()
        .find(|r| r.class == RecordClass::Event)
        .unwrap()
        .seq;
    assert!(
        first_event
            < records
                .iter()
                .find(|r| r.class == RecordClass::Metrics)
                .unwrap()
                .seq,
        "events outlive older metrics"
    );
    // The controller learned about the drops from the heartbeat.
    wait_for(
        "the drop count in the heartbeat",
        Duration::from_secs(10),
        || (controller.node(&agent.name).dropped_metrics >= dropped_metrics).then_some(()),
    );
}

#[test]
fn unsendable_buffered_record_is_dropped_and_counted_and_the_uplink_moves_on() {
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "damaged", FAST);
    agent.run("100ms");
    let before = wait_drained(&controller, &agent, 3);
    agent.kill();

    // Two records damaged on disk: a body that is not JSON (the uplink drops it), and a
    // header cut short (it reads as the oldest metrics record: the age limit drops it).
    let db = redb::Database::open(agent.state_dir().join("buffer.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let first_bad = {
        let mut meta = txn.open_table(META).unwrap();
        let next = meta.get("next_seq").unwrap().unwrap().value();
        meta.insert("next_seq", next + 2).unwrap();
        next
    };
    {
        let mut records = txn.open_table(RECORDS).unwrap();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut not_json = now_ms.to_be_bytes().to_vec();
        not_json.push(0);
        not_json.extend_from_slice(b"{\"gpus\": [tru");
        records.insert(first_bad, not_json.as_slice()).unwrap();
        records.insert(first_bad + 1, &[1u8, 2, 3][..]).unwrap();
    }
    txn.commit().unwrap();
    drop(db);

    agent.run("100ms");
    let last = wait_drained(&controller, &agent, first_bad + 10);
    assert!(last > before);
    // The agent samples on: what it sent after `last` is not part of the comparison.
    let stored: Vec<u64> = controller
        .records(&agent.name)
        .iter()
        .map(|r| r.seq)
        .filter(|seq| *seq <= last)
        .collect();
    let expected: Vec<u64> = (1..=last)
        .filter(|s| *s != first_bad && *s != first_bad + 1)
        .collect();
    assert_eq!(stored, expected, "everything else stored, once, in order");
    let page = agent.metrics_page();
    assert!(
        page.contains("gantry_agent_buffer_dropped_total{class=\"metrics\"} 2"),
        "{page}"
    );
    let complaints = agent
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("they cannot be sent and are dropped"))
        .count();
    assert_eq!(complaints, 1, "said once, not on every try");
}

#[test]
fn a_dead_controller_is_noticed_in_seconds_and_agents_return_in_seconds_of_its_return() {
    use std::time::Instant;
    let mut controller = Controller::start();
    // The default backoff (up to 10 s, full jitter), as a fleet runs it.
    let config = "[uplink]\nheartbeat = \"1s\"\n";
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| Agent::enroll(&controller, &format!("steady-{i}"), config))
        .collect();
    for agent in &mut agents {
        agent.run("200ms");
    }
    let connected = |agent: &Agent| agent.buffer().is_some_and(|(_, _, c)| c);
    wait_for("every agent connected", Duration::from_secs(30), || {
        agents.iter().all(connected).then_some(())
    });

    // kill -9: no close frame reaches the agents; the idle timeout must tell them.
    controller.kill();
    let killed = Instant::now();
    let mut noticed = vec![None; agents.len()];
    wait_for("every agent to notice", Duration::from_secs(30), || {
        for (i, agent) in agents.iter().enumerate() {
            if noticed[i].is_none() && !connected(agent) {
                noticed[i] = Some(killed.elapsed());
            }
        }
        noticed.iter().all(Option::is_some).then_some(())
    });
    let noticed: Vec<Duration> = noticed.into_iter().map(Option::unwrap).collect();
    println!("dead controller noticed after {noticed:?}");
    assert!(
        noticed.iter().all(|d| *d < Duration::from_secs(9)),
        "noticed within the idle timeout: {noticed:?}"
    );

    // An outage long enough for every agent's backoff to reach its longest.
    std::thread::sleep(Duration::from_secs(25));
    controller.resume();
    let back = Instant::now();
    let mut returned = vec![None; agents.len()];
    wait_for("every agent to return", Duration::from_secs(30), || {
        for (i, agent) in agents.iter().enumerate() {
            if returned[i].is_none() && connected(agent) {
                returned[i] = Some(back.elapsed());
            }
        }
        returned.iter().all(Option::is_some).then_some(())
    });
    let returned: Vec<Duration> = returned.into_iter().map(Option::unwrap).collect();
    println!("agents back after {returned:?} of the controller's return");
    assert!(
        returned.iter().all(|d| *d < Duration::from_secs(13)),
        "back within the longest backoff and a handshake: {returned:?}"
    );
    for agent in &agents {
        let last = wait_drained(&controller, agent, 5);
        assert_contiguous(&controller.records(&agent.name), last);
    }
}

/// Fills the stopped agent's buffer with `n` copies of its newest record under new
/// sequence numbers, stamped now: a backlog as a long outage leaves it. Returns the bytes
/// of telemetry added.
fn backlog(agent: &Agent, n: u64) -> u64 {
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let db = redb::Database::open(agent.state_dir().join("buffer.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let bytes = {
        let mut meta = txn.open_table(META).unwrap();
        let next = meta.get("next_seq").unwrap().unwrap().value();
        let mut records = txn.open_table(RECORDS).unwrap();
        let body = records
            .last()
            .unwrap()
            .map(|(_, v)| v.value()[9..].to_vec())
            .expect("a record to copy");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut value = now_ms.to_be_bytes().to_vec();
        value.push(RecordClass::Metrics.as_byte());
        value.extend_from_slice(&body);
        for seq in next..next + n {
            records.insert(seq, value.as_slice()).unwrap();
        }
        meta.insert("next_seq", next + n).unwrap();
        body.len() as u64 * n
    };
    txn.commit().unwrap();
    bytes
}

#[test]
fn a_backlog_drains_exactly_once_over_a_slow_lossy_link() {
    use gantry_tests::Link;
    let mut controller = Controller::start();
    let relay = LossyRelay::with_link(
        controller.addr,
        Link {
            drop_pct: 15,
            delay: Duration::from_millis(25),
            jitter: Duration::from_millis(50),
            ..Link::default()
        },
    );
    let config = format!(
        "[uplink]\nheartbeat = \"1s\"\nmax_backoff = \"1s\"\ncontroller = \"{}\"\n",
        relay.addr
    );
    let mut agent = Agent::enroll(&controller, "far-hall", &config);
    // A few real records while the controller is away, then a backlog of thousands.
    controller.kill();
    agent.run("100ms");
    wait_for("a few records", Duration::from_secs(20), || {
        agent.buffer().filter(|(waiting, _, _)| *waiting >= 3)
    });
    let idle_rss = agent.rss().unwrap_or(0);
    agent.kill();
    let added = backlog(&agent, 3000);
    controller.resume();
    let before = relay.carried();
    let started = std::time::Instant::now();
    agent.run("1s");
    // Measured here: about 30 s; the bound leaves room for a loaded machine, the figure is
    // what the test prints.
    let mut peak_rss = 0;
    let last = wait_for("the backlog to drain", Duration::from_secs(300), || {
        peak_rss = peak_rss.max(agent.rss().unwrap_or(0));
        let (waiting, last_seq, _) = agent.buffer()?;
        let stored = controller.node(&agent.name).summary.last_seq;
        (waiting == 0 && last_seq >= 3003 && stored == last_seq).then_some(last_seq)
    });
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let after_rss = agent.rss().unwrap_or(0);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "agent RSS ({} build): {:.1} MiB before the backlog, {:.1} MiB at the peak of the drain, {:.1} MiB after it",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        mib(idle_rss),
        mib(peak_rss),
        mib(after_rss)
    );
    assert_contiguous(&controller.records(&agent.name), last);
    let carried = relay.carried() - before;
    let factor = carried as f64 / added as f64;
    println!(
        "backlog of 3000 records ({:.1} MB) drained in {:.1} s over 15 % loss, 25 ms delay and 50 ms jitter; the link carried {:.1} MB, {factor:.2}× the telemetry",
        added as f64 / 1e6,
        took.as_secs_f64(),
        carried as f64 / 1e6
    );
    assert!(
        factor < 4.0,
        "the same bytes are not sent over and over: {factor:.2}×"
    );
}
