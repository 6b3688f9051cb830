//! `gantry rollout`: start, status, pause, resume, abort, rollback.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `rollout` command.
pub(super) async fn run(command: RolloutCommand) -> CommandResult {
    use crate::rollout_cmd;
    use gantry_shared::protocol::rollout::{Gates, Spec, parse_steps};
    let now = now_ms;
    let (admin, request, json) = match command {
        RolloutCommand::Start {
            bundle,
            selector,
            steps,
            bake,
            max_unhealthy,
            max_error_rate,
            max_latency_p99,
            no_golden_gate,
            max_drift,
            min_quality,
            min_quality_rows,
            max_prediction_shift,
            max_quality_drop,
            min_compare_rows,
            step_timeout,
            silence,
            admin,
            json,
        } => {
            let steps = parse_steps(&steps).map_err(|e| CommandError::failure("--steps", e))?;
            if let Some(rate) = max_error_rate.filter(|r| !(0.0..=1.0).contains(r)) {
                return Err(CommandError::from_error(format!(
                    "--max-error-rate {rate} is not a share between 0 and 1 (0.05 = 5 %)"
                )));
            }
            if let Some(score) = max_drift.filter(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(CommandError::from_error(format!(
                    "--max-drift {score} is not a positive score"
                )));
            }
            if let Some(score) =
                max_prediction_shift.filter(|s| !(s.is_finite() && *s > 0.0 && *s <= 1.0))
            {
                return Err(CommandError::from_error(format!(
                    "--max-prediction-shift {score} is not a score above 0 and at most 1"
                )));
            }
            let spec = Spec {
                bundle,
                selector: selector.into_iter().collect(),
                steps,
                bake_ms: bake.as_millis() as u64,
                gates: Gates {
                    max_unhealthy,
                    max_error_rate,
                    max_latency_p99_s: max_latency_p99.map(|d| d.as_secs_f64()),
                    golden: !no_golden_gate,
                    max_drift,
                    min_quality: min_quality.into_iter().collect(),
                    min_quality_rows,
                    max_prediction_shift,
                    max_quality_drop: max_quality_drop.into_iter().collect(),
                    min_compare_rows,
                },
                step_timeout_ms: step_timeout.as_millis() as u64,
                silence_ms: silence.as_millis() as u64,
            };
            (admin, Request::RolloutStart(Box::new(spec)), json)
        }
        RolloutCommand::Status { id, admin, json } => (admin, Request::RolloutStatus { id }, json),
        RolloutCommand::Pause { id, admin } => (admin, Request::RolloutPause { id }, false),
        RolloutCommand::Resume { id, admin } => (admin, Request::RolloutResume { id }, false),
        RolloutCommand::Abort { id, admin } => (admin, Request::RolloutAbort { id }, false),
        RolloutCommand::Rollback { id, admin } => (admin, Request::RolloutRollback { id }, false),
    };
    match connect(&admin).await?.call(request).await? {
        Response::Rollout(r) if json => print_json(&r),
        Response::Rollout(r) => print!("{}", rollout_cmd::render_status(&r, now())),
        Response::Rollouts(list) if json => print_json(&list),
        Response::Rollouts(list) => print!("{}", rollout_cmd::render_list(&list, now())),
        _ => return Err(ClientError::Unexpected { call: "rollout" }.into()),
    }
    Ok(ExitCode::SUCCESS)
}
