//! The commands that are, or talk to, the controller daemon: `serve` and every admin call
//! over the typed client, one module per command group.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Runs a command that needs the controller (or is it).
pub(super) async fn run(command: RemoteCommand) -> CommandResult {
    match command {
        RemoteCommand::Serve(args) => serve::run(*args).await,
        RemoteCommand::Token(command) => token::run(command).await,
        RemoteCommand::Fleet(command) => fleet::run(command).await,
        RemoteCommand::Admin(command) => admin::run(command).await,
        RemoteCommand::Rollout(command) => rollout::run(command).await,
        RemoteCommand::Report(command) => report::run(command).await,
        RemoteCommand::Model(command) => model::run(command).await,
        RemoteCommand::Capture(command) => capture::run(command).await,
        RemoteCommand::Console(command) => console::run(command).await,
        RemoteCommand::Audit(command) => audit::run(command).await,
        RemoteCommand::Telemetry(command) => telemetry::run(command).await,
    }
}

/// The typed admin client, connected with the identity `args` name.
pub(super) async fn connect(args: &AdminArgs) -> Result<AdminClient, ClientError> {
    let identity = AdminIdentity::load(&client::identity_path(args.identity.as_deref()))?;
    AdminClient::connect(&identity, args.controller).await
}
