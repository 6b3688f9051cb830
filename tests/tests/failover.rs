//! An agent given several controllers (`uplink.controllers`) fails over when the one it
//! talks to stops answering: the fleet's controller is killed (`kill -9`) at one address
//! and comes up at the next in the list, and later back at the first; the agent follows
//! within seconds each time, and every sequence number it took meanwhile is stored once,
//! in order — nothing lost across the moves.

use std::time::{Duration, Instant};

use gantry_tests::export::stored;
use gantry_tests::{Agent, Controller, assert_contiguous, free_udp_port, wait_for};

/// The controller address the agent's status says it is connected to, if connected.
fn connected_to(agent: &Agent) -> Option<String> {
    let status = agent.status()?;
    let uplink = &status["uplink"];
    (uplink["connected"].as_bool() == Some(true))
        .then(|| uplink["controller"].as_str().unwrap_or_default().to_owned())
}

/// Moves the controller to `addr` (killed, then started there on the same state) and
/// returns how long the agent took to connect to it.
fn move_controller(
    controller: &mut Controller,
    agent: &Agent,
    addr: std::net::SocketAddr,
) -> Duration {
    let before = stored(controller, "fo-node");
    controller.kill();
    controller.addr = addr;
    controller.resume();
    let started = Instant::now();
    wait_for(
        "the agent at the controller's new address",
        Duration::from_secs(60),
        || (connected_to(agent)? == addr.to_string()).then_some(()),
    );
    let took = started.elapsed();
    wait_for(
        "records stored at the new address",
        Duration::from_secs(60),
        || (stored(controller, "fo-node") >= before + 5).then_some(()),
    );
    took
}

#[test]
fn an_agent_fails_over_along_its_controller_list_and_back_losing_nothing() {
    let mut controller = Controller::start();
    let first = controller.addr;
    let second = free_udp_port();
    let config = format!("[uplink]\ncontrollers = [\"{first}\", \"{second}\"]\n");
    let mut agent = Agent::enroll(&controller, "fo-node", &config);
    agent.run("200ms");
    wait_for(
        "records at the first controller",
        Duration::from_secs(60),
        || (stored(&controller, "fo-node") >= 5).then_some(()),
    );
    assert_eq!(
        connected_to(&agent).as_deref(),
        Some(first.to_string().as_str())
    );

    let to_second = move_controller(&mut controller, &agent, second);
    assert!(
        agent.log.contains("trying the next of uplink.controllers"),
        "the agent says it fails over:\n{}",
        agent.log.lines().join("\n")
    );
    let to_first = move_controller(&mut controller, &agent, first);
    println!(
        "failed over to the second controller in {to_second:.1?}, back to the first in {to_first:.1?}"
    );

    // Everything the agent had numbered by now arrives, each once and in order.
    let (_, last_seq, _) = agent.buffer().expect("agent status");
    wait_for(
        "the agent's records up to now stored",
        Duration::from_secs(60),
        || {
            controller
                .records("fo-node")
                .iter()
                .any(|r| r.seq >= last_seq)
                .then_some(())
        },
    );
    assert_contiguous(&controller.records("fo-node"), last_seq);
}
