//! `gantry admin add` and `gantry admin rotate`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// An `admin` command.
pub(super) async fn run(command: AdminCommand) -> CommandResult {
    match command {
        AdminCommand::Add {
            name,
            role,
            out,
            admin,
        } => {
            let (identity, expires_at_ms) =
                new_admin_identity(&admin, |public_key| Request::AdminAdd {
                    name,
                    role,
                    public_key,
                })
                .await?;
            identity.save(&out)?;
            println!(
                "admin       {} ({}) written to {} (mode 0600){}",
                identity.name,
                identity.role.as_str(),
                out.display(),
                expiry_note(expires_at_ms)
            );
        }
        AdminCommand::Rotate { admin } => {
            let (identity, expires_at_ms) =
                new_admin_identity(&admin, |public_key| Request::AdminRotate { public_key })
                    .await?;
            let path = client::identity_path(admin.identity.as_deref());
            identity.save(&path)?;
            println!(
                "rotated     {} ({}): new key and certificate in {}{}; the previous certificate is revoked",
                identity.name,
                identity.role.as_str(),
                path.display(),
                expiry_note(expires_at_ms)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key made here and a certificate for it from the controller (`request` carries the
/// public key): an admin identity to save, and when its certificate expires.
async fn new_admin_identity(
    admin: &AdminArgs,
    request: impl FnOnce(String) -> Request,
) -> Result<(AdminIdentity, Option<u64>), CommandError> {
    let (key_pem, public_key) = gantry_net::new_key_pair()?;
    let current = AdminIdentity::load(&client::identity_path(admin.identity.as_deref()))?;
    let client = AdminClient::connect(&current, admin.controller).await?;
    let client::AdminCertificate {
        name,
        role,
        certificate_pem,
        ca_pem,
        expires_at_ms,
    } = client.admin_certificate(request(public_key)).await?;
    let identity = AdminIdentity {
        name,
        role,
        controller: admin.controller.unwrap_or(current.controller),
        ca_pem,
        cert_pem: certificate_pem,
        key_pem,
    };
    Ok((identity, expires_at_ms))
}
