//! `gantry init` and `gantry keygen`; `policy` goes to its own module.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn run(command: LocalCommand) -> CommandResult {
    match command {
        LocalCommand::Keygen { out } => {
            let key = keys::generate(&out)?;
            println!("key id      {}", key.key_id);
            println!(
                "private     {} (mode 0600; keep it secret)",
                key.private_path.display()
            );
            println!("public      {}", key.public_path.display());
        }
        LocalCommand::Init {
            dir,
            listen,
            admin_name,
            admin_cert_lifetime,
        } => {
            gantry_net::service_dir::check_writer(&dir.dir, "gantry init …")?;
            let identity =
                crate::home::Home::new(&dir.dir).init(listen, &admin_name, admin_cert_lifetime)?;
            println!(
                "initialized {} (fleet CA, controller certificate, store)",
                dir.dir.display()
            );
            println!(
                "admin       {} (mode 0600; the CLI reads it, or set GANTRY_IDENTITY)",
                identity.display()
            );
            println!(
                "next        gantry serve --dir {} --listen {listen}",
                dir.dir.display()
            );
        }
        LocalCommand::Policy(command) => return policy::run(command),
    }
    Ok(ExitCode::SUCCESS)
}
